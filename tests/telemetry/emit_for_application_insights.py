"""Run by test_application_insights.py in a process of its own: telemetry.configure() with the
connection string of the environment, then one of each kind of span and metric, flushed. Prints
the destinations, then every connection it refused (only 127.0.0.1 is allowed).

    python emit_for_application_insights.py ATTEMPTS
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

refused: list[str] = []
_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> None:
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        refused.append(str(address))
        raise OSError("the test allows only 127.0.0.1")
    _connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign,assignment]

from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry._logs import get_logger_provider  # noqa: E402

from mailgw import telemetry  # noqa: E402
from mailgw.delivery import Outcome  # noqa: E402
from mailgw.models import Envelope, ErrorInfo, MessageStatus  # noqa: E402
from mailgw.state.machine import new_record  # noqa: E402

REQUEST = {"from": "noreply@contoso.com", "to": ["a@example.com"], "subject": "s", "text": "t"}
SENDER = "noreply@contoso.com"


class Invocation:
    trace_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    trace_state = ""


def envelope(message_id: str) -> Envelope:
    return Envelope(id=message_id, created_at=datetime.now(UTC), request=REQUEST)


def main(attempts: int) -> None:
    print(json.dumps(telemetry.configure()))
    with telemetry.http_request("POST", "/api/v1/messages", Invocation()) as call:
        telemetry.set_message_id("m-0")
        with telemetry.enqueuing(envelope("m-0"), "mail-outbound"):
            telemetry.message_accepted("api", SENDER)
        call.responded(202)
    for n in range(attempts):
        with telemetry.delivering(envelope(f"m-{n}"), "graph") as attempt:
            with telemetry.sending(f"m-{n}", "graph"):
                pass
            telemetry.message_sent("graph", SENDER, 1.5)
            attempt.ended(Outcome("sent", f"m-{n}"))
    error = ErrorInfo(code="graph/ErrorSendAsDenied", message="no", hint="grant Send As")
    record = new_record(
        "m-9",
        MessageStatus.failed,
        now=datetime.now(UTC),
        retention=timedelta(days=1),
        sender=SENDER,
        last_error=error,
    )
    with telemetry.recording_failure(envelope("m-9")):
        telemetry.failure_recorded(record, counted=True, transport="graph")
        event = json.dumps({"messageId": "m-9", "code": error.code})
        logging.getLogger("mailgw.failures").error("MAILGW_FAILED %s", event)
    telemetry.queue_reported("mail-outbound-poison-poison", 2, 30.0)

    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    metrics.get_meter_provider().force_flush()  # type: ignore[attr-defined]
    get_logger_provider().force_flush()  # type: ignore[attr-defined]
    print(json.dumps(refused))


if __name__ == "__main__":
    main(int(sys.argv[1]))
