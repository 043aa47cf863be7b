"""What reaches Application Insights: telemetry.configure() with a connection string, in a process
of its own, exporting through azure-monitor-opentelemetry to an ingestion stand-in on 127.0.0.1.

It holds the claims the workbook's and the alerts' queries rest on (docs/telemetry.md, "How it
looks in Application Insights"): CONSUMER spans are requests and PRODUCER/CLIENT spans
dependencies, named as the contract says, attributes in customDimensions as strings, metrics by
name, the MAILGW_FAILED line in traces, every trace kept, and no recipient anywhere. The process
refuses any connection that is not to 127.0.0.1 and reports each attempt.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from support import QuietHandler, run_captured, serve_http

ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 40  # more than the distro's default rate limit (5 traces a second) would keep


class Ingestion(QuietHandler):
    """Application Insights' ingestion (``/v2.1/track``) and live metrics, played on loopback."""

    items: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        accepted = 0
        if self.path.startswith("/v2.1/track"):
            text = body.decode()
            batch = (
                json.loads(text)
                if text.startswith("[")
                else [json.loads(line) for line in text.splitlines() if line.strip()]
            )
            self.items.extend(batch)
            accepted = len(batch)
        answer = json.dumps({"itemsReceived": accepted, "itemsAccepted": accepted, "errors": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-ms-qps-subscribed", "false")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())


def of_type(kind: str) -> list[dict[str, Any]]:
    return [i["data"]["baseData"] for i in Ingestion.items if i["data"]["baseType"] == kind]


def test_application_insights_receives_the_contract(tmp_path: Path) -> None:
    handler: type[BaseHTTPRequestHandler] = Ingestion
    with serve_http(handler) as url:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),  # the checkout's mailgw
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                f"IngestionEndpoint={url}/;LiveEndpoint={url}/"
            ),
            # No calls home: no statsbeat, no control plane, no VM metadata lookup.
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
            "WEBSITE_SITE_NAME": "func-mailgw-test",
        }
        emitter = Path(__file__).with_name("emit_for_application_insights.py")
        result = run_captured([sys.executable, emitter, str(ATTEMPTS)], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    configured, refused = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert configured == ["Application Insights"]
    assert refused == []

    requests = of_type("RequestData")
    dependencies = of_type("RemoteDependencyData")
    delivers = [r for r in requests if r["name"] == "mailgw.deliver"]
    assert len(delivers) == ATTEMPTS  # every trace kept
    assert delivers[0]["properties"]["mailgw.outcome"] == "sent"
    assert delivers[0]["properties"]["mailgw.transport"] == "graph"
    assert delivers[0]["properties"]["mailgw.attempt"] == "1"  # customDimensions are strings
    assert float(delivers[0]["properties"]["mailgw.delivery.latency"]) == 1.5
    assert {r["name"] for r in requests} >= {"POST /api/v1/messages", "mailgw.record_failure"}
    server = next(r for r in requests if r["name"] == "POST /api/v1/messages")
    assert server["responseCode"] == "202"
    assert server["properties"]["mailgw.message_id"] == "m-0"
    failure = next(r for r in requests if r["name"] == "mailgw.record_failure")
    assert failure["properties"]["mailgw.error_code"] == "graph/ErrorSendAsDenied"
    assert {d["name"] for d in dependencies} >= {"mailgw.enqueue", "mailgw.transport.send"}
    enqueue = next(d for d in dependencies if d["name"] == "mailgw.enqueue")
    assert enqueue["properties"]["mailgw.queue"] == "mail-outbound"
    assert "messaging.destination.name" not in enqueue["properties"]  # the exporter's own field

    metrics: dict[str, Any] = {}
    for item in of_type("MetricData"):
        for point in item["metrics"]:
            metrics.setdefault(point["name"], []).append((item.get("properties", {}), point))
    assert metrics["mailgw.messages.sent"][0][0] == {
        "transport": "graph",
        "sender": "noreply@contoso.com",
    }
    assert sum(p["value"] for _, p in metrics["mailgw.messages.sent"]) == ATTEMPTS
    failed = metrics["mailgw.messages.failed"][0][0]
    assert failed == {
        "code": "graph/ErrorSendAsDenied",
        "transport": "graph",
        "sender": "noreply@contoso.com",
    }
    assert metrics["mailgw.queue.depth"][0] == (
        {"queue": "mail-outbound-poison-poison"},
        {
            **metrics["mailgw.queue.depth"][0][1],
            "value": 2,
        },
    )
    latency = metrics["mailgw.delivery.latency"][0][1]
    assert latency["count"] == ATTEMPTS and latency["value"] == 1.5 * ATTEMPTS

    messages = [m["message"] for m in of_type("MessageData")]
    assert any(m.startswith("MAILGW_FAILED {") for m in messages)
    roles = {i["tags"].get("ai.cloud.role") for i in Ingestion.items}
    assert roles == {"func-mailgw-test"}
    assert "example.com" not in json.dumps(Ingestion.items)
