"""The relay transport's TLS client certificate (MAILGW_RELAY_CLIENT_CERT), in Bicep and app.

A certificate-based inbound connector recognises the gateway by the certificate it presents, not
by its (shared, changing) Flex Consumption address. The certificate and its key stay in Key Vault:
``relayClientCertUri`` makes the app setting a Key Vault reference, which the platform resolves
with the user-assigned identity (the site's ``keyVaultReferenceIdentity``), and
``relayClientCertKeyVaultName`` optionally grants that identity Key Vault Secrets User on the
vault. Both are off by default. The guide (docs/transports.md), the deploy guide, the README and
the sample settings name the same setting and parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from bicep_model import DeploymentFailure, Ref
from infra_support import ROOT, module_call, module_template
from test_infra_resources import BUILT_IN_ROLES, role_assignments
from test_infra_settings import (
    CONFIGURATIONS,
    RELAY_CERT_NAME,
    RELAY_CERT_URI,
    RELAY_CERT_VAULT,
    app_env,
    key_vault_secrets,
)

from mailgw.settings import Settings, SettingsError

SETTING = "MAILGW_RELAY_CLIENT_CERT"
PARAMETERS = ("relayClientCertUri", "relayClientCertKeyVaultName")
RELAY = {"transport": "relay", "relayHost": "contoso-com.mail.protection.outlook.com"}


# -- the app setting ---------------------------------------------------------------------------


def test_parameters_default_to_off(trees: Mapping[str, Any]) -> None:
    declared = trees["main.bicep"]["parameters"]
    for name in PARAMETERS:
        assert declared[name]["type"] == "string"
        assert declared[name]["default"] == "", name


@pytest.mark.parametrize("configuration", sorted(set(CONFIGURATIONS) - {"relay-cert"}))
def test_no_certificate_setting_unless_asked(deploy: Any, configuration: str) -> None:
    settings = deploy(**CONFIGURATIONS[configuration])[2]
    assert SETTING not in settings


def test_the_setting_is_a_key_vault_reference_to_the_secret(deploy: Any) -> None:
    settings = deploy(**RELAY, relayClientCertUri=RELAY_CERT_URI)[2]
    assert settings[SETTING] == f"@Microsoft.KeyVault(SecretUri={RELAY_CERT_URI})"
    # A versioned URI is passed through as given (it pins the certificate: no renewal).
    pinned = f"{RELAY_CERT_URI}0123456789abcdef0123456789abcdef"
    assert deploy(**RELAY, relayClientCertUri=pinned)[2][SETTING] == (
        f"@Microsoft.KeyVault(SecretUri={pinned})"
    )


def test_the_setting_is_only_for_the_relay(deploy: Any) -> None:
    for transport in ("graph", "smtp"):
        settings = deploy(transport=transport, relayClientCertUri=RELAY_CERT_URI)[2]
        assert SETTING not in settings and "MAILGW_RELAY_HOST" not in settings


@pytest.mark.parametrize(
    "uri",
    [
        f"https://{RELAY_CERT_VAULT}.vault.azure.net/certificates/mailgw-relay/",
        f"https://{RELAY_CERT_VAULT}.vault.azure.net/keys/mailgw-relay",
        "mailgw-relay",
    ],
)
def test_a_uri_that_is_not_a_secret_stops_the_deployment(deploy: Any, uri: str) -> None:
    """Key Vault references read secrets only; a certificate's /certificates/ URI would leave the
    literal reference in the setting and the app would not start."""
    with pytest.raises(DeploymentFailure, match="relayClientCertUri") as failure:
        deploy(**RELAY, relayClientCertUri=uri)
    assert "docs/transports.md" in str(failure.value)


def test_fail_is_reached_only_with_a_certificate_uri() -> None:
    """fail() sits in the branch taken only with transport=relay and a URI that names no secret
    (ARM evaluates only the branch it takes), never where every deployment evaluates it."""
    text = (ROOT / "infra" / "main.bicep").read_text()
    calls = [line for line in text.splitlines() if "relayClientCertUri" in line and "fail(" in line]
    assert len(calls) == 1, calls
    assert re.search(
        r"value: contains\(relayClientCertUri, '/secrets/'\) "
        r"\? '@Microsoft\.KeyVault\(SecretUri=\$\{relayClientCertUri\}\)' : fail\(",
        calls[0],
    )
    assert "var relaySettings = (transport == 'relay') ? concat([" in text
    assert "], empty(relayClientCertUri) ? [] : [" in text


def test_the_app_starts_with_the_resolved_certificate(deploy: Any) -> None:
    """What the platform puts in the setting (the secret's value, a password-less PKCS#12 in
    base64) is what the app accepts."""
    env = app_env(deploy(**CONFIGURATIONS["relay-cert"])[2])
    assert env[SETTING] == key_vault_secrets()[RELAY_CERT_URI]
    settings = Settings.from_env(env)
    assert settings.transport == "relay"
    assert settings.relay_client_cert is not None
    assert RELAY_CERT_NAME in settings.relay_client_cert.names
    # Never logged: neither the secret's value nor the key shows in the settings' repr.
    assert env[SETTING] not in repr(settings) and "PRIVATE KEY" not in repr(settings)


def test_an_unresolved_reference_stops_the_app_naming_the_setting(deploy: Any) -> None:
    """When the platform cannot resolve a reference (no role, wrong URI, vault firewall) the app
    sees the reference itself: it must refuse to start, naming the setting (docs/transports.md)."""
    env = app_env(deploy(**RELAY)[2])
    env[SETTING] = f"@Microsoft.KeyVault(SecretUri={RELAY_CERT_URI})"
    with pytest.raises(SettingsError, match=SETTING):
        Settings.from_env(env)


# -- the identity that resolves it -------------------------------------------------------------


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_key_vault_references_resolve_with_the_user_assigned_identity(
    deploy: Any, configuration: str
) -> None:
    """Always set, so a reference added later by hand (az functionapp config appsettings set)
    resolves too: the app has no system-assigned identity to fall back on."""
    _, app, _ = deploy(**CONFIGURATIONS[configuration])
    site = app.eval(app.resources["site"]["config"])
    assert site["properties"]["keyVaultReferenceIdentity"] == Ref("identity.id")
    assert site["identity"]["type"] == "UserAssigned"
    assert set(site["identity"]["userAssignedIdentities"]) == {"<identity.id>"}


# -- the optional role assignment --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "deployed"),
    [
        ({}, False),
        ({**RELAY, "relayClientCertUri": RELAY_CERT_URI}, False),  # granted by hand
        ({"relayClientCertKeyVaultName": RELAY_CERT_VAULT}, False),  # no setting: no grant
        ({**RELAY, "relayClientCertKeyVaultName": RELAY_CERT_VAULT}, False),
        (CONFIGURATIONS["relay-cert"], True),
    ],
)
def test_the_key_vault_grant_is_opt_in(deploy: Any, params: dict[str, Any], deployed: bool) -> None:
    main, _, _ = deploy(**params)
    _, condition, _ = module_call(main.tree, "relayCertAccess")
    assert main.eval(condition) is deployed


def test_the_grant_is_key_vault_secrets_user_on_that_vault(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    main, _, _ = deploy(**CONFIGURATIONS["relay-cert"])
    access = module_template(trees, main, "relayCertAccess")
    vault = access.resources["vault"]
    assert vault["type"] == "Microsoft.KeyVault/vaults"
    assert vault["existing"] is True
    assert access.eval(vault["config"])["name"] == RELAY_CERT_VAULT
    assert role_assignments(access) == [
        (
            "identitySecretsUser",
            "<vault>",
            BUILT_IN_ROLES["Key Vault Secrets User"],
            "<identity.properties.principalId>",
        )
    ]
    grant = access.eval(access.resources["identitySecretsUser"]["config"])
    assert grant["properties"]["principalType"] == "ServicePrincipal"
    # Stable and unique per vault, identity and role: a redeployment finds the same assignment.
    role = BUILT_IN_ROLES["Key Vault Secrets User"]
    assert grant["name"] == Ref(f"guid(<vault.id>, <identity.properties.principalId>, {role})")


def test_the_app_waits_for_the_grant(trees: Mapping[str, Any]) -> None:
    config = trees["main.bicep"]["modules"]["functionApp"]["config"]
    assert {"rbac", "relayCertAccess"} <= set(config["dependsOn"])


# -- azd, documentation and the sample ---------------------------------------------------------


def test_azd_can_set_the_relay_parameters() -> None:
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert {"relayHost", *PARAMETERS} <= set(parameters)
    for name in ("relayHost", *PARAMETERS):
        assert parameters[name]["value"].endswith("=}"), name  # optional, empty by default


def test_sample_settings_leave_the_certificate_empty() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert values[SETTING] == ""
    assert Settings.from_env(values).relay_client_cert is None


def test_readme_lists_the_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    first_cells = re.findall(r"^\| ([^|]*`[^|]*) \|", readme, re.MULTILINE)
    listed = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert SETTING in listed


def test_the_guides_name_the_setting_parameters_and_commands(trees: Mapping[str, Any]) -> None:
    transports = (ROOT / "docs" / "transports.md").read_text()
    for text in (
        SETTING,
        *PARAMETERS,
        "keyVaultReferenceIdentity",
        "Key Vault Secrets User",
        "New-InboundConnector",
        "-TlsSenderCertificateName",
        "-RequireTls",
        "-ConnectorType OnPremises",
        "RestrictDomainsToCertificate",
        "az keyvault certificate import",
        "550 5.7.64",
        "24 hours",
    ):
        assert text in transports, text
    assert "does not present a client certificate yet" not in transports
    blocks = re.findall(r"--parameters (.*?)(?:\n\n|```)", transports, re.DOTALL)
    names = {name for block in blocks for name in re.findall(r"(\w+)=", block)}
    assert set(PARAMETERS) <= names <= set(trees["main.bicep"]["parameters"])
    deploy_guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "transports.md#" in deploy_guide and SETTING in deploy_guide
