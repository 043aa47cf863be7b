"""``make run`` with the SMTP intake, end to end as a newcomer meets it: the banner's swaks
command, pasted as is, sends a mail through 127.0.0.1:2587 (here: free ports), the dev host's
delivery writes it to the outbox, and ``GET /api/v1/messages/{id}`` says ``sent``.

Run on a copy of the checkout and the test session's Azurite, like tests/e2e/test_run_local.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from support import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = [
    "function_app.py",
    "host.json",
    "local.settings.sample.json",
    "functions",
    "mailgw",
    "devhost",
    "scripts/run_local.py",
    "tests/standins",
    "tests/support.py",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def make_run(
    azurite: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int, str]]:
    checkout = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT:
        source = ROOT / name
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    env.update(
        PYTHONUNBUFFERED="1",
        AzureWebJobsStorage=azurite.connection_string,
        MAILGW_LOCAL_PORT=str(port),
        MAILGW_LOCAL_SMTP_PORT=str(free_port()),
        MAILGW_LOCAL_SMTPS_PORT=str(free_port()),
        MAILGW_QUEUE=f"run-{uuid.uuid4().hex[:12]}",
        MAILGW_SMTP_INTAKE_CLIENTS_TABLE=f"clients{uuid.uuid4().hex[:12]}",
    )
    process = subprocess.Popen(
        [sys.executable, "scripts/run_local.py"],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output: list[str] = []
    stdout: IO[str] | None = process.stdout
    assert stdout is not None

    def banner_printed() -> bool:
        line = stdout.readline()
        output.append(line)
        return "Stop: Ctrl-C" in line or process.poll() is not None

    wait_until(banner_printed, timeout=180, interval=0, what="make run's banner")
    assert process.poll() is None, "".join(output)
    yield checkout, port, "".join(output)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def pasted_swaks(banner: str) -> list[str]:
    """The swaks command exactly as the banner prints it (continuation lines joined)."""
    start = banner.index("  swaks ")
    lines = []
    for line in banner[start:].splitlines():
        lines.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(" ".join(lines))


def test_the_banner_names_both_ports_and_the_certificate(make_run: tuple[Path, int, str]) -> None:
    checkout, _, banner = make_run
    assert re.search(r"127\.0\.0\.1:\d+ \(STARTTLS required before AUTH\)", banner)
    assert re.search(r"127\.0\.0\.1:\d+ \(implicit TLS\)", banner)
    cert = re.search(r"certificate \(self-signed, this machine only\): (\S+)", banner)
    assert cert and Path(cert.group(1)).is_file()
    assert Path(cert.group(1)).is_relative_to(checkout)
    assert "mailgw smtp-clients add NAME --allow-sender" in banner


def test_the_pasted_swaks_command_sends_a_mail_that_ends_sent(
    make_run: tuple[Path, int, str],
) -> None:
    checkout, port, banner = make_run
    command = pasted_swaks(banner)
    assert command[0] == "swaks"
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})", result.stdout)
    assert found, result.stdout
    message_id = found.group(1)

    def status() -> Any:
        url = f"http://127.0.0.1:{port}/api/v1/messages/{message_id}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.loads(response.read())
        except OSError:
            return None
        return answer if answer.get("status") == "sent" else None

    answer = wait_until(status, timeout=60, what=f"message {message_id} to be sent")
    assert answer["id"] == message_id
    eml = checkout / "outbox" / f"{message_id}.eml"
    assert b"Subject: Hello from swaks" in eml.read_bytes()
