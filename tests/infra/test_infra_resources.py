"""The resources agree with the app: names, storage security, role GUIDs, runtime, no secret."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import pytest
from bicep_model import Ref, Template
from infra_support import INFRA, ROOT, load_yaml, module_template
from packaging.specifiers import SpecifierSet

from mailgw.settings import Settings

#: Azure built-in roles, name → role definition id (the same GUID in every tenant). Source:
#: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
BUILT_IN_ROLES = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
}
#: The modules that assign roles, each with a ``roles`` table (camelCase name → GUID).
ROLE_MODULES = ("modules/rbac.bicep", "modules/key-vault-access.bicep", "modules/events.bicep")
#: Microsoft Graph application permissions (app roles), name → id; and Graph's own app id.
GRAPH_APP_ROLES = {
    "Mail.Send": "b633e1c5-b582-4048-a93e-9f11b44c7e96",
    "Mail.ReadWrite": "e2a3a72e-5f79-4c64-b1b1-878b674786c9",
}
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
KNOWN_GUIDS = set(BUILT_IN_ROLES.values()) | set(GRAPH_APP_ROLES.values()) | {GRAPH_APP_ID}
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Secret-looking values: account keys, SAS signatures, client secrets, private keys, passwords.
SECRET_VALUE = re.compile(
    r"AccountKey=|SharedAccessKey|SharedAccessSignature|[?&]sig=|client_?secret|password=|"
    r"-----BEGIN|listKeys|listSecrets|list[A-Z]\w*\(",
    re.IGNORECASE,
)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|(?<!INSTRUMENTATION)KEY\b|TOKEN", re.IGNORECASE)


def camel(name: str) -> str:
    """'Storage Blob Data Owner' → 'storageBlobDataOwner', the key of rbac.bicep's roles var."""
    words = name.split()
    return words[0].lower() + "".join(words[1:])


def storage_module(deploy: Any, trees: Mapping[str, Any], **params: Any) -> Template:
    main, _, _ = deploy(**params)
    return module_template(trees, main, "storage")


# -- names -------------------------------------------------------------------------------------


