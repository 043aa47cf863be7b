"""``pip install .`` (and so ``pipx install .``) gives a ``mailgw`` command that works anywhere.

A fresh virtual environment and a real install of the project with its dependencies, resolved by
pip from the declared metadata (requirements.txt, read by setuptools): an undeclared runtime
dependency fails here, as it did for users (``No module named 'jwt'``). About 25 s with a warm
pip cache; ``--no-compile`` skips byte-compiling msgraph-sdk's thousands of files, nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import DEAD_STORAGE, run_captured

ROOT = Path(__file__).resolve().parents[2]
#: what an sdist of the project holds (pyproject's packages and the files it reads)
PROJECT_FILES = ["pyproject.toml", "requirements.txt", "README.md"]
PROJECT_PACKAGES = ["mailgw", "devhost"]


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = run_captured(command, cwd=cwd, env=env, timeout=600)
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_pip_install_gives_a_working_mailgw_command(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: pip's in-tree build must not write into the checkout
    source.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, source / name)
    for package in PROJECT_PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", source, cwd=tmp_path)  # fmt: skip

    elsewhere = tmp_path / "elsewhere"  # no checkout, no local.settings.json
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    mailgw = venv / "bin" / "mailgw"
    assert "send" in run(mailgw, "--help", cwd=elsewhere, env=env)
    sent = run(mailgw, "send", "--dry-run", "--from", "noreply@contoso.com",
               "--to", "a@example.com", "--text", "hi", cwd=elsewhere, env=env)  # fmt: skip
    assert json.loads(sent)["to"] == ["a@example.com"]

    # The operator side imports the whole core (storage SDKs, pydantic, PyJWT via the settings'
    # checks): a diagnosis runs to its findings instead of crashing on an import.
    checked = subprocess.run(
        [mailgw, "doctor"],
        cwd=elsewhere,
        env={
            **env,
            "AzureWebJobsStorage": DEAD_STORAGE,
            "MAILGW_TRANSPORT": "outbox",
            "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
            "MAILGW_ALLOWED_SENDERS": "noreply@contoso.com",
            "MAILGW_AUTH": "entra",
            "MAILGW_API_TENANT_ID": "00000000-0000-0000-0000-000000000001",
            "MAILGW_API_AUDIENCE": "api://mailgw",
            "MAILGW_API_AUTHORITY": "http://127.0.0.1:9",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in checked.stderr, checked.stderr
    assert "ok   transport outbox" in checked.stdout
    assert "FAIL api tokens" in checked.stdout  # PyJWT loaded; the keys are unreachable
    assert checked.returncode == 1
