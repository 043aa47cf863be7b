"""The Function App's settings in the Bicep are exactly what the app reads, and they make it start.

Which settings the app reads is found in the code, not in a hand-kept list:
- statically: every ``MAILGW_*``/``AZURE_*`` string constant in mailgw/, functions/ and
  function_app.py, and every ``%NAME%`` binding expression of the function decorators;
- dynamically: a recording mapping handed to the readers that take ``env`` without copying it
  (the storage connection, the credential checks), which catches names built at run time such as
  ``AzureWebJobsStorage__queueServiceUri``.
Every name found must be set by the Bicep (in some configuration) or be in OPTIONAL with a reason.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from bicep_model import Ref
from infra_support import ROOT

from mailgw import identity
from mailgw.settings import (
    CREDENTIAL_MODES,
    GRAPH_MODES,
    TRANSPORTS,
    IdentitySettings,
    Settings,
)
from mailgw.storage import StorageConnection

# A name ends in a letter or digit: "MAILGW_API_" (with startswith) is a prefix, not a setting.
SETTING_NAME = re.compile(r"^(MAILGW|AZURE)_[A-Z0-9_]*[A-Z0-9]$")
BINDING_EXPRESSION = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")
SOURCES = [ROOT / "function_app.py", *sorted((ROOT / "functions").rglob("*.py"))]
SOURCES += sorted((ROOT / "mailgw").rglob("*.py"))

#: Settings the app reads that the Bicep deliberately leaves unset, and why.
OPTIONAL = {
    # Not settings of the Function App at all.
    "MAILGW_FAILED": "not a setting: the custom event name operations.py writes for alerts",
    "MAILGW_URL": "read by the mailgw CLI on an operator's machine (main.bicep outputs it)",
    "MAILGW_FUNCTION_KEY": "read by the mailgw CLI; a secret, from `az functionapp keys list`",
    "MAILGW_API_TOKEN": "read by the mailgw CLI: a caller's own short-lived Entra ID access token",
    "MAILGW_FAULT_INJECTION": "crash tests only: must never be set in Azure (checked below)",
    # Other ways to configure what the Bicep configures one way.
    "AzureWebJobsStorage": "the connection-string form carries an account key; the Bicep uses "
    "the identity-based AzureWebJobsStorage__* settings",
    "AzureWebJobsStorage__accountName": "alternative to the three service URIs the Bicep sets "
    "(an operator's CLI uses it: main.bicep outputs it)",
    "AZURE_TENANT_ID": "workload_identity mode (Kubernetes); the managed identity needs no tenant",
    "MAILGW_API_DELEGATED_CLIENTS": "empty (only apps' own tokens) is the safe default; "
    "docs/authentication.md step 4 sets it for the Azure CLI with az functionapp config",
    "AZURE_FEDERATED_TOKEN_FILE": "workload_identity mode (Kubernetes) only",
    "MAILGW_OUTBOX_DIR": "outbox transport: local development only, not a transport in Azure",
    "MAILGW_TELEMETRY": "console output for local runs (or 'off'); in Azure the Application "
    "Insights connection string the Bicep sets decides (docs/telemetry.md)",
    # SMTP and relay knobs whose app defaults are Exchange Online's; set them as app settings to
    # override (docs/deploy.md).
    # Pacing: the defaults are Exchange Online's limits; set them as app settings to raise or lower
    # them (docs/operations.md, "Budgets and pacing").
    "MAILGW_MAILBOX_DAILY_RECIPIENTS": "default 10,000 is Exchange Online's per-mailbox limit",
    "MAILGW_MAILBOX_PER_MINUTE": "default: 30 for smtp (Exchange's), off for the other transports",
    "MAILGW_MAILBOX_LIMITS": "per-mailbox overrides (an HVE account): none by default",
    "MAILGW_TENANT_DAILY_RECIPIENTS": "off by default: each tenant computes its own TERRL",
    "MAILGW_SMTP_HOST": "default smtp.office365.com is Exchange Online's submission host",
    "MAILGW_SMTP_PORT": "default 587 (STARTTLS) is the only port Exchange Online offers",
    "MAILGW_SMTP_TOKEN_SCOPE": "default is Exchange Online's; sovereign clouds override it",
    "MAILGW_SMTP_TIMEOUT_SECONDS": "default 30 s is the app's",
    "MAILGW_SMTP_CONNECTIONS": "default 3 is Exchange Online's per-mailbox limit",
    "MAILGW_SMTP_CA_FILE": "a private CA file for SMTP stand-ins; Exchange uses public CAs",
    "MAILGW_RELAY_PORT": "default 25 is the relay connector's port",
    "MAILGW_EVENTS_SOURCE": "default: https://<the app's host name>, as App Service sets it",
    "MAILGW_EVENTS_TIMEOUT_SECONDS": "default 5 s is the app's",
    # The SMTP intake's own settings: read by mailgw-smtp (its container), not the Function App.
    **{
        f"MAILGW_SMTP_INTAKE_{name}": "read by mailgw-smtp, the SMTP intake's container "
        "(docs/smtp-intake.md), never by the Function App"
        for name in (
            "HOST",
            "PORT",
            "TLS_PORT",
            "CERT_FILE",
            "KEY_FILE",
            "HOSTNAME",
            "CLIENTS_TABLE",
            "MAX_MESSAGE_BYTES",
            "PER_MINUTE",
        )
    },
}

#: Must not appear in the Function App's settings.
FORBIDDEN = {
    "MAILGW_FAULT_INJECTION": "kills the process on purpose (crash tests)",
    "AzureWebJobsStorage": "a connection string would carry the account key",
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption: functionAppConfig.runtime replaces it",
    "FUNCTIONS_EXTENSION_VERSION": "Flex Consumption: set by the platform",
    "WEBSITE_RUN_FROM_PACKAGE": "Flex Consumption deploys from its blob container",
    "WEBSITE_CONTENTSHARE": "Flex Consumption has no content share",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING": "Flex Consumption has no content share",
    "SCM_DO_BUILD_DURING_DEPLOYMENT": "Flex Consumption builds remotely without it",
    "ENABLE_ORYX_BUILD": "Flex Consumption builds remotely without it",
    "WEBSITE_TIME_ZONE": "not supported on Flex Consumption (the clean-up timer runs in UTC)",
    "APPINSIGHTS_INSTRUMENTATIONKEY": "local auth is disabled; use the connection string + Entra",
}

# Deployment-time values, as Azure would fill them in, to start the app with the Bicep's settings.
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
APP_CLIENT_ID = "99999999-8888-7777-6666-555555555555"
TENANT_ID = "72f988bf-0000-1111-2222-333333333333"  # the deployment's tenant: tenant().tenantId
API_APP_ID = "abababab-1212-3434-5656-787878787878"  # the API app that createApiApp creates
API_AUDIENCE = "cdcdcdcd-1212-3434-5656-787878787878"  # an API app registered by hand
#: environment().authentication.loginEndpoint in the global cloud, with its trailing slash.
LOGIN_ENDPOINT = "https://login.microsoftonline.com/"
DEPLOYMENT_VALUES = {
    "identity.properties.clientId": CLIENT_ID,
    "account.properties.primaryEndpoints.blob": "https://stmailgwx.blob.core.windows.net/",
    "account.properties.primaryEndpoints.queue": "https://stmailgwx.queue.core.windows.net/",
    "account.properties.primaryEndpoints.table": "https://stmailgwx.table.core.windows.net/",
    "appInsights.properties.ConnectionString": "InstrumentationKey=00000000-0000-0000-0000-"
    "000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
    "crossTenantApp.outputs.appClientId": APP_CLIENT_ID,
    "tenant().tenantId": TENANT_ID,
    "environment().authentication.loginEndpoint": LOGIN_ENDPOINT,
    "apiApp.outputs.appId": API_APP_ID,
    "events.outputs.endpoint": "https://evgt-mailgw-x.westeurope-1.eventgrid.azure.net/api/events",
}
MAIL_TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

#: The relay's client certificate: a Key Vault in the resource group, and its secret's URI (no
#: version, so that renewals are picked up). The app setting is a reference to it, which the
#: platform resolves before the app reads it; app_env() does the same with key_vault_secrets().
RELAY_CERT_VAULT = "kv-mailgw-test"
RELAY_CERT_URI = f"https://{RELAY_CERT_VAULT}.vault.azure.net/secrets/mailgw-relay/"
RELAY_CERT_NAME = "mailgw.contoso.com"  # in an accepted domain: the connector's certificate name
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=(?P<uri>[^)]+)\)")

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cross-tenant": {"mailTenantId": MAIL_TENANT},
    "draft": {"graphMode": "draft"},
    "graph-scope": {"graphScope": "api://graph-egress/.default"},
    "smtp": {"transport": "smtp"},
    "relay": {"transport": "relay", "relayHost": "contoso-com.mail.protection.outlook.com"},
    "entra": {"apiAuth": "entra", "apiAudience": API_AUDIENCE},
    "entra-created-app": {"apiAuth": "entra", "createApiApp": True},
    "events": {
        "eventsQueueName": "mail-events",
        "eventGridTopic": True,
        "eventGridSubscriptionQueueName": "mail-events-grid",
    },
    "relay-cert": {
        "transport": "relay",
        "relayHost": "contoso-com.mail.protection.outlook.com",
        "relayClientCertUri": RELAY_CERT_URI,
        "relayClientCertKeyVaultName": RELAY_CERT_VAULT,
    },
}


@functools.cache
def key_vault_secrets() -> dict[str, str]:
    """Secret URI → value, as Key Vault holds a certificate imported or created there: base64
    PKCS#12 without a password, the private key with the certificate (self-signed here: the app
    checks the key and the dates; Exchange Online checks the issuer)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    from standins.certs import common_name, issue

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san = x509.SubjectAlternativeName([x509.DNSName(RELAY_CERT_NAME)])
    certificate = issue(key, common_name(RELAY_CERT_NAME), extensions=[(san, False)])
    pfx = pkcs12.serialize_key_and_certificates(
        b"mailgw-relay", key, certificate, None, serialization.NoEncryption()
    )
    return {RELAY_CERT_URI: base64.b64encode(pfx).decode()}


