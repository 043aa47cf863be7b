"""The azd hooks of azure.yaml, run for real: with a fake `azd` (and `az`, `bicep`) on PATH, and a
stand-in for Storage's data plane that answers 403 until the role assignments have "arrived".

- preprovision (scripts/azd-preprovision.sh) sets AZURE_PRINCIPAL_TYPE from `az account show` and
  stops `azd up` when azd is older than 1.17.1 (older
  azd ships a Bicep without fail() and the Graph extension, and says AZURE_PRINCIPAL_TYPE=User
  even for a service principal) or when AZD_BICEP_TOOL_PATH names a Bicep older than 0.36.1;
- postprovision (scripts/azd-postprovision.sh) waits, bounded and backing off, until the
  deployer's data roles answer on the payload container, the queue and the table.

azd runs `shell: sh` hooks with bash; each hook also runs under dash, so it stays POSIX. The
PowerShell twins cannot run here (no pwsh): they are checked to state the same minimums and read
the same settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from infra_support import HERE, ROOT, load_yaml

from support import QuietHandler, serve_http

PRE = ROOT / "scripts" / "azd-preprovision.sh"
POST = ROOT / "scripts" / "azd-postprovision.sh"
SHELLS = ["bash", "sh"]  # what azd runs `shell: sh` hooks with, and a strict POSIX shell (dash)
STORAGE_SCOPE = "https://storage.azure.com/.default"


@dataclass
class Tools:
    """A bin directory with fake azd/az/bicep, and the environment a hook runs in."""

    tmp_path: Path
    azd_version: str = "1.17.1"
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bin = self.tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "azd").symlink_to(HERE / "fixtures" / "fake_azd.py")
        self.log = self.tmp_path / "azd.log"
        self.log.touch()

    def script(self, name: str, output: str) -> Path:
        """A fake executable that prints ``output`` (az version, bicep --version)."""
        path = self.bin / name
        path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
        path.chmod(0o755)
        return path

    def run(self, shell: str, hook: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        # Only the fakes and the basic tools: never a real azd or az from the machine.
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.tmp_path),
            "FAKE_AZD_LOG": str(self.log),
            "FAKE_AZD_VERSION": self.azd_version,
            **self.env,
            **extra,
        }
        return subprocess.run(
            [shell, str(hook)], env=env, capture_output=True, text=True, timeout=120
        )

    def azd_calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def tools(tmp_path: Path) -> Tools:
    return Tools(tmp_path)


# -- preprovision -----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("version", ["1.17.1", "1.17.10", "1.18.0-beta.1", "2.0.0"])
def test_preprovision_accepts_a_recent_azd(tools: Tools, shell: str, version: str) -> None:
    tools.azd_version = version
    result = tools.run(shell, PRE)
    assert result.returncode == 0, result.stderr
    assert f"azd {version}" in result.stdout
    assert ["version"] in tools.azd_calls()


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("version", ["1.17.0", "1.11.1", "1.9.6", "0.9.0-beta.3"])
def test_preprovision_stops_an_old_azd_and_says_why(tools: Tools, shell: str, version: str) -> None:
    tools.azd_version = version
    result = tools.run(shell, PRE)
    assert result.returncode == 1
    message = result.stderr
    assert f"azd {version} is too old" in message and "1.17.1 or later" in message
    assert "UnmatchedPrincipalType" in message and "AZURE_PRINCIPAL_TYPE" in message
    assert "fail()" in message and "aka.ms/azd-install" in message


@pytest.mark.parametrize("shell", SHELLS)
def test_preprovision_checks_a_bicep_of_your_own(tools: Tools, shell: str) -> None:
    old = tools.script("bicep-old", "Bicep CLI version 0.35.1 (a0a0a0a0a0)")
    result = tools.run(shell, PRE, AZD_BICEP_TOOL_PATH=str(old))
    assert result.returncode == 1
    assert "Bicep 0.35.1 (AZD_BICEP_TOOL_PATH) is too old" in result.stderr
    assert "0.36.1 or later" in result.stderr
    new = tools.script("bicep-new", "Bicep CLI version 0.36.1 (a727ed087a)")
    result = tools.run(shell, PRE, AZD_BICEP_TOOL_PATH=str(new))
    assert result.returncode == 0, result.stderr
    assert "Bicep 0.36.1" in result.stdout
    broken = tools.run(shell, PRE, AZD_BICEP_TOOL_PATH=str(tools.tmp_path / "missing"))
    assert broken.returncode == 1 and "cannot run AZD_BICEP_TOOL_PATH" in broken.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_preprovision_warns_about_an_old_azure_cli_only(tools: Tools, shell: str) -> None:
    tools.script("az", "2.59.0")
    result = tools.run(shell, PRE)
    assert result.returncode == 0, result.stderr
    assert "warning: Azure CLI 2.59.0" in result.stderr and "2.60.0 or later" in result.stderr
    tools.script("az", "2.60.0")
    assert "warning" not in tools.run(shell, PRE).stderr


def fake_az_signed_in_as(tools: Tools, user_type: str) -> None:
    """An ``az`` that is recent and says who is signed in (``az account show``), as az does."""
    path = tools.bin / "az"
    path.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  'account show --query user.type --output tsv') printf '%s\\n' '{user_type}' ;;\n"
        "  *) printf '%s\\n' '2.70.0' ;;\n"
        "esac\n"
    )
    path.chmod(0o755)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("signed_in", "principal_type"), [("servicePrincipal", "ServicePrincipal"), ("user", "User")]
)
def test_preprovision_sets_the_principal_type_of_who_is_signed_in(
    tools: Tools, shell: str, signed_in: str, principal_type: str
) -> None:
    fake_az_signed_in_as(tools, signed_in)
    result = tools.run(shell, PRE)
    assert result.returncode == 0, result.stderr
    assert ["env", "set", "AZURE_PRINCIPAL_TYPE", principal_type] in tools.azd_calls()
    assert f"AZURE_PRINCIPAL_TYPE={principal_type}" in result.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_preprovision_keeps_a_principal_type_already_set(tools: Tools, shell: str) -> None:
    fake_az_signed_in_as(tools, "user")
    result = tools.run(shell, PRE, AZURE_PRINCIPAL_TYPE="ServicePrincipal")
    assert result.returncode == 0, result.stderr
    assert not [call for call in tools.azd_calls() if call[:2] == ["env", "set"]]
    assert "AZURE_PRINCIPAL_TYPE=ServicePrincipal" in result.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_preprovision_without_a_signed_in_az_says_how_to_set_the_type(
    tools: Tools, shell: str
) -> None:
    result = tools.run(shell, PRE)  # no az at all
    assert result.returncode == 0, result.stderr
    assert not [call for call in tools.azd_calls() if call[:2] == ["env", "set"]]
    assert "azd env set AZURE_PRINCIPAL_TYPE ServicePrincipal" in result.stderr


def test_preprovision_without_azd_fails_clearly(tools: Tools) -> None:
    (tools.bin / "azd").unlink()
    result = tools.run("sh", PRE)
    assert result.returncode == 1 and "cannot read the version of azd" in result.stderr


# -- postprovision ----------------------------------------------------------------------------


@dataclass
class StorageStandIn:
    """Blob, queue and table endpoints that answer 403 AuthorizationPermissionMismatch to the
    first ``denials[service]`` reads, as Storage does until a new role assignment arrives."""

    denials: dict[str, int]
    seen: list[tuple[str, str, str, str]] = field(default_factory=list)  # service, path, auth, ver
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, headers: Message[str, str]) -> int:
        service = path.split("/")[1]
        with self.lock:
            self.seen.append(
                (service, path, headers.get("Authorization", ""), headers.get("x-ms-version", ""))
            )
            if self.denials.get(service, 0) > 0:
                self.denials[service] -= 1
                return 403
        return 200

    def reads(self, service: str) -> list[tuple[str, str, str, str]]:
        return [entry for entry in self.seen if entry[0] == service]


@pytest.fixture
def storage() -> Iterator[tuple[StorageStandIn, str]]:
    standin = StorageStandIn(denials={})

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            status = standin.answer(self.path, self.headers)
            body = b"" if status == 200 else b"<Error><Code>AuthorizationPermissionMismatch</Code>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_http(Handler) as base:
        yield standin, base


def outputs(base: str) -> dict[str, str]:
    """The azd environment after provisioning: main.bicep's outputs and azd's own principal."""
    return {
        "OPERATOR_PRINCIPAL_ID": "0f0f0f0f-0000-0000-0000-000000000001",
        "STORAGE_BLOB_ENDPOINT": f"{base}/blob/",
        "STORAGE_QUEUE_ENDPOINT": f"{base}/queue/",
        "STORAGE_TABLE_ENDPOINT": f"{base}/table/",
        "MAILGW_PAYLOAD_CONTAINER": "mail-payloads",
        "MAILGW_QUEUE": "mail-outbound",
        "MAILGW_STATE_TABLE": "mailgwstate",
        "MAILGW_ROLE_WAIT_FIRST_DELAY": "0",
    }


@pytest.mark.parametrize("shell", SHELLS)
def test_postprovision_waits_until_every_role_answers(
    tools: Tools, storage: tuple[StorageStandIn, str], shell: str
) -> None:
    standin, base = storage
    standin.denials = {"blob": 3, "queue": 1, "table": 2}
    result = tools.run(shell, POST, **outputs(base))
    assert result.returncode == 0, result.stderr
    assert "storage roles are in place" in result.stderr
    # it tried again until each service had let it in, and stopped there
    assert [len(standin.reads(s)) for s in ("blob", "queue", "table")] == [4, 4, 4]
    assert result.stderr.count("waiting for the role assignments") == 3
    assert "payload container 403, queue 403, table 403" in result.stderr
    # the reads that prove the data roles, with azd's token for Storage
    assert ["auth", "token", "--scope", STORAGE_SCOPE, "--output", "json"] in tools.azd_calls()
    paths = {entry[1] for entry in standin.seen}
    assert paths == {
        "/blob/mail-payloads?restype=container&comp=list&maxresults=1",
        "/queue/mail-outbound/messages?peekonly=true&numofmessages=1",
        "/table/mailgwstate()?$top=1",
    }
    assert {entry[2] for entry in standin.seen} == {f"Bearer fake-token-for:{STORAGE_SCOPE}"}
    assert {entry[3] for entry in standin.seen} == {"2019-02-02"}


@pytest.mark.parametrize("shell", SHELLS)
def test_postprovision_gives_up_when_the_bound_is_reached(
    tools: Tools, storage: tuple[StorageStandIn, str], shell: str
) -> None:
    standin, base = storage
    standin.denials = {"blob": 1000}
    result = tools.run(shell, POST, **outputs(base), MAILGW_ROLE_WAIT_SECONDS="3")
    assert result.returncode == 1
    # backing off: delays 0, 1, 2 (3 s in all), then one last try, then the verdict
    delays = re.findall(r"next try in (\d+)s", result.stderr)
    assert delays == ["0", "1", "2"]
    assert len(standin.reads("blob")) == 4
    verdict = result.stderr.splitlines()[-4:]
    assert (
        "have not reached Storage after 3s (payload container 403, queue 200, table 200)"
        in (verdict[0])
    )
    assert "azd deploy" in result.stderr and "az role assignment list" in result.stderr


def test_postprovision_backoff_is_capped_at_a_minute() -> None:
    """The schedule the bound of 600 s produces: doubling from 5 s, then a try a minute."""
    text = POST.read_text()
    assert "timeout=${MAILGW_ROLE_WAIT_SECONDS:-600}" in text
    assert "delay=${MAILGW_ROLE_WAIT_FIRST_DELAY:-5}" in text
    assert '[ "$delay" -le 60 ] || delay=60' in text


def test_postprovision_reports_an_unreachable_storage(tools: Tools) -> None:
    env = outputs("http://127.0.0.1:9")  # discard port: nothing listens
    result = tools.run("sh", POST, **env, MAILGW_ROLE_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert "payload container 000, queue 000, table 000" in result.stderr


def test_postprovision_needs_azd_to_be_signed_in(
    tools: Tools, storage: tuple[StorageStandIn, str]
) -> None:
    standin, base = storage
    result = tools.run("sh", POST, **outputs(base), FAKE_AZD_NO_LOGIN="1")
    assert result.returncode == 1 and "azd auth login" in result.stderr
    assert standin.seen == []


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"OPERATOR_PRINCIPAL_ID": ""}, "no operator was granted"),
        ({"MAILGW_ROLE_WAIT_SECONDS": "0"}, "not waiting"),
    ],
)
def test_postprovision_can_be_told_not_to_wait(
    tools: Tools, storage: tuple[StorageStandIn, str], setting: dict[str, str], reason: str
) -> None:
    standin, base = storage
    result = tools.run("sh", POST, **{**outputs(base), **setting})
    assert result.returncode == 0 and reason in result.stderr
    assert standin.seen == [] and tools.azd_calls() == []


def test_postprovision_reads_the_outputs_main_bicep_declares(trees: Mapping[str, Any]) -> None:
    declared = set(trees["main.bicep"]["outputs"])
    for hook in (POST, POST.with_suffix(".ps1")):
        used = set(re.findall(r"(?:STORAGE|MAILGW|OPERATOR)_[A-Z_]+", hook.read_text()))
        settings = {name for name in used if name.startswith("MAILGW_ROLE_WAIT")}
        assert used - settings <= declared, (hook.name, (used - settings) - declared)
        assert {
            "STORAGE_BLOB_ENDPOINT",
            "MAILGW_PAYLOAD_CONTAINER",
            "OPERATOR_PRINCIPAL_ID",
        } <= used
        # azd keeps AZURE_PRINCIPAL_ID out of the environment a hook sees: never read it
        assert not re.search(r"\$\{?(env:)?AZURE_PRINCIPAL_ID", hook.read_text()), hook.name


# -- wiring and twins -------------------------------------------------------------------------


def test_azure_yaml_runs_the_hooks_on_every_platform() -> None:
    hooks = load_yaml(ROOT / "azure.yaml")["hooks"]
    assert set(hooks) == {"preprovision", "postprovision"}
    for event, script in (("preprovision", PRE), ("postprovision", POST)):
        posix, windows = hooks[event]["posix"], hooks[event]["windows"]
        assert posix == {"shell": "sh", "run": script.relative_to(ROOT).as_posix()}
        twin = script.with_suffix(".ps1")
        assert windows == {"shell": "pwsh", "run": twin.relative_to(ROOT).as_posix()}
        assert twin.exists()


def minimums(path: Path) -> dict[str, str]:
    text = path.read_text()
    return dict(re.findall(r"^\$?(MIN_[A-Z]+) ?= ?'?([0-9.]+)'?$", text, re.MULTILINE))


def test_the_twins_and_the_guide_state_the_same_minimums() -> None:
    stated = minimums(PRE)
    assert stated == {"MIN_AZD": "1.17.1", "MIN_BICEP": "0.36.1", "MIN_AZ": "2.60.0"}
    assert minimums(PRE.with_suffix(".ps1")) == stated
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert f"azd {stated['MIN_AZD']}" in guide
    assert f"Bicep {stated['MIN_BICEP']}" in guide
    assert f"Azure CLI {stated['MIN_AZ'].removesuffix('.0')}" in guide


def test_the_postprovision_twin_makes_the_same_reads() -> None:
    sh, ps1 = POST.read_text(), POST.with_suffix(".ps1").read_text()
    for text in (
        "?restype=container&comp=list&maxresults=1",
        "/messages?peekonly=true&numofmessages=1",
        "2019-02-02",
        STORAGE_SCOPE,
        "MAILGW_ROLE_WAIT_SECONDS",
        "MAILGW_ROLE_WAIT_FIRST_DELAY",
        "payload container 200, queue 200, table 200",
    ):
        assert text in sh and text in ps1, text
    assert "()?\\$top=1" in sh and "()?`$top=1" in ps1  # each shell's escape of $top


def test_hooks_are_executable_posix_scripts() -> None:
    for hook in (PRE, POST):
        assert os.access(hook, os.X_OK), hook.name
        assert hook.read_text().startswith("#!/bin/sh\n"), hook.name
