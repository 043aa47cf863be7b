"""Fixtures of the infrastructure checks; the helpers and the rationale are in infra_support.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from bicep_model import Template
from infra_support import HERE, module_template, run_infra_tool


@pytest.fixture(scope="session")
def parsed() -> Mapping[str, Any]:
    """Every .bicep of infra/ and of the fixtures, parsed by .venv-infra's pycep-parser."""
    result = run_infra_tool(
        str(HERE / "tools" / "parse_bicep.py"), "infra", "tests/infra/fixtures", timeout=120
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture(scope="session")
def trees(parsed: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Parsed trees of infra/, by path relative to infra/ (``main.bicep``, ``modules/...``)."""
    result = {}
    for path, entry in parsed["files"].items():
        if path.startswith("infra/") and "tree" in entry:
            result[path.removeprefix("infra/")] = entry["tree"]
    return result


@pytest.fixture(scope="session")
def deploy(trees: Mapping[str, Mapping[str, Any]]) -> Any:
    """``deploy(**main_params)`` → (main Template, function-app Template, app settings dict)."""

    def _deploy(**params: Any) -> tuple[Template, Template, dict[str, Any]]:
        params.setdefault("environmentName", "test")
        params.setdefault("allowedSenders", "noreply@contoso.com")
        main = Template(trees["main.bicep"], params)
        app = module_template(trees, main, "functionApp")
        site = app.resources["site"]["config"]
        listed = app.eval(site["properties"]["siteConfig"]["appSettings"])
        settings = {entry["name"]: entry["value"] for entry in listed}
        assert len(settings) == len(listed), "an app setting is listed twice"
        return main, app, settings

    return _deploy