def test_queue_table_and_container_names_are_the_app_defaults(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    storage = storage_module(deploy, trees)
    app = Settings()
    queues = [q["name"] for q in storage.eval(storage.resources["queues"]["config"])]
    assert queues == [app.queue, app.poison_queue]
    table = storage.eval(storage.resources["stateTable"]["config"])
    assert table["name"] == app.state_table
    payloads = storage.eval(storage.resources["payloadContainer"]["config"])
    assert payloads["name"] == app.payload_container
    assert payloads["properties"]["publicAccess"] == "None"


def test_renamed_queue_gets_its_poison_twin(deploy: Any, trees: Mapping[str, Any]) -> None:
    storage = storage_module(deploy, trees, queueName="outgoing-mail")
    queues = [q["name"] for q in storage.eval(storage.resources["queues"]["config"])]
    assert queues == ["outgoing-mail", Settings(queue="outgoing-mail").poison_queue]


def test_triggers_bind_to_the_queues_the_bicep_creates() -> None:
    """functions/ binds %MAILGW_QUEUE% and %MAILGW_QUEUE%-poison through AzureWebJobsStorage,
    the connection whose identity-based settings the Bicep writes."""
    bindings = set()
    for path in sorted((ROOT / "functions").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "queue_trigger":
                args = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                bindings.add((args["queue_name"], args["connection"]))
    assert bindings == {
        ("%MAILGW_QUEUE%", "AzureWebJobsStorage"),
        ("%MAILGW_QUEUE%-poison", "AzureWebJobsStorage"),
    }


def test_host_json_queue_extension_fits_the_queues() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"  # what the app's queue clients write
    # After maxDequeueCount crashes the host moves a message to <queue>-poison, which must exist.
    assert queues["maxDequeueCount"] >= 1


def test_payload_lifecycle_rule_is_a_backstop(deploy: Any, trees: Mapping[str, Any]) -> None:
    for retention in (1, 7, 30, 365):
        storage = storage_module(deploy, trees, retentionDays=retention)
        rule = storage.eval(storage.resources["lifecycle"]["config"])["properties"]["policy"]
        (only,) = rule["rules"]
        assert only["enabled"] is True
        assert only["definition"]["filters"]["prefixMatch"] == [f"{Settings().payload_container}/"]
        days = only["definition"]["actions"]["baseBlob"]["delete"][
            "daysAfterModificationGreaterThan"
        ]
        # Never before the gateway's own retention, nor before a message scheduled 7 days ahead
        # has had its retries (MAILGW_MAX_AGE_SECONDS), plus slack for two daily clean-ups.
        assert days >= retention + 2
        assert days * 86400 >= 7 * 86400 + Settings().max_age_seconds + 2 * 86400


def test_deployment_container_is_the_one_flex_deploys_from(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    main, app, _ = deploy()
    storage = module_template(trees, main, "storage")
    container = storage.eval(storage.resources["deploymentContainer"]["config"])["name"]
    site = app.eval(app.resources["site"]["config"])
    target = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert target["value"] == f"<account.properties.primaryEndpoints.blob>{container}"
    assert target["authentication"]["type"] == "UserAssignedIdentity"


def test_storage_replication_defaults_to_what_every_region_offers(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    """ZRS fails in Flex Consumption regions without availability zones (westus, ukwest, ...):
    the default is LRS, and azd users choose with AZURE_STORAGE_SKU."""
    account = storage_module(deploy, trees).resources["account"]["config"]
    assert storage_module(deploy, trees).eval(account)["sku"] == {"name": "Standard_LRS"}
    zoned = storage_module(deploy, trees, storageSku="Standard_ZRS")
    assert zoned.eval(account)["sku"] == {"name": "Standard_ZRS"}
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["storageSku"]["value"] == "${AZURE_STORAGE_SKU=Standard_LRS}"
    # the module's own default agrees, for anyone deploying it alone
    assert Template(trees["modules/storage.bicep"]).parameters["skuName"]["default"] == (
        "Standard_LRS"
    )


# -- storage and monitoring security -----------------------------------------------------------


def test_storage_account_is_identity_only(deploy: Any, trees: Mapping[str, Any]) -> None:
    storage = storage_module(deploy, trees)
    props = storage.eval(storage.resources["account"]["config"])["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False


def test_monitoring_has_local_auth_disabled(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy()
    monitoring = module_template(trees, main, "monitoring")
    components = monitoring.eval(monitoring.resources["appInsights"]["config"])
    assert components["properties"]["DisableLocalAuth"] is True
    workspace = monitoring.eval(monitoring.resources["workspace"]["config"])
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


# -- role assignments --------------------------------------------------------------------------


def role_assignments(rbac: Template) -> list[tuple[str, str, str, str]]:
    """(symbol, scope symbol, role id, principal) of every non-loop role assignment."""
    result = []
    for symbol, resource in rbac.resources.items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        if "loop_type" in resource["config"]:
            continue
        config = rbac.eval(resource["config"])
        role = str(config["properties"]["roleDefinitionId"])
        role_id = GUID.search(role)
        assert role_id, f"{symbol}: role not given by GUID: {role}"
        principal = str(config["properties"]["principalId"])
        result.append((symbol, str(config["scope"]), role_id.group(0), principal))
    return result


def test_role_tables_match_the_built_in_roles(trees: Mapping[str, Any]) -> None:
    expected = {camel(name): guid for name, guid in BUILT_IN_ROLES.items()}
    together: dict[str, str] = {}
    for path in ROLE_MODULES:
        roles = Template(trees[path]).var("roles")
        assert roles.items() <= expected.items(), path
        together |= roles
    assert together == expected
    assigning = {
        path
        for path, tree in trees.items()
        for resource in tree.get("resources", {}).values()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    }
    assert assigning == set(ROLE_MODULES)


def test_the_identity_gets_exactly_its_four_roles(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy()
    rbac = module_template(trees, main, "rbac")
    by_name = {guid: name for name, guid in BUILT_IN_ROLES.items()}
    granted = {
        (by_name[role], scope)
        for _, scope, role, principal in role_assignments(rbac)
        if principal == "<identity.properties.principalId>"
    }
    assert granted == {
        ("Storage Blob Data Owner", "<account>"),
        ("Storage Queue Data Contributor", "<account>"),
        ("Storage Table Data Contributor", "<account>"),
        ("Monitoring Metrics Publisher", "<appInsights>"),
    }


@pytest.mark.parametrize("path", ROLE_MODULES)
def test_each_role_assignment_says_why(path: str) -> None:
    """The comment above each assignment names its role and gives the reason."""
    lines = (INFRA / path).read_text().splitlines()
    for index, line in enumerate(lines):
        if "'Microsoft.Authorization/roleAssignments@" not in line:
            continue
        comment: list[str] = []
        for previous in reversed(lines[:index]):
            if not previous.startswith("//"):
                break
            comment.insert(0, previous)
        text = " ".join(comment)
        assert len(text) > 60, f"{path}:{index + 1}: no comment saying why"
        if "operator" not in line:
            assert any(name in text for name in BUILT_IN_ROLES), f"{path}:{index + 1}: {text}"


OPERATOR = "0f0f0f0f-0000-0000-0000-000000000001"


def operator_grants(rbac: Template) -> set[tuple[str, str]]:
    """(role name, scope) of every operator role assignment (the two loops of rbac.bicep)."""
    by_guid = {guid: name for name, guid in BUILT_IN_ROLES.items()}
    grants = set()
    for symbol in ("operatorBlobAccess", "operatorAccess"):
        for grant in rbac.eval(rbac.resources[symbol]["config"]):
            match = GUID.search(str(grant["properties"]["roleDefinitionId"]))
            assert match
            assert grant["properties"]["principalId"] == OPERATOR
            assert grant["properties"]["principalType"] == "User"
            grants.add((by_guid[match.group(0)], str(grant["scope"])))
    return grants


def test_operator_access_is_optional(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy()
    rbac = module_template(trees, main, "rbac")
    assert rbac.eval(rbac.resources["operatorAccess"]["config"]) == []
    assert rbac.eval(rbac.resources["operatorBlobAccess"]["config"]) == []
    main, _, _ = deploy(operatorPrincipalId=OPERATOR)
    # Data access for the mailgw CLI, never ownership.
    assert {role for role, _ in operator_grants(module_template(trees, main, "rbac"))} == {
        "Storage Blob Data Contributor",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    }


def test_operator_reads_no_blob_but_the_payloads(deploy: Any, trees: Mapping[str, Any]) -> None:
    """Issue 9: the operator's Blob role is on the payload container, not the account, which also
    holds the deployment package and the Functions host's keys."""
    main, _, _ = deploy(operatorPrincipalId=OPERATOR, payloadContainerName="kept-mail")
    rbac = module_template(trees, main, "rbac")
    grants = operator_grants(rbac)
    assert ("Storage Blob Data Contributor", "<payloadContainer>") in grants
    assert [scope for role, scope in grants if "Blob" in role] == ["<payloadContainer>"]
    container = rbac.eval(rbac.resources["payloadContainer"]["config"])
    assert container["name"] == "kept-mail"
    assert container["parent"] == Ref("blobService")
    assert rbac.eval(rbac.resources["blobService"]["config"])["parent"] == Ref("account")
    assert rbac.resources["payloadContainer"]["existing"] is True


def test_graph_app_roles(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy()
    assert main.var("graphAppRoles") == {
        "mailSend": GRAPH_APP_ROLES["Mail.Send"],
        "mailReadWrite": GRAPH_APP_ROLES["Mail.ReadWrite"],
    }
    assert main.var("graphAppRoleIds") == [GRAPH_APP_ROLES["Mail.Send"]]
    draft, _, _ = deploy(graphMode="draft")
    assert draft.var("graphAppRoleIds") == list(GRAPH_APP_ROLES.values())
    graph = Template(trees["modules/graph-app-roles.bicep"])
    assert graph.var("graphAppId") == GRAPH_APP_ID


@pytest.mark.parametrize(
    ("params", "deployed"),
    [
        ({}, False),  # default off: Exchange RBAC is the recommended grant
        ({"grantGraphMailSendInEntra": True}, True),
        ({"grantGraphMailSendInEntra": True, "mailTenantId": "x"}, False),  # wrong tenant
    ],
)
def test_entra_grant_is_opt_in(deploy: Any, params: dict[str, Any], deployed: bool) -> None:
    main, _, _ = deploy(**params)
    condition = main.tree["modules"]["graphGrant"]["config"]["condition"]
    assert main.eval(condition) is deployed


def test_cross_tenant_app_trusts_the_identity(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, _ = deploy(mailTenantId="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    assert main.eval(main.tree["modules"]["crossTenantApp"]["config"]["condition"]) is True
    app = module_template(trees, main, "crossTenantApp")
    registration = app.eval(app.resources["app"]["config"])
    assert registration["signInAudience"] == "AzureADMultipleOrgs"
    credential = app.eval(app.resources["federatedCredential"]["config"])
    assert credential["subject"] == Ref("identity.properties.principalId")
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert credential["issuer"].endswith("<tenant().tenantId>/v2.0")
    assert credential["issuer"].startswith("<environment().authentication.loginEndpoint>")
    assert registration["uniqueName"] == "mailgw-test-sender"  # crossTenantAppName's default
    assert credential["name"] == "<app.uniqueName>/mailgw-function-identity"


def test_every_guid_in_infra_is_a_known_one() -> None:
    for path in INFRA.rglob("*.bicep"):
        unknown = set(GUID.findall(path.read_text())) - KNOWN_GUIDS
        assert unknown == set(), f"{path.name}: add unknown GUIDs to the tables in this test"


# -- runtime -----------------------------------------------------------------------------------


#: Python versions Flex Consumption offers (az functionapp list-flexconsumption-runtimes).
FLEX_PYTHON_VERSIONS = ["3.10", "3.11", "3.12", "3.13"]


def python_versions_of_the_project() -> list[str]:
    """The minor versions pyproject.toml's requires-python admits, among those Flex offers."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specifier = SpecifierSet(project["project"]["requires-python"])
    return [version for version in FLEX_PYTHON_VERSIONS if f"{version}.0" in specifier]


def test_runtime_is_python_on_flex_consumption(deploy: Any) -> None:
    _, app, _ = deploy()
    plan = app.eval(app.resources["plan"]["config"])
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux
    site = app.eval(app.resources["site"]["config"])
    assert site["kind"] == "functionapp,linux"
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.11"}
    _, app, _ = deploy(pythonVersion="3.12")
    runtime = app.eval(app.resources["site"]["config"])["properties"]["functionAppConfig"]
    assert runtime["runtime"] == {"name": "python", "version": "3.12"}


def test_python_versions_agree_everywhere(trees: Mapping[str, Any]) -> None:
    """pyproject.toml, the parameter's allowed values, the docs and CI name the same versions:
    the Bicep offers exactly what requires-python admits, and defaults to the tested one."""
    supported = python_versions_of_the_project()
    assert supported == ["3.11", "3.12"]  # azure-functions 1.x: Python < 3.13
    main = trees["main.bicep"]
    allowed = [v.strip() for v in main["types"]["pythonVersionType"]["value"].split("|")]
    assert allowed == supported
    tested = main["parameters"]["pythonVersion"]["default"]
    assert tested == supported[0]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["mypy"]["python_version"] == tested
    assert project["tool"]["ruff"]["target-version"] == "py" + tested.replace(".", "")
    ci = load_yaml(ROOT / ".github" / "workflows" / "ci.yml")
    setups = [s for s in ci["jobs"]["test"]["steps"] if "setup-python" in s.get("uses", "")]
    assert [s["with"]["python-version"] for s in setups] == [tested]
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["pythonVersion"]["value"] == "${MAILGW_PYTHON_VERSION=" + tested + "}"
    guide = (ROOT / "docs" / "deploy.md").read_text()
    (row,) = [line for line in guide.splitlines() if line.startswith("| `pythonVersion` |")]
    assert f"| `{tested}` |" in row
    for version in FLEX_PYTHON_VERSIONS:  # each one supported, or said not to be
        assert version in row, version
    assert project["project"]["requires-python"] in row


def test_host_json_is_functions_v4_with_the_bundle_flex_needs() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"  # the host.json schema of Functions 2.x-4.x
    bundle = host["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    # Flex Consumption requires extension bundle 4.x or later for non-.NET apps.
    assert bundle["version"] == "[4.*, 5.0.0)"
    # azure-functions 1.x is the Python library line of the v4 host for Python 3.11 (DESIGN.md).
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^azure-functions==1\.", requirements, re.MULTILINE)


def test_always_ready_covers_http_and_delivery(deploy: Any) -> None:
    for instances, expected in ((0, []), (1, ["http", "function:deliver"])):
        _, app, _ = deploy(alwaysReadyInstances=instances)
        site = app.eval(app.resources["site"]["config"])
        ready = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]["alwaysReady"]
        assert [entry["name"] for entry in ready] == expected
        assert all(entry["instanceCount"] == instances for entry in ready)


def test_always_ready_names_the_queue_triggered_function() -> None:
    """'function:deliver' must name the delivery function as the host indexes it (the Python
    function's name in the v2 model)."""
    tree = ast.parse((ROOT / "functions" / "delivery.py").read_text())
    functions = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        and any(
            getattr(getattr(d, "func", None), "attr", "") == "queue_trigger"
            for d in node.decorator_list
        )
    ]
    assert functions == ["deliver"]


def test_scale_parameters(deploy: Any) -> None:
    _, app, _ = deploy(instanceMemoryMB=4096, maximumInstanceCount=40)
    scale = app.eval(app.resources["site"]["config"])["properties"]["functionAppConfig"][
        "scaleAndConcurrency"
    ]
    assert (scale["instanceMemoryMB"], scale["maximumInstanceCount"]) == (4096, 40)


# -- no secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"mailTenantId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"},
        {"transport": "smtp"},
        {"apiAuth": "entra", "createApiApp": True},
        {
            "transport": "relay",
            "relayHost": "contoso-com.mail.protection.outlook.com",
            "relayClientCertUri": "https://kv-mailgw.vault.azure.net/secrets/mailgw-relay/",
            "relayClientCertKeyVaultName": "kv-mailgw",
        },
    ],
)
def test_app_settings_hold_no_secret(deploy: Any, params: dict[str, Any]) -> None:
    _, _, settings = deploy(**params)
    for name, value in settings.items():
        assert not SECRET_VALUE.search(str(value)), f"{name} looks like a secret: {value}"
        assert not SECRET_NAME.search(name), f"{name} is named like a secret"
        if name == "MAILGW_RELAY_CLIENT_CERT":  # the certificate's key: only ever a reference
            assert re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=https://[^)]+\)", value), value
        if isinstance(value, Ref):  # deployment-time values: only identities, endpoints, ids
            assert value.path in {
                "identity.properties.clientId",
                "account.properties.primaryEndpoints.blob",
                "account.properties.primaryEndpoints.queue",
                "account.properties.primaryEndpoints.table",
                "appInsights.properties.ConnectionString",
                "crossTenantApp.outputs.appClientId",
                "tenant().tenantId",
                "environment().authentication.loginEndpoint",
                "apiApp.outputs.appId",
            }, name


def test_no_secret_anywhere_in_infra() -> None:
    for path in [*INFRA.rglob("*.bicep"), *INFRA.rglob("*.json")]:
        text = path.read_text()
        assert not SECRET_VALUE.search(text), path
        assert "@secure()" not in text, f"{path}: a secure parameter means a secret is passed"


def test_outputs_hold_no_secret(deploy: Any) -> None:
    main, _, _ = deploy()
    for name in main.outputs:
        assert not SECRET_NAME.search(name), name
        assert not SECRET_VALUE.search(str(main.output(name))), name
