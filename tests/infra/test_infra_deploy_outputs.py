"""Deployment outputs are read regardless of case, as ARM returns them.

ARM does not keep the case of output names (Azure/bicep#9360, Azure/azure-dev#512): the template's
``FUNCTION_APP_NAME`` can come back as ``functioN_APP_NAME``. scripts/deploy_output.py looks names
up case-insensitively; here it reads deployment JSON with ARM's casing, and the guide's own step 3
block runs in bash against a fake `az` that answers with such names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from infra_support import HERE, ROOT, doc_block

SCRIPT = ROOT / "scripts" / "deploy_output.py"
DEPLOY_GUIDE = ROOT / "docs" / "deploy.md"
GUIDES = [DEPLOY_GUIDE, ROOT / "docs" / "authentication.md"]


def arm_case(name: str) -> str:
    """A casing ARM may return: the first word lower-cased but for its last letter, as in the
    reported ``functioN_APP_NAME``; names without an underscore get their first letter lowered."""
    head, sep, tail = name.partition("_")
    if not sep:
        return name[:1].swapcase() + name[1:]
    return head[:-1].lower() + head[-1:].upper() + sep + tail


def arm_outputs(values: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs object of `az deployment group show`, with ARM's casing and value types."""
    outputs = {}
    for name, value in values.items():
        kind = "String" if isinstance(value, str) else type(value).__name__.capitalize()
        outputs[arm_case(name)] = {"type": kind, "value": value}
    return outputs


@pytest.fixture(scope="module")
def output_values(trees: Mapping[str, Any]) -> dict[str, str]:
    """A plausible value for every output main.bicep declares."""
    return {name: f"value-of-{name.lower()}" for name in trees["main.bicep"]["outputs"]}


def read_output(document: Any, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), name],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_arm_casing_really_differs(output_values: Mapping[str, str]) -> None:
    assert arm_case("FUNCTION_APP_NAME") == "functioN_APP_NAME"
    assert all(arm_case(name) != name for name in output_values)


def test_every_output_is_found_whatever_its_case(output_values: Mapping[str, str]) -> None:
    outputs = arm_outputs(output_values)
    for name, value in output_values.items():
        result = read_output(outputs, name)
        assert result.returncode == 0, result.stderr
        assert result.stdout == value + "\n"


def test_the_whole_deployment_document_works_too(output_values: Mapping[str, str]) -> None:
    document = {
        "id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Resources/deployments/mailgw",
        "properties": {"provisioningState": "Succeeded", "outputs": arm_outputs(output_values)},
    }
    result = read_output(document, "STORAGE_ACCOUNT_NAME")
    assert result.stdout == "value-of-storage_account_name\n", result.stderr


def test_non_string_values_print_as_json() -> None:
    outputs = {"maX_AGE": {"type": "Int", "value": 86400}, "flaGS": {"type": "Array", "value": [1]}}
    assert read_output(outputs, "MAX_AGE").stdout == "86400\n"
    assert read_output(outputs, "flags").stdout == "[1]\n"


def test_an_unknown_name_fails_loudly(output_values: Mapping[str, str]) -> None:
    result = read_output(arm_outputs(output_values), "FUNCTION_APP_NAM")
    assert result.returncode == 1
    assert result.stdout == ""  # never an empty value that a `$(out ...)` would swallow
    assert "no output named FUNCTION_APP_NAM" in result.stderr
    assert arm_case("FUNCTION_APP_NAME") in result.stderr  # lists what there is


def test_input_that_is_not_a_deployment_fails() -> None:
    assert read_output(["not", "outputs"], "X").returncode == 1
    broken = subprocess.run(
        [sys.executable, str(SCRIPT), "X"], input="{", capture_output=True, text=True
    )
    assert broken.returncode == 1 and "not JSON" in broken.stderr


def test_the_guides_step_3_block_reads_arm_cased_outputs(
    tmp_path: Path, output_values: Mapping[str, str]
) -> None:
    """Paste the guide's block into bash, with a fake `az` that answers as ARM does."""
    block = doc_block(DEPLOY_GUIDE, "out() {")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").symlink_to(HERE / "fixtures" / "fake_az.py")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"outputs": arm_outputs(output_values)}))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_AZ_STATE": str(state),
        "FAKE_AZ_LOG": str(tmp_path / "calls.log"),
        "RG": "rg-mailgw-test",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"cd {tmp_path}\nln -s {ROOT / 'scripts'} .\n{block}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    expected = [
        output_values[name]
        for name in re.findall(r"\$\(out (\w+)\)", block)  # FUNC API CLIENT_ID OBJECT_ID STORAGE
    ]
    assert len(expected) >= 5
    assert result.stdout.split() == expected


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_no_guide_queries_an_output_by_its_exact_case(guide: Path) -> None:
    text = guide.read_text()
    assert not re.search(r"--query\s+[\"']?properties\.outputs\.", text), guide.name
    if "$(out " in text:
        assert "scripts/deploy_output.py" in text, guide.name
