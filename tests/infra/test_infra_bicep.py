"""Every .bicep parses with the pinned pycep-parser, and the templates hang together.

The Bicep CLI cannot be installed here (it downloads a binary), so what `az bicep build` would catch
first is checked on the parsed trees: module paths, the parameters each module call passes, the
outputs it reads, unused parameters and variables (errors in infra/bicepconfig.json), and the Graph
extension's configuration. CI (.github/workflows/ci.yml) runs the real `az bicep build` and lint.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra_support import HERE, INFRA, ROOT, module_call

PYCEP_PIN = re.compile(r"^pycep-parser==(\S+)$", re.MULTILINE)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def test_pycep_parser_is_the_pinned_version(parsed: Mapping[str, Any]) -> None:
    pins = PYCEP_PIN.findall((HERE / "requirements-infra.txt").read_text())
    assert pins == [parsed["pycep_version"]]


def test_every_bicep_file_parses(parsed: Mapping[str, Any]) -> None:
    files = {f"infra/{p.relative_to(INFRA).as_posix()}" for p in bicep_files()}
    assert files, "no .bicep files under infra/"
    assert files <= set(parsed["files"]), "a file was not handed to the parser"
    errors = {path: entry["error"] for path, entry in parsed["files"].items() if "error" in entry}
    assert errors == {}


def test_parser_understands_the_constructs_we_use(trees: Mapping[str, Mapping[str, Any]]) -> None:
    """Parsed, not swallowed: each Bicep feature shows up where the templates use it."""
    main = trees["main.bicep"]
    # user-defined types (string and int literal unions)
    assert main["types"]["graphModeType"]["value"] == "sendmail | draft"
    assert main["types"]["instanceMemoryType"]["value"] == "512 | 2048 | 4096"
    assert main["parameters"]["graphMode"]["type"] == "graphModeType"
    # decorators
    senders = main["parameters"]["allowedSenders"]
    decorators = {d["type"]: d.get("argument") for d in senders["decorators"]}
    assert decorators["min_length"] == 3 and "MAILGW_ALLOWED_SENDERS" in decorators["description"]
    # extension declarations
    for module in (
        "modules/graph-app-roles.bicep",
        "modules/cross-tenant-app.bicep",
        "modules/api-app.bicep",
    ):
        assert trees[module]["extensions"] == {"microsoftGraphV1": {}}
    # existing resources
    assert trees["modules/graph-app-roles.bicep"]["resources"]["graph"]["existing"] is True
    assert trees["modules/rbac.bicep"]["resources"]["account"]["existing"] is True
    assert trees["modules/storage.bicep"]["resources"]["account"]["existing"] is False
    # loops
    queues = trees["modules/storage.bicep"]["resources"]["queues"]
    assert queues["config"]["loop_type"]["type"] == "array"
    assert trees["modules/graph-app-roles.bicep"]["resources"]["grants"]["config"]["loop_type"]
    # conditional modules
    assert module_call(main, "graphGrant")[1] is not None
    assert module_call(main, "crossTenantApp")[1] is not None
    assert module_call(main, "apiApp")[1] is not None
    # a loop inside a property (the API app's roles)
    api_app = trees["modules/api-app.bicep"]["resources"]["app"]["config"]
    assert api_app["appRoles"]["loop_type"]["type"] == "array"
    assert module_call(main, "functionApp")[1] is None


def test_the_parser_canary_fixture_parses(parsed: Mapping[str, Any]) -> None:
    entry = parsed["files"]["tests/infra/fixtures/insecure.bicep"]
    assert "tree" in entry, entry.get("error")
    assert entry["tree"]["extensions"] == {"microsoftGraphV1": {}}


def test_module_calls_match_module_declarations(trees: Mapping[str, Mapping[str, Any]]) -> None:
    for caller_path, tree in trees.items():
        for symbol in tree.get("modules", {}):
            path, _, params = module_call(tree, symbol)
            target = (Path(caller_path).parent / path).as_posix()
            assert target in trees, f"{caller_path}: module {symbol} -> {path} does not exist"
            declared = trees[target].get("parameters", {})
            unknown = set(params) - set(declared)
            assert not unknown, f"{caller_path}: {symbol} passes undeclared {sorted(unknown)}"
            required = {name for name, p in declared.items() if p.get("default") is None}
            nullable = {name for name in required if declared[name]["type"].endswith("?")}
            missing = required - nullable - set(params)
            assert not missing, f"{caller_path}: {symbol} does not pass required {sorted(missing)}"


def test_module_outputs_read_exist(trees: Mapping[str, Mapping[str, Any]]) -> None:
    for caller_path, tree in trees.items():
        text = (INFRA / caller_path).read_text()
        for symbol, output in re.findall(r"\b(\w+)\.\??outputs\.(\w+)", text):
            path, _, _ = module_call(tree, symbol)
            target = (Path(caller_path).parent / path).as_posix()
            assert output in trees[target].get("outputs", {}), f"{caller_path}: {symbol}.{output}"


def test_no_unused_parameters_or_variables(trees: Mapping[str, Mapping[str, Any]]) -> None:
    """Linter rules no-unused-params/vars are errors in bicepconfig.json; catch them here too."""
    for path, tree in trees.items():
        text = re.sub(r"//.*", "", (INFRA / path).read_text())
        for kind in ("parameters", "variables"):
            for name in tree.get(kind, {}):
                uses = re.findall(rf"(?<![\w.]){re.escape(name)}\b", text)
                assert len(uses) >= 2, f"{path}: {kind[:-1]} {name} is never used"


def test_bicepconfig_declares_the_graph_extension() -> None:
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    reference = config["extensions"]["microsoftGraphV1"]
    assert reference.startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")
    declared = set()
    for path in bicep_files():
        declared |= set(re.findall(r"^extension\s+(\w+)", path.read_text(), re.MULTILINE))
    assert declared == {"microsoftGraphV1"}


def test_only_the_graph_modules_need_the_extension() -> None:
    """Graph resources sit in their own conditional modules, so a deployment that uses neither
    needs no Entra permissions at all."""
    for path in bicep_files():
        text = path.read_text()
        uses_graph = "'Microsoft.Graph/" in text
        assert uses_graph == ("extension microsoftGraphV1" in text), path
        if uses_graph:
            assert path.parent.name == "modules", path


def test_every_parameter_of_main_is_described(trees: Mapping[str, Mapping[str, Any]]) -> None:
    main = trees["main.bicep"]
    for name, param in main["parameters"].items():
        assert any(d["type"] == "description" for d in param["decorators"]), name


def test_bicep_lives_in_infra_only() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.bicep"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    stray = [p for p in listed if not p.startswith(("infra/", "tests/infra/fixtures/"))]
    assert stray == []


def test_no_hardcoded_cloud_hosts() -> None:
    """Mirror of the linter rule no-hardcoded-env-urls (an error in bicepconfig.json): endpoints of
    a cloud come from environment() or from resource properties, so the template works in every
    cloud. (graph.microsoft.com is the MAILGW_GRAPH_ENDPOINT default, a parameter.)"""
    hosts = [
        "core.windows.net",
        "login.microsoftonline.com",
        "management.azure.com",
        "management.core.windows.net",
        "vault.azure.net",
        "graph.windows.net",
        "database.windows.net",
        "azuredatalakestore.net",
        "batch.core.windows.net",
        "trafficmanager.net",
        "gallery.azure.com",
        "api.loganalytics.io",
    ]
    for path in bicep_files():
        text = path.read_text()
        assert not [host for host in hosts if host in text], path
