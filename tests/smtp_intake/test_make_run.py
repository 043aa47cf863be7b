"""``make run`` with the SMTP intake, end to end as a newcomer meets it: the banner's swaks
command, pasted as is, sends a mail through 127.0.0.1:2587 (here: free ports), the dev host's
delivery writes it to the outbox, and ``GET /api/v1/messages/{id}`` says ``sent``.

Run on a copy of the checkout and the test session's Azurite, like tests/e2e/test_run_local.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from make_run_support import clean_environment, copy_checkout, running

from support import free_port, wait_until


@pytest.fixture(scope="module")
def make_run(
    azurite: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int, str]]:
    checkout = copy_checkout(tmp_path_factory.mktemp("checkout"))
    port = free_port()
    env = clean_environment(
        AzureWebJobsStorage=azurite.connection_string,
        MAILGW_LOCAL_PORT=str(port),
        MAILGW_LOCAL_SMTP_PORT=str(free_port()),
        MAILGW_LOCAL_SMTPS_PORT=str(free_port()),
        MAILGW_QUEUE=f"run-{uuid.uuid4().hex[:12]}",
        MAILGW_SMTP_INTAKE_CLIENTS_TABLE=f"clients{uuid.uuid4().hex[:12]}",
    )
    with running(checkout, env, timeout=180) as output:
        yield checkout, port, "".join(output)


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