def resolve(value: Any) -> str:
    """A setting's value as the app would see it in Azure (Key Vault references resolved)."""
    if isinstance(value, Ref):
        return DEPLOYMENT_VALUES[value.path]
    text = str(value)
    for path, actual in DEPLOYMENT_VALUES.items():
        text = text.replace(f"<{path}>", actual)
    assert "<" not in text, f"unresolved deployment-time value in {value!r}"
    if reference := KEY_VAULT_REFERENCE.fullmatch(text):
        return key_vault_secrets()[reference["uri"]]
    return text


def app_env(settings: Mapping[str, Any]) -> dict[str, str]:
    return {name: resolve(value) for name, value in settings.items()}


# -- what the app reads ------------------------------------------------------------------------


def static_names() -> set[str]:
    """``MAILGW_*``/``AZURE_*`` string constants anywhere in the app's code."""
    names = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and SETTING_NAME.match(str(node.value)):
                names.add(str(node.value))
    return names


def binding_names() -> set[str]:
    """``%NAME%`` in the keyword arguments of the function decorators (queue_name=...): the host
    resolves them from the app settings."""
    names = set()
    for path in SOURCES:
        if "mailgw" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            value = node.value if isinstance(node, ast.keyword) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                names.update(BINDING_EXPRESSION.findall(value.value))
    return names


