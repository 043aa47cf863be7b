"""mailgw/telemetry.py on its own: where telemetry goes for which settings, what "off" costs (no
copy, no span, nothing but a check), and the console's compact lines."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from telemetry_support import capture_telemetry

from mailgw import telemetry
from mailgw.delivery import Outcome
from mailgw.models import Envelope
from mailgw.settings import SettingsError
from mailgw.telemetry_console import ConsoleMetricLines, ConsoleSpanLines
from support import sample_request

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def envelope(**fields: object) -> Envelope:
    return Envelope.model_validate(
        {"id": "m-1", "createdAt": datetime.now(UTC), "request": sample_request(), **fields}
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"MAILGW_TELEMETRY": "console"}, ["the console"]),
        (
            {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"},
            ["Application Insights"],
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["OTLP http://127.0.0.1:4318"]),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "MAILGW_TELEMETRY": "console"},
            ["OTLP http://127.0.0.1:4318", "the console"],
        ),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "x", "MAILGW_TELEMETRY": "off"}, []),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": " ", "MAILGW_TELEMETRY": ""}, []),
    ],
)
def test_destinations_follow_the_settings(env: dict[str, str], expected: list[str]) -> None:
    assert telemetry.destinations(env) == expected


def test_an_unknown_mode_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="MAILGW_TELEMETRY"):
        telemetry.destinations({"MAILGW_TELEMETRY": "verbose"})


def test_off_nothing_is_made_and_the_envelope_keeps_the_callers_traceparent() -> None:
    assert not telemetry.enabled()
    original = envelope(traceparent=CALLER)
    with telemetry.enqueuing(original, "q") as traced:
        assert traced is original  # not even a copy
    with telemetry.delivering(original, "outbox") as attempt:
        assert attempt.span is trace.INVALID_SPAN
        assert not attempt.span.is_recording()
        assert attempt.ended(Outcome("sent", "m-1")).action == "sent"
    assert telemetry.delivering(original, "x") is telemetry.sending("m-1", "x")  # one shared no-op
    telemetry.message_sent("outbox", "a@contoso.com", 1.0)  # nothing to do, nothing raised


def test_on_the_envelope_carries_the_enqueue_span_as_its_traceparent() -> None:
    with capture_telemetry() as captured:
        with telemetry.enqueuing(envelope(traceparent=CALLER), "q") as traced:
            pass
        span = captured.span("mailgw.enqueue")
    assert traced.traceparent is not None
    assert traced.traceparent.startswith(
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
    )


def test_an_unexpected_error_marks_the_span_with_its_type_only() -> None:
    with capture_telemetry() as captured:
        with (
            pytest.raises(ValueError, match=r"a@example\.com"),
            telemetry.delivering(envelope(), "outbox"),
        ):
            raise ValueError("cannot render for a@example.com")
        span = captured.span("mailgw.deliver")
    assert span.status.description == "ValueError"
    assert span.events == ()
    assert "example.com" not in captured.everything()


def test_the_console_prints_a_line_per_span_and_per_data_point() -> None:
    out = io.StringIO()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanLines(out)))
    reader = PeriodicExportingMetricReader(
        ConsoleMetricLines(out), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.use(tracer_provider, meter_provider)
    try:
        with telemetry.delivering(envelope(traceparent=CALLER), "outbox") as attempt:
            telemetry.message_sent("outbox", "NoReply@contoso.com", 1.5)
            attempt.ended(Outcome("sent", "m-1"))
        telemetry.queue_reported("mail-outbound", 3, 12.0)
        meter_provider.force_flush()
    finally:
        telemetry.use(None, None)
        meter_provider.shutdown()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("telemetry 4bf92f35 mailgw.deliver consumer ")
    assert lines[0].endswith(
        "message_id=m-1 transport=outbox attempt=1 delivery.latency=1.5 outcome=sent"
    )
    assert "telemetry mailgw.messages.sent +1 transport=outbox sender=noreply@contoso.com" in lines
    assert "telemetry mailgw.delivery.latency n=1 mean=1.50s max=1.50s transport=outbox" in lines
    assert "telemetry mailgw.queue.depth 3 queue=mail-outbound" in lines
    assert "telemetry mailgw.queue.oldest_age 12 queue=mail-outbound" in lines
    assert not any("accepted" in line for line in lines)  # nothing happened: no line


@pytest.mark.parametrize(
    ("inserted", "expires", "due"),
    [
        # the gateway's own: time-to-live = delay + 7 days, so due = expiry - 7 days
        ("10:00", "7d 10:00", "10:00"),
        ("10:00", "7d 12:30", "12:30"),  # scheduled (or a retry) 2.5 h ahead
        ("10:00", "2d 10:00", "10:00"),  # a producer's shorter time-to-live: from insertion
        ("10:00", "9999", "10:00"),  # never expires: from insertion
        ("10:00", None, "10:00"),
    ],
)
def test_a_messages_age_counts_from_when_it_became_due(
    inserted: str, expires: str | None, due: str
) -> None:
    from datetime import timedelta

    from azure.storage.queue import QueueMessage

    from mailgw.backlog import due_at

    day = datetime(2026, 3, 1, tzinfo=UTC)

    def at(text: str) -> datetime:
        if text == "9999":
            return datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
        days, _, clock = text.rpartition(" ")
        hours, minutes = map(int, clock.split(":"))
        return day + timedelta(days=int(days.rstrip("d") or 0), hours=hours, minutes=minutes)

    message = QueueMessage(content="x")
    message.inserted_on = at(inserted)
    message.expires_on = at(expires) if expires else None
    assert due_at(message, now=day + timedelta(hours=13)) == at(due)
