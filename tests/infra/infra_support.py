"""Shared helpers of the infrastructure checks (conftest.py holds the fixtures).

The checkers (pycep-parser, checkov, shellcheck, PyYAML) live in .venv-infra, made by
`make install` from requirements-infra.txt, so that checkov's dependencies never meet the app's.
These tests run in the app's venv, call the checkers by subprocess, and read their JSON. Nothing
here reaches the network: tools/run_checkov.py refuses every socket and reports any attempt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bicep_model import Template

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
HERE = Path(__file__).resolve().parent
INFRA_VENV = Path(os.environ.get("MAILGW_INFRA_VENV", ROOT / ".venv-infra"))


def infra_python() -> Path:
    python = INFRA_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"{python} is missing: the infrastructure checkers live in their own venv. "
            "Run `make install` (or `make infra-check`)."
        )
    return python


def run_infra_tool(
    *args: str, timeout: float = 300, extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a program of .venv-infra (a script path, or ``-m module``) from the repository root."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["LOG_LEVEL"] = "WARNING"  # checkov's logger
    env.update(extra_env or {})
    return subprocess.run(
        [str(infra_python()), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_yaml(path: Path) -> Any:
    """YAML through .venv-infra's PyYAML (the app's venv has none)."""
    program = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    result = run_infra_tool("-c", program, str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@dataclass(frozen=True)
class CheckovRun:
    reports: list[dict[str, Any]]
    stderr: str
    returncode: int

    def report(self, check_type: str) -> dict[str, Any]:
        matching = [r for r in self.reports if r.get("check_type") == check_type]
        assert matching, f"checkov produced no {check_type} report: {self.stderr[-2000:]}"
        return matching[0]

    @property
    def network_attempts(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("NETWORK-ATTEMPT")]


def run_checkov(*args: str) -> CheckovRun:
    """checkov with the network guard, and a cache of its own so that nothing cached by an earlier
    run (on a developer's machine) can hide a network attempt a fresh CI machine would make."""
    with tempfile.TemporaryDirectory(prefix="checkov-cache-") as cache:
        result = run_infra_tool(
            str(HERE / "tools" / "run_checkov.py"),
            *args,
            "--output",
            "json",
            "--compact",
            "--skip-download",
            "--soft-fail",
            extra_env={"XDG_CACHE_HOME": cache, "CKV_CACHE_DIR": cache},
        )
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {result.returncode}):\n{result.stderr[-4000:]}")
    reports = data if isinstance(data, list) else [data]
    return CheckovRun(reports, result.stderr, result.returncode)


def module_call(tree: Mapping[str, Any], symbol: str) -> tuple[str, Any, Mapping[str, Any]]:
    """(path, condition or None, params) of a ``module`` declaration, conditional or not."""
    module = tree["modules"][symbol]
    config = module["config"]
    condition = None
    if "condition" in config and "params" not in config:
        condition, config = config["condition"], config["config"]
    return module["detail"]["path"], condition, config.get("params", {})


def module_template(
    trees: Mapping[str, Mapping[str, Any]], parent: Template, symbol: str
) -> Template:
    """The module's template, with the parameters the parent passes (evaluated in the parent)."""
    path, _, params = module_call(parent.tree, symbol)
    values = {name: parent.eval(value) for name, value in params.items()}
    return Template(trees[path], values, directory=(INFRA / path).parent)


def fenced_blocks(markdown: str, language: str = "bash") -> list[str]:
    """The bodies of the markdown's fenced code blocks in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)


def doc_block(path: Path, containing: str, language: str = "bash") -> str:
    """The one fenced block of a guide that contains ``containing``: what a reader would paste."""
    blocks = [b for b in fenced_blocks(path.read_text(), language) if containing in b]
    assert len(blocks) == 1, f"{path.name}: {len(blocks)} {language} blocks contain {containing!r}"
    return blocks[0]