class RecordingEnv(Mapping[str, str]):
    """A mapping that remembers every key looked up (present or not)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.seen: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.seen.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def dynamic_names() -> set[str]:
    seen: set[str] = set()
    readers: list[tuple[Callable[[Mapping[str, str]], object], dict[str, str]]] = [
        (lambda env: StorageConnection.from_settings("AzureWebJobsStorage", env), {}),
    ]
    for mode in CREDENTIAL_MODES:
        filled = {
            "MAILGW_CREDENTIAL": mode,
            "AZURE_CLIENT_ID": "x",
            "AZURE_TENANT_ID": "x",
            "AZURE_FEDERATED_TOKEN_FILE": "x",
            "MAILGW_TENANT_ID": "x",
            "MAILGW_APP_CLIENT_ID": "x",
            "MAILGW_TRANSPORT": "graph",
        }
        readers.append((Settings.from_env, filled))
    for reader, values in readers:
        env = RecordingEnv(values)
        with contextlib.suppress(ValueError):  # a SettingsError still recorded the lookups
            reader(env)
        seen |= env.seen
    # The storage reader is also walked down its identity-based branch.
    env = RecordingEnv({"AzureWebJobsStorage__queueServiceUri": "https://q"})
    StorageConnection.from_settings("AzureWebJobsStorage", env)
    return seen | env.seen


def names_the_app_reads() -> set[str]:
    connections = {"AzureWebJobsStorage"}  # connection="AzureWebJobsStorage" of the triggers
    return static_names() | binding_names() | dynamic_names() | connections


def all_deployed_names(deploy: Any) -> set[str]:
    names: set[str] = set()
    for params in CONFIGURATIONS.values():
        names |= set(deploy(**params)[2])
    return names


# -- tests -------------------------------------------------------------------------------------


def test_the_scan_finds_what_it_should() -> None:
    """Guard the scanner itself: known reads of each kind must be found."""
    names = names_the_app_reads()
    assert {"MAILGW_QUEUE", "MAILGW_ALLOWED_SENDERS", "MAILGW_GRAPH_MODE"} <= names  # settings.py
    assert {"MAILGW_TENANT_ID", "AZURE_CLIENT_ID"} <= names  # identity.py
    assert binding_names() == {"MAILGW_QUEUE"}  # queue_name="%MAILGW_QUEUE%" (and -poison)
    assert {
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
    } <= names  # built at run time by storage.py


def test_every_setting_the_app_reads_is_deployed_or_optional(deploy: Any) -> None:
    missing = names_the_app_reads() - all_deployed_names(deploy) - set(OPTIONAL)
    assert missing == set(), (
        "the app reads settings the Bicep never sets: set them in infra/main.bicep "
        "(gatewaySettings) or add them to OPTIONAL in this file with the reason"
    )


def test_optional_list_has_no_stale_entries(deploy: Any) -> None:
    assert set(OPTIONAL) - names_the_app_reads() == set()
    # An optional name is not deployed in any configuration (else it is not optional).
    assert set(OPTIONAL) & all_deployed_names(deploy) == set()


def test_every_deployed_mailgw_setting_is_read_by_the_app(deploy: Any) -> None:
    deployed = {n for n in all_deployed_names(deploy) if n.startswith(("MAILGW_", "AZURE_"))}
    assert deployed - names_the_app_reads() == set()


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_forbidden_settings_are_absent(deploy: Any, configuration: str) -> None:
    settings = deploy(**CONFIGURATIONS[configuration])[2]
    assert set(settings) & set(FORBIDDEN) == set()
    assert not [n for n in settings if n.startswith("AzureFunctionsJobHost__")], (
        "host.json is the one place for host settings; an app setting would override it silently"
    )


@pytest.mark.parametrize("configuration", sorted(CONFIGURATIONS))
def test_the_app_starts_with_the_deployed_settings(deploy: Any, configuration: str) -> None:
    env = app_env(deploy(**CONFIGURATIONS[configuration])[2])
    settings = Settings.from_env(env)
    assert settings.allowed_senders == ("noreply@contoso.com",)
    mode = settings.identity.mode
    expected = (
        "federated_managed_identity" if configuration == "cross-tenant" else "managed_identity"
    )
    assert mode == expected
    storage = settings.storage()
    assert storage.connection_string is None
    assert storage.credential_kind == "managedidentity"
    assert storage.client_id == CLIENT_ID
    assert storage.service_uri("queue") == "https://stmailgwx.queue.core.windows.net"
    assert storage.service_uri("blob") == "https://stmailgwx.blob.core.windows.net"
    assert storage.service_uri("table") == "https://stmailgwx.table.core.windows.net"


def test_default_parameters_give_the_app_defaults(deploy: Any) -> None:
    """With only the required parameters, the Bicep sets every value to the app's own default."""
    settings = Settings.from_env(app_env(deploy()[2]))
    # The one value that is the deployment's own: the user-assigned identity it created.
    identity = IdentitySettings(client_id=CLIENT_ID)
    defaults = Settings(allowed_senders=("noreply@contoso.com",), identity=identity)
    assert settings == defaults  # dataclass equality: every field but env


