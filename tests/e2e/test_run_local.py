"""``make run`` (scripts/run_local.py) as a newcomer meets it, on a copy of the checkout: what its
banner says, and ``mailgw doctor --running`` checking what it runs rather than the files.

Run on the test session's Azurite (``AzureWebJobsStorage`` in the environment, so run_local
starts none) and a free port, so it never meets a developer's own ``make run``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from event_support import kinds
from make_run_support import clean_environment, copy_checkout, running

from support import QuietHandler, free_port, run_mailgw, sample_request, serve_http, wait_until


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone's files: local.settings.json is made from the sample (outbox transport)."""
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


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
    with running(checkout, env, timeout=120) as output:
        yield port, output


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


class OtlpReceiver(QuietHandler):
    """An OTLP/HTTP collector stand-in: keeps what it is sent, by path (/v1/traces, /v1/metrics)."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.received.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


def otlp_spans() -> list[tuple[str, dict[str, Any]]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    found = []
    for path, body in list(OtlpReceiver.received):
        if path == "/v1/traces":
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        values = {
                            a.key: a.value.string_value or a.value.int_value
                            for a in span.attributes
                        }
                        found.append((span.name, values))
    return found


def otlp_metric_names() -> set[str]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    names = set()
    for path, body in list(OtlpReceiver.received):
        if path == "/v1/metrics":
            for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                for scope in resource.scope_metrics:
                    names |= {metric.name for metric in scope.metrics}
    return names


def test_make_run_says_where_telemetry_goes_and_sends_it_there(
    azurite: Any, checkout: Path, tmp_path: Path
) -> None:
    """MAILGW_TELEMETRY=console and an OTLP endpoint: the banner names both; a message's spans
    reach the collector (OTLP over HTTP) and the console, one compact line each."""
    with serve_http(OtlpReceiver) as collector:
        port = free_port()
        env = clean_environment(
            AzureWebJobsStorage=azurite.connection_string,
            MAILGW_LOCAL_PORT=str(port),
            MAILGW_QUEUE=f"run-{uuid.uuid4().hex[:12]}",
            MAILGW_OUTBOX_DIR=str(tmp_path / "outbox"),
            MAILGW_TELEMETRY="console",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_METRIC_EXPORT_INTERVAL="500",
        )
        log = tmp_path / "make-run.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "scripts/run_local.py"],
                cwd=checkout,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: "Stop: Ctrl-C" in log.read_text(), timeout=120, what="the banner")
            assert f"Telemetry: to OTLP {collector} and the console" in log.read_text()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/messages",
                data=json.dumps(sample_request()).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                message_id = json.loads(response.read())["id"]

            def delivered() -> bool:
                return any(
                    name == "mailgw.deliver" and values.get("mailgw.outcome") == "sent"
                    for name, values in otlp_spans()
                )

            wait_until(delivered, timeout=60, what="the attempt's span at the collector")
            names = {
                name
                for name, values in otlp_spans()
                if values.get("mailgw.message_id") == message_id
            }
            assert {"POST /api/v1/messages", "mailgw.enqueue", "mailgw.deliver"} <= names
            wait_until(
                lambda: "mailgw.messages.sent" in otlp_metric_names(), what="the sent counter"
            )
            console = log.read_text()
            assert re.search(
                rf"telemetry [0-9a-f]{{8}} mailgw\.deliver consumer [0-9.]+ms "
                rf"message_id={message_id} transport=outbox attempt=1 .*outcome=sent",
                console,
            ), console
            assert "example.com" not in console.split("Stop: Ctrl-C")[1]
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


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
