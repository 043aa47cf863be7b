"""One message's trace through the real app: its HTTP request (continuing the caller's
traceparent, as the dev host passes it on like the Functions host), the enqueue, the delivery
attempt and the transport's call, with the metrics docs/telemetry.md names, and never an address,
a subject or a body in any of it."""

from __future__ import annotations

import json
import secrets

from opentelemetry.trace import SpanKind, StatusCode
from telemetry_support import Captured, attributes

from support import sample_request

SUBJECT = "Quarterly numbers 7f3a"
BODY = "the secret body text 91c2"


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def test_an_http_submit_is_one_trace_to_sent(app, captured: Captured) -> None:  # type: ignore[no-untyped-def]
    header, trace_id, caller_span = traceparent()
    request = sample_request(subject=SUBJECT, text=BODY, html=f"<p>{BODY}</p>")
    status, body = await app.post("/api/v1/messages", request, {"traceparent": header})
    assert status == 202
    message_id = body["id"]
    await app.services.intake.drain()
    assert await app.deliver_next()
    assert (app.outbox / f"{message_id}.eml").exists()

    server = captured.span("POST /api/v1/messages")
    enqueue = captured.span("mailgw.enqueue")
    deliver = captured.span("mailgw.deliver")
    send = captured.span("mailgw.transport.send")
    # One trace, continuing the caller's: request → enqueue → attempt → transport.
    for span in (server, enqueue, deliver, send):
        assert format(span.context.trace_id, "032x") == trace_id
    assert server.parent is not None and format(server.parent.span_id, "016x") == caller_span
    assert enqueue.parent is not None and enqueue.parent.span_id == server.context.span_id
    assert deliver.parent is not None and deliver.parent.span_id == enqueue.context.span_id
    assert send.parent is not None and send.parent.span_id == deliver.context.span_id
    assert (server.kind, enqueue.kind, deliver.kind, send.kind) == (
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
    )

    assert attributes(server)["mailgw.message_id"] == message_id
    assert attributes(server)["http.response.status_code"] == 202
    assert attributes(enqueue)["mailgw.message_id"] == message_id
    assert attributes(enqueue)["messaging.destination.name"] == app.services.settings.queue
    assert attributes(enqueue)["mailgw.queue"] == app.services.settings.queue
    attempt = attributes(deliver)
    assert attempt["mailgw.message_id"] == message_id
    assert attempt["mailgw.transport"] == "outbox"
    assert attempt["mailgw.attempt"] == 1
    assert attempt["mailgw.outcome"] == "sent"
    assert attempt["mailgw.delivery.latency"] >= 0
    assert "mailgw.error_code" not in attempt
    assert attributes(send) == {
        "mailgw.message_id": message_id,
        "mailgw.transport": "outbox",
        "mailgw.outcome": "sent",
    }

    assert captured.total("mailgw.messages.accepted", source="api") == 1
    assert captured.total("mailgw.messages.accepted", sender="noreply@contoso.com") == 1
    assert captured.total("mailgw.messages.sent", transport="outbox") == 1
    ((latency_attributes, histogram),) = captured.points("mailgw.delivery.latency")
    assert latency_attributes == {"transport": "outbox"}
    assert histogram.count == 1
    assert histogram.sum == attempt["mailgw.delivery.latency"]

    # Nothing of the message itself leaves the process: no recipient, subject or body, and the
    # sender only as the metrics' sender.
    text = captured.everything()
    for secret in ("example.com", SUBJECT, BODY, "Your receipt"):
        assert secret not in text
    assert "@" not in str([(s.name, attributes(s)) for s in captured.spans()])


async def test_without_a_traceparent_the_trace_starts_at_the_request(  # type: ignore[no-untyped-def]
    app, captured: Captured
) -> None:
    status, _ = await app.post("/api/v1/messages", sample_request())
    assert status == 202
    await app.services.intake.drain()
    assert await app.deliver_next()
    trace_ids = {span.context.trace_id for span in captured.spans()}
    assert len(trace_ids) == 1
    assert len(captured.spans()) == 4


async def test_a_refused_request_is_a_request_span_without_a_message(  # type: ignore[no-untyped-def]
    app, captured: Captured
) -> None:
    status, _ = await app.post("/api/v1/messages", sample_request(**{"from": "x@fabrikam.com"}))
    assert status == 403
    server = captured.span("POST /api/v1/messages")
    assert attributes(server)["http.response.status_code"] == 403
    assert "mailgw.message_id" not in attributes(server)
    assert server.status.status_code is not StatusCode.ERROR  # the caller's mistake, not ours
    assert captured.spans("mailgw.enqueue") == []
    assert captured.total("mailgw.messages.accepted") == 0
    assert "fabrikam" not in captured.everything()


async def test_a_failure_is_recorded_in_the_message_trace_with_its_code(  # type: ignore[no-untyped-def]
    app, captured: Captured
) -> None:
    """A producer's message from a sender the policy does not allow: its attempt fails, the poison
    function records it in the same trace, and the failed metric counts it once by code."""
    client = app.services.queue.queue()
    await client.create_queue()
    await client.send_message(json.dumps(sample_request(**{"from": "someone@contoso.com"})))
    assert await app.deliver_next()
    assert await app.record_next_failure()

    deliver = captured.span("mailgw.deliver")
    record = captured.span("mailgw.record_failure")
    assert attributes(deliver)["mailgw.outcome"] == "failed"
    assert attributes(deliver)["mailgw.error_code"] == "mailgw/sender-not-allowed"
    assert deliver.status.status_code is StatusCode.ERROR
    assert record.kind is SpanKind.CONSUMER
    assert attributes(record) == {
        "mailgw.message_id": attributes(deliver)["mailgw.message_id"],
        "mailgw.error_code": "mailgw/sender-not-allowed",
    }
    assert record.context.trace_id == deliver.context.trace_id
    poison_enqueue = [
        s
        for s in captured.spans("mailgw.enqueue")
        if attributes(s)["messaging.destination.name"].endswith("-poison")
    ]
    assert record.parent is not None and record.parent.span_id == poison_enqueue[0].context.span_id
    assert (
        captured.total(
            "mailgw.messages.failed",
            code="mailgw/sender-not-allowed",
            transport="outbox",
            sender="someone@contoso.com",
        )
        == 1
    )


async def test_report_queues_reports_depth_and_age(  # type: ignore[no-untyped-def]
    app, captured: Captured
) -> None:
    """The report_queues timer, run as the dev host runs it: a gauge per queue."""
    for _ in range(3):
        status, _ = await app.post("/api/v1/messages", sample_request())
        assert status == 202
    spec = next(t for t in app.loaded.timers if t.name == "report_queues")
    await app.invoker.invoke(spec, None, reason="test")
    queue = app.services.settings.queue
    depth = {a["queue"]: v for a, v in captured.points("mailgw.queue.depth")}
    assert depth == {queue: 3, f"{queue}-poison": 0, f"{queue}-poison-poison": 0}
    ages = {a["queue"]: v for a, v in captured.points("mailgw.queue.oldest_age")}
    assert set(ages) == set(depth)
    assert ages[queue] >= 0
    assert ages[f"{queue}-poison"] == 0
