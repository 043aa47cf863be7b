"""``make run`` (scripts/run_local.py) as a newcomer meets it, on a copy of the checkout: what its
banner says, and ``mailgw doctor --running`` checking what it runs rather than the files.

Run on the test session's Azurite (``AzureWebJobsStorage`` in the environment, so run_local
starts none) and a free port, so it never meets a developer's own ``make run``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from event_support import kinds
from gateway_host import ROOT, free_port

from support import run_mailgw, wait_until

#: what run_local.py needs of a checkout (it imports the dev host, the core and the stand-ins)
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


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone's files: local.settings.json is made from the sample (outbox transport)."""
    target = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__")
    for name in CHECKOUT:
        source = ROOT / name
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def clean_environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


@pytest.fixture(scope="module")
def graph_run(azurite: Any, checkout: Path) -> Iterator[tuple[int, list[str]]]:
    """``MAILGW_TRANSPORT=graph make run``: stand-ins play Graph and the identity endpoint."""
    port = free_port()
    env = clean_environment(
        AzureWebJobsStorage=azurite.connection_string,
        MAILGW_LOCAL_PORT=str(port),
        MAILGW_TRANSPORT="graph",
        MAILGW_QUEUE=f"run-{uuid.uuid4().hex[:12]}",
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

    wait_until(banner_printed, timeout=120, interval=0, what="make run's banner")
    assert process.poll() is None, "".join(output)
    yield port, output
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def test_the_banner_names_the_mail_viewer_and_the_doctor_for_what_runs(
    graph_run: tuple[int, list[str]],
) -> None:
    port, output = graph_run
    banner = "".join(output)
    assert f"See what was sent (refreshes as mail arrives): http://127.0.0.1:{port}/_dev/mail" in (
        banner
    )
    assert "Check what is running (stand-ins included): .venv/bin/mailgw doctor --running" in banner
    assert "local stand-ins play Microsoft Graph" in banner


def test_doctor_running_checks_the_running_set_up_with_its_stand_ins(
    graph_run: tuple[int, list[str]], checkout: Path, azurite: Any
) -> None:
    port, _ = graph_run
    record = json.loads((checkout / ".mailgw" / "running.json").read_text())
    assert record["settings"]["MAILGW_TRANSPORT"] == "graph"
    assert record["mail_viewer"] == f"http://127.0.0.1:{port}/_dev/mail"
    assert record["settings"]["MAILGW_GRAPH_ENDPOINT"].startswith("http://127.0.0.1:")

    # Plain doctor checks the files (the sample's outbox transport) and says how to check the run.
    plain = run_mailgw(
        "doctor", cwd=checkout, env=clean_environment(AzureWebJobsStorage=azurite.connection_string)
    )
    assert "ok   transport outbox" in plain.stdout
    assert "mailgw doctor --running" in plain.stderr

    # --running: the gateway's own settings, Graph stand-in and identity stand-in included.
    running = run_mailgw("doctor", "--running", cwd=checkout, env=clean_environment())
    assert running.returncode == 0, running.stdout + running.stderr
    assert f"checking the gateway running at http://127.0.0.1:{port}" in running.stderr
    assert "Microsoft Graph is played by a local stand-in at http://127.0.0.1:" in running.stderr
    assert "ok   settings: transport graph" in running.stdout
    assert "ok   transport graph:" in running.stdout


def test_doctor_running_without_a_run_says_so(tmp_path: Path) -> None:
    result = run_mailgw("doctor", "--running", cwd=tmp_path, env=clean_environment())
    assert result.returncode == 2
    assert "no gateway is running from" in result.stderr and "make run" in result.stderr


def test_a_newcomer_sees_accepted_and_sent_with_events_tail(
    graph_run: tuple[int, list[str]], checkout: Path, azurite: Any
) -> None:
    """The issue's newcomer flow: `make run`, send a mail, `mailgw events tail` shows its
    `accepted` and `sent` events (mail-events, the default under make run)."""
    port, output = graph_run
    assert (
        "Its outcome events (accepted, sent, ...), as they arrive: .venv/bin/mailgw events tail"
        in ("".join(output))
    )
    env = clean_environment(AzureWebJobsStorage=azurite.connection_string)
    url = f"http://127.0.0.1:{port}"
    mail = ("--from", "noreply@contoso.com", "--to", "someone@example.com", "--text", "It works.")
    sent = run_mailgw("--url", url, "send", *mail, "--subject", "Hi", cwd=checkout, env=env)
    assert sent.returncode == 0, sent.stderr
    message_id = json.loads(sent.stdout)["id"]

    seen: list[dict[str, Any]] = []

    def accepted_and_sent() -> bool:
        tail = run_mailgw("events", "tail", "--json", "--timeout", "1", cwd=checkout, env=env)
        assert tail.returncode == 0, tail.stderr
        assert "events queue mail-events" in tail.stderr
        seen.extend(json.loads(line) for line in tail.stdout.splitlines())
        return kinds(seen, message_id) == ["accepted", "sent"]

    wait_until(accepted_and_sent, timeout=60, interval=0.5, what="accepted and sent")
    assert {e["source"] for e in seen if e["data"]["id"] == message_id} == {url}

    # Without --json: one line per event, for a person.
    again = run_mailgw("--url", url, "send", *mail, "--subject", "Again", cwd=checkout, env=env)
    second = json.loads(again.stdout)["id"]
    lines: list[str] = []

    def two_lines() -> bool:
        tail = run_mailgw("events", "tail", "--timeout", "1", cwd=checkout, env=env)
        lines.extend(line for line in tail.stdout.splitlines() if second in line)
        return len(lines) >= 2

    wait_until(two_lines, timeout=60, interval=0.5, what="two lines")
    assert "accepted" in lines[0] and "queued" in lines[0]
    assert "sent" in lines[-1] and "attempt 1" in lines[-1]
