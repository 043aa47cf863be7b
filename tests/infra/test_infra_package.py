"""azure.yaml, the azd parameters file and .funcignore: what `azd up` provisions and ships.

.funcignore uses gitignore syntax, so it is evaluated by git itself (`git check-ignore` in a scratch
repository holding only that file), on the project's files and on the local-only directories that
are never committed (.venv, node_modules, ...) but sit next to them when azd or Core Tools zip the
folder.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from infra_support import INFRA, ROOT, load_yaml

#: Directories and files that exist on a developer's disk but are never committed.
LOCAL_ONLY = [
    ".venv/lib/python3.11/site-packages/x.py",
    ".venv-infra/bin/checkov",
    "node_modules/azurite/package.json",
    ".azurite/__azurite_db_queue__.json",
    "local.settings.json",
    "outbox/abc.eml",
    ".pytest_cache/README.md",
    "mailgw/__pycache__/settings.cpython-311.pyc",
    ".azure/dev/.env",
    "mailgw.egg-info/PKG-INFO",
    "mailgw.zip",  # docs/deploy.md, step 4
    "mailgw-outputs.json",  # docs/deploy.md, step 3
    ".mailgw/running.json",
    "artifacts/mail-viewer-list.png",
]
#: What the Function App needs at run time.
REQUIRED = ["function_app.py", "host.json", "requirements.txt"]
#: Top-level packages that must stay out of the package (and out of the app's imports).
EXCLUDED_PACKAGES = ["tests", "devhost", "bench", "scripts", "infra", "docs"]


def project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [path for path in listed if (ROOT / path).exists()]


def funcignored(paths: list[str], tmp_path: Path) -> set[str]:
    """The subset of ``paths`` that .funcignore excludes, as git evaluates gitignore patterns."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    subprocess.run(["git", "init", "-q", str(scratch)], check=True)
    (scratch / ".gitignore").write_text((ROOT / ".funcignore").read_text())
    result = subprocess.run(
        ["git", "-C", str(scratch), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(paths),
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: nothing ignored
    return set(result.stdout.splitlines())


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    files = project_files() + LOCAL_ONLY
    ignored = funcignored(files, tmp_path_factory.mktemp("funcignore"))
    return {"shipped": set(files) - ignored, "ignored": ignored}


def test_package_holds_the_app(package: dict[str, set[str]]) -> None:
    shipped = package["shipped"]
    assert set(REQUIRED) <= shipped
    app_sources = {
        p.relative_to(ROOT).as_posix()
        for folder in ("functions", "mailgw")
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert app_sources <= shipped


def test_package_leaves_out_tests_tools_and_local_state(package: dict[str, set[str]]) -> None:
    shipped = package["shipped"]
    for path in shipped:
        top = path.split("/")[0]
        assert top not in EXCLUDED_PACKAGES, path
        assert not top.startswith((".venv", "node_modules", ".azurite", ".git")), path
    assert set(LOCAL_ONLY) <= package["ignored"]
    # Nothing else at the top level but the app itself.
    tops = {path.split("/")[0] for path in shipped}
    assert tops <= {"function_app.py", "host.json", "requirements.txt", "functions", "mailgw"}, tops


def test_shipped_code_imports_nothing_left_out(package: dict[str, set[str]]) -> None:
    for path in sorted(p for p in package["shipped"] if p.endswith(".py")):
        for node in ast.walk(ast.parse((ROOT / path).read_text(), path)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in EXCLUDED_PACKAGES, f"{path} imports {name}"


def test_azure_yaml_deploys_the_function_app() -> None:
    config = load_yaml(ROOT / "azure.yaml")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", config["name"])
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert config["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}


def test_the_function_app_carries_the_azd_service_tag(deploy: Any) -> None:
    _, app, _ = deploy()
    site = app.eval(app.resources["site"]["config"])
    assert site["tags"]["azd-service-name"] == "api"  # the service name in azure.yaml
    assert site["tags"]["azd-env-name"] == "test"


def test_azd_parameters_file(trees: Mapping[str, Any]) -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = trees["main.bicep"]["parameters"]
    assert set(parameters) <= set(declared), set(parameters) - set(declared)
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= set(parameters), required - set(parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["allowedSenders"]["value"] == "${MAILGW_ALLOWED_SENDERS}"
    for name, entry in parameters.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", entry["value"]), name


def test_azd_parameter_defaults_match_the_bicep(trees: Mapping[str, Any]) -> None:
    """``${VAR=default}`` in main.parameters.json must not change main.bicep's defaults."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = trees["main.bicep"]["parameters"]
    for name, entry in parameters.items():
        match = re.fullmatch(r"\$\{[A-Z_]+=([^}]*)\}", entry["value"])
        if not match or declared[name].get("default") is None:
            continue
        default = declared[name]["default"]
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        if name == "operatorPrincipalId":
            expected = ""
        assert match.group(1) == expected, name


def test_deploy_guide_documents_every_parameter_and_output(trees: Mapping[str, Any]) -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    table = re.findall(r"^\| `(\w+)` \|", guide, re.MULTILINE)
    main = trees["main.bicep"]
    assert set(main["parameters"]) <= set(table), set(main["parameters"]) - set(table)
    for output in main["outputs"]:
        assert f"`{output}`" in guide, output


def test_deploy_guide_commands_use_real_names(trees: Mapping[str, Any]) -> None:
    """``name=value`` after ``--parameters`` and ``out NAME`` must name real parameters/outputs."""
    guide = (ROOT / "docs" / "deploy.md").read_text()
    main = trees["main.bicep"]
    blocks = re.findall(r"--parameters (.*?)(?:\n\n|```)", guide, re.DOTALL)
    names = [name for block in blocks for name in re.findall(r"(\w+)=", block)]
    assert {"environmentName", "allowedSenders", "operatorPrincipalId"} <= set(names)
    assert set(names) <= set(main["parameters"])
    outputs = re.findall(r"\$\(out (\w+)\)", guide)
    assert outputs and set(outputs) <= set(main["outputs"])


def test_ci_workflow_runs_the_tests_and_the_bicep_compiler() -> None:
    workflow = load_yaml(ROOT / ".github" / "workflows" / "ci.yml")
    triggers = workflow.get("on") or workflow["true"]  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    assert workflow["permissions"] == {"contents": "read"}
    steps = {name: job["steps"] for name, job in workflow["jobs"].items()}
    runs = {name: "\n".join(s.get("run", "") for s in job) for name, job in steps.items()}
    assert "make test" in runs["test"]
    python = [s for s in steps["test"] if s.get("uses", "").startswith("actions/setup-python")]
    assert python[0]["with"]["python-version"] == "3.11"
    assert "az bicep build --file infra/main.bicep" in runs["bicep"]
    assert "az bicep lint --file" in runs["bicep"]
    assert "infra/modules/*.bicep" in runs["bicep"]