def test_parameters_reach_their_settings(deploy: Any) -> None:
    _, _, settings = deploy(
        queueName="outgoing-mail",
        stateTableName="mailstate",
        payloadContainerName="payloads",
        graphMode="draft",
        maxAttempts=3,
        retentionDays=90,
        graphEndpoint="https://graph.microsoft.us",
    )
    parsed = Settings.from_env(app_env(settings))
    assert parsed.queue == "outgoing-mail"
    assert parsed.poison_queue == "outgoing-mail-poison"
    assert parsed.state_table == "mailstate"
    assert parsed.payload_container == "payloads"
    assert parsed.graph_mode == "draft"
    assert parsed.max_attempts == 3
    assert parsed.retention_days == 90
    assert parsed.graph_scope == "https://graph.microsoft.us/.default"
    assert parsed.graph_submit_grace_seconds == Settings.graph_submit_grace_seconds


def test_graph_scope_only_when_given(deploy: Any) -> None:
    """Empty leaves the app to derive Graph's audience; a value reaches MAILGW_GRAPH_SCOPE."""
    assert "MAILGW_GRAPH_SCOPE" not in deploy(graphEndpoint="https://graph.microsoft.us")[2]
    _, _, settings = deploy(graphEndpoint="https://egress.contoso.com", graphSubmitGraceSeconds=90)
    parsed = Settings.from_env(app_env(settings))
    assert parsed.graph_scope == "https://graph.microsoft.com/.default"
    assert parsed.graph_submit_grace_seconds == 90
    given = deploy(graphScope="api://graph-egress/.default")[2]
    assert Settings.from_env(app_env(given)).graph_scope == "api://graph-egress/.default"


