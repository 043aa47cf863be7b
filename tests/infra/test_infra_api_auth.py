"""How HTTP callers authenticate, in the Bicep and in the app: MAILGW_AUTH and MAILGW_API_*.

``apiAuth=keys`` (the default) sets MAILGW_AUTH=keys and nothing else, so the app keeps its
defaults. ``apiAuth=entra`` also sets the tenant, the audience and the authority; without an
audience the deployment stops (``fail()``) before it can deploy an app that would not start. The
optional API app registration (createApiApp) carries exactly the app roles the app checks, asks
for v2 tokens, and becomes the audience. The guide (docs/authentication.md), the README and the
sample settings name the same settings and roles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from bicep_model import DeploymentFailure, Ref
from infra_support import ROOT, module_template
from test_infra_settings import API_APP_ID, API_AUDIENCE, LOGIN_ENDPOINT, TENANT_ID, app_env

from mailgw.auth import ROLE_READ, ROLE_READ_ALL, ROLE_REPLAY, ROLE_SEND
from mailgw.settings import API_AUTH_MODES, Settings, SettingsError

AUTH_SETTINGS = (
    "MAILGW_AUTH",
    "MAILGW_API_TENANT_ID",
    "MAILGW_API_AUDIENCE",
    "MAILGW_API_AUTHORITY",
)
ROLES = {ROLE_SEND, ROLE_READ, ROLE_REPLAY, ROLE_READ_ALL}


# -- parameters --------------------------------------------------------------------------------


def test_api_auth_allows_the_app_modes_and_defaults_to_keys(trees: Mapping[str, Any]) -> None:
    main = trees["main.bicep"]
    types = {name: set(t["value"].split(" | ")) for name, t in main["types"].items()}
    parameter = main["parameters"]["apiAuth"]
    assert types[parameter["type"]] == set(API_AUTH_MODES)
    assert parameter["default"] == "keys" == Settings().api_auth


def test_entra_parameters_default_to_the_deployment_tenant_and_cloud(deploy: Any) -> None:
    main, _, _ = deploy()
    assert main.lookup("apiTenantId") == Ref("tenant().tenantId")
    assert main.lookup("apiAuthority") == Ref("environment().authentication.loginEndpoint")
    assert main.lookup("apiAudience") == ""
    assert main.lookup("createApiApp") is False


# -- the settings each mode deploys ------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"apiAuth": "keys", "apiAudience": API_AUDIENCE}])
def test_keys_mode_sets_only_mailgw_auth(deploy: Any, params: dict[str, Any]) -> None:
    settings = deploy(**params)[2]
    assert settings["MAILGW_AUTH"] == "keys"
    assert not set(AUTH_SETTINGS[1:]) & set(settings)
    parsed = Settings.from_env(app_env(settings))
    assert (parsed.api_auth, parsed.api_tenant_id, parsed.api_audiences) == ("keys", None, ())


def test_entra_mode_sets_tenant_audience_and_authority(deploy: Any) -> None:
    settings = deploy(apiAuth="entra", apiAudience=API_AUDIENCE)[2]
    assert settings["MAILGW_AUTH"] == "entra"
    assert settings["MAILGW_API_TENANT_ID"] == Ref("tenant().tenantId")
    assert settings["MAILGW_API_AUTHORITY"] == Ref("environment().authentication.loginEndpoint")
    parsed = Settings.from_env(app_env(settings))
    assert parsed.api_auth == "entra"
    assert parsed.api_tenant_id == TENANT_ID
    assert parsed.api_audiences == (API_AUDIENCE,)
    # environment() ends the endpoint with a slash; the app's authority is the same URL without it.
    assert LOGIN_ENDPOINT.endswith("/")
    assert parsed.api_authority == Settings().api_authority == LOGIN_ENDPOINT.rstrip("/")


def test_entra_parameters_reach_their_settings(deploy: Any) -> None:
    tenant = "0e0e0e0e-0000-0000-0000-000000000001"
    settings = deploy(
        apiAuth="entra",
        apiTenantId=tenant,
        apiAudience=f"{API_AUDIENCE}, {API_APP_ID}",
        apiAuthority="https://login.microsoftonline.us",
    )[2]
    parsed = Settings.from_env(app_env(settings))
    assert parsed.api_tenant_id == tenant
    assert parsed.api_audiences == (API_AUDIENCE, API_APP_ID)
    assert parsed.api_authority == "https://login.microsoftonline.us"


def test_entra_without_an_audience_stops_the_deployment(deploy: Any) -> None:
    with pytest.raises(DeploymentFailure, match=r"apiAuth=entra needs apiAudience"):
        deploy(apiAuth="entra")
    # What fail() prevents: the app would refuse to start, naming the setting.
    env = app_env(deploy(apiAuth="entra", apiAudience=API_AUDIENCE)[2])
    del env["MAILGW_API_AUDIENCE"]
    with pytest.raises(SettingsError, match="MAILGW_API_AUDIENCE"):
        Settings.from_env(env)


def test_fail_is_reached_only_on_the_entra_branch() -> None:
    """fail() must sit inside the conditional branches (ARM evaluates only the branch it takes),
    never at the top of an expression that every deployment evaluates."""
    lines = (ROOT / "infra" / "main.bicep").read_text().splitlines()
    calls = [line for line in lines if "fail(" in line and not line.lstrip().startswith("//")]
    # The others: relayClientCertUri's (test_infra_relay_cert.py) and the SMTP intake's image and
    # certificate (test_infra_smtp_intake.py).
    audience = [line for line in calls if "apiAudience" in line]
    assert len(audience) == 1 and len(calls) == 4, calls
    (line,) = audience
    assert re.search(r"empty\(apiAudience\) \? \(createApiApp \? \w+ : fail\(", line), line


# -- the optional API app registration ---------------------------------------------------------


@pytest.mark.parametrize(("params", "deployed"), [({}, False), ({"createApiApp": True}, True)])
def test_api_app_is_opt_in(deploy: Any, params: dict[str, Any], deployed: bool) -> None:
    main, _, _ = deploy(**params)
    assert main.eval(main.tree["modules"]["apiApp"]["config"]["condition"]) is deployed


def test_api_app_has_the_roles_the_app_checks(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy(apiAuth="entra", createApiApp=True)
    module = module_template(trees, main, "apiApp")
    app = module.eval(module.resources["app"]["config"])
    assert app["uniqueName"] == "mailgw-test-api"  # apiAppName's default
    assert app["signInAudience"] == "AzureADMyOrg"  # tokens of this tenant only
    # v2 tokens: aud is the client id and the issuer the v2 one, as mailgw/auth.py requires
    assert app["api"]["requestedAccessTokenVersion"] == 2
    roles = app["appRoles"]
    assert {role["value"] for role in roles} == ROLES
    assert len(roles) == len(ROLES)
    for role in roles:
        assert role["allowedMemberTypes"] == ["Application", "User"]
        assert role["isEnabled"] is True
        assert role["displayName"] and role["description"]
        # A stable id per role: derived from the app's unique name and the role, never random.
        assert role["id"] == Ref(f"guid(mailgw-test-api, {role['value']})")
    principal = module.eval(module.resources["servicePrincipal"]["config"])
    assert principal["appId"] == Ref("app.appId")
    assert principal["appRoleAssignmentRequired"] is True


def test_the_created_api_app_is_the_audience(deploy: Any) -> None:
    env = app_env(deploy(apiAuth="entra", createApiApp=True)[2])
    assert Settings.from_env(env).api_audiences == (API_APP_ID,)
    # An explicit audience wins.
    env = app_env(deploy(apiAuth="entra", createApiApp=True, apiAudience=API_AUDIENCE)[2])
    assert Settings.from_env(env).api_audiences == (API_AUDIENCE,)


def test_api_app_outputs(deploy: Any) -> None:
    main, _, _ = deploy(createApiApp=True)
    assert main.output("API_APP_CLIENT_ID") == Ref("apiApp.outputs.appId")
    assert main.output("API_SERVICE_PRINCIPAL_ID") == Ref("apiApp.outputs.servicePrincipalId")


# -- documentation and the sample --------------------------------------------------------------


def test_sample_settings_default_to_keys() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(AUTH_SETTINGS) <= set(values)
    assert values["MAILGW_AUTH"] == "keys"
    parsed = Settings.from_env(values)
    assert parsed.api_auth == "keys"
    assert parsed.api_authority == Settings().api_authority


def test_readme_lists_the_settings_and_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    first_cells = re.findall(r"^\| ([^|]*`[^|]*) \|", readme, re.MULTILINE)
    listed = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert set(AUTH_SETTINGS) <= listed, set(AUTH_SETTINGS) - listed
    assert "docs/authentication.md" in readme
    assert "authentication.md" in (ROOT / "docs" / "deploy.md").read_text()


def test_the_guide_names_the_settings_roles_and_parameters(trees: Mapping[str, Any]) -> None:
    guide = (ROOT / "docs" / "authentication.md").read_text()
    for name in (*AUTH_SETTINGS, *sorted(ROLES)):
        assert f"`{name}`" in guide or name in guide, name
    for parameter in ("apiAuth", "apiAudience", "apiTenantId", "apiAuthority", "createApiApp"):
        assert parameter in trees["main.bicep"]["parameters"]
        assert parameter in guide, parameter
    assert "requestedAccessTokenVersion" in guide
    assert "appRoleAssignedTo" in guide
    # `--parameters name=value` in the guide must name real parameters.
    blocks = re.findall(r"--parameters (.*?)(?:\n\n|```)", guide, re.DOTALL)
    names = {name for block in blocks for name in re.findall(r"(\w+)=", block)}
    assert {"apiAuth", "apiAudience"} <= names
    assert names <= set(trees["main.bicep"]["parameters"])