def test_cross_tenant_settings(deploy: Any) -> None:
    _, _, same = deploy()
    assert same["MAILGW_CREDENTIAL"] == "managed_identity"
    assert "MAILGW_TENANT_ID" not in same and "MAILGW_APP_CLIENT_ID" not in same
    env = app_env(deploy(mailTenantId=MAIL_TENANT)[2])
    assert env["MAILGW_CREDENTIAL"] == "federated_managed_identity"
    assert env["MAILGW_TENANT_ID"] == MAIL_TENANT
    assert env["MAILGW_APP_CLIENT_ID"] == APP_CLIENT_ID
    assert env["AZURE_CLIENT_ID"] == CLIENT_ID


def test_identity_settings(deploy: Any) -> None:
    env = app_env(deploy()[2])
    assert env["AZURE_CLIENT_ID"] == CLIENT_ID
    assert env["AzureWebJobsStorage__clientId"] == CLIENT_ID
    assert env["AzureWebJobsStorage__credential"] == "managedidentity"
    assert env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        f"ClientId={CLIENT_ID};Authorization=AAD"
    )


def test_opentelemetry_is_on_in_the_host_and_the_worker(deploy: Any) -> None:
    """docs/telemetry.md: host.json's telemetryMode and the worker's setting, together (the worker
    then sends the app's logs itself, so the host does not duplicate them)."""
    import json

    env = app_env(deploy()[2])
    assert env["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"


def test_parameter_constraints_match_the_app(trees: Mapping[str, Any]) -> None:
    main = trees["main.bicep"]
    types = {name: set(t["value"].split(" | ")) for name, t in main["types"].items()}
    assert types[main["parameters"]["graphMode"]["type"]] == set(GRAPH_MODES)
    transports = types[main["parameters"]["transport"]["type"]]
    assert transports == set(TRANSPORTS) - {"outbox"}
    senders = main["parameters"]["allowedSenders"]
    assert senders["default"] is None, "MAILGW_ALLOWED_SENDERS must be a required parameter"
    concurrency = {
        d["type"]: d.get("argument") for d in main["parameters"]["mailboxConcurrency"]["decorators"]
    }
    assert (concurrency["min_value"], concurrency["max_value"]) == (1, 4)


def test_token_exchange_audience_follows_the_app(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy()
    assert main.var("tokenExchangeAudiences") == identity.TOKEN_EXCHANGE_AUDIENCES
    for endpoint in [
        "https://graph.microsoft.com",
        "https://graph.microsoft.us",
        "https://dod-graph.microsoft.us",
        "https://microsoftgraph.chinacloudapi.cn",
    ]:
        main, _, _ = deploy(graphEndpoint=endpoint)
        scope = identity.token_exchange_scope(endpoint)
        assert main.var("tokenExchangeAudience") + "/.default" == scope


def test_relay_host_only_with_relay(deploy: Any) -> None:
    assert "MAILGW_RELAY_HOST" not in deploy()[2]
    relay = deploy(transport="relay", relayHost="contoso-com.mail.protection.outlook.com")[2]
    assert relay["MAILGW_RELAY_HOST"] == "contoso-com.mail.protection.outlook.com"


def test_the_sample_settings_list_what_the_bicep_sets(deploy: Any) -> None:
    """local.settings.sample.json documents every gateway setting (DESIGN.md); the Bicep sets the
    same ones, apart from host plumbing that differs locally."""
    import json

    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    deployed = {n for n in all_deployed_names(deploy) if n.startswith("MAILGW_")}
    assert deployed <= sample | {"MAILGW_RELAY_HOST"}


def test_sources_exist() -> None:
    assert all(Path(p).exists() for p in SOURCES)
    assert len(SOURCES) > 10
