"""Cost per request of the intake path against a bare ``send_message`` of the same payload.

All sides run against one Azurite, interleaved request by request in the same run, so machine noise
hits them alike; the results are ratios, not times. Goals: ``intake ratio`` at most 1.5, and at
most 2.0 with an ``Idempotency-Key``; with telemetry on, still at most 1.5.

The telemetry side is the intake as the HTTP function runs it with telemetry on, as in
production: the request span around it, the enqueue span, the accepted counter, through the
OpenTelemetry SDK's providers with a batch span processor and a periodic metric reader (their
exporter discards, so the cost measured is the gateway's and the SDK's, not a network's).

    .venv/bin/python bench/intake.py [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from mailgw import telemetry  # noqa: E402
from mailgw.queue import dumps  # noqa: E402
from mailgw.services import Services  # noqa: E402
from mailgw.settings import Settings  # noqa: E402

PAYLOAD = {
    "from": "noreply@contoso.com",
    "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
    "cc": ["c@example.com"],
    "subject": "Your receipt #42",
    "text": "Thank you for your order. " * 20,
    "html": "<p>Thank you for your order.</p>" * 20,
    "attachments": [
        {
            "name": "r.txt",
            "contentType": "text/plain",
            "contentBase64": base64.b64encode(b"hello world\n" * 40).decode(),
        }
    ],
    "headers": {"X-Order-Id": "42"},
    "metadata": {"orderId": "42"},
}


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DiscardMetrics(MetricExporter):
    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class _Invocation:
    """The trace context the host hands an HTTP function (a caller's traceparent)."""

    trace_parent: str
    trace_state: str = ""


def telemetry_providers() -> tuple[TracerProvider, MeterProvider]:
    """The SDK as production sets it up (batching, a metric reader every 60 s)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    reader = PeriodicExportingMetricReader(_DiscardMetrics(), export_interval_millis=60_000)
    return tracer_provider, MeterProvider(metric_readers=[reader])


def bench_settings(connection_string: str, name: str) -> Settings:
    """Outbox settings on a queue and a state table of the bench's own."""
    return Settings.from_env(
        {
            "AzureWebJobsStorage": connection_string,
            "MAILGW_QUEUE": f"bench-{name}-{uuid.uuid4().hex[:8]}",
            "MAILGW_STATE_TABLE": f"bench{uuid.uuid4().hex[:8]}",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_TRANSPORT": "outbox",
        }
    )


async def measure(connection_string: str, requests: int) -> dict[str, list[float]]:
    """Four interleaved sides per round: bare send, intake without a key, intake with a fresh
    Idempotency-Key (claim + record), and intake without a key with telemetry on. Each side's
    order rotates every round."""
    services = Services(bench_settings(connection_string, "intake"))
    intake, queue = services.intake, services.queue
    body = json.dumps(PAYLOAD).encode()
    client = queue.queue()
    # The baseline sends the very text intake enqueues, through the same Base64-encoding client
    # (the first submit also creates the queue and the table).
    await intake.submit(body, content_type="application/json")
    await intake.submit(body, content_type="application/json", idempotency_key="warm-up")
    sample = await client.receive_message()
    assert sample is not None
    baseline_text = sample.content
    assert len(dumps(json.loads(baseline_text))) == len(baseline_text)

    async def bare() -> None:
        await client.send_message(baseline_text)

    async def no_key() -> None:
        await intake.submit(body, content_type="application/json")

    async def with_key() -> None:
        key = uuid.uuid4().hex
        await intake.submit(body, content_type="application/json", idempotency_key=key)

    tracer_provider, meter_provider = telemetry_providers()

    async def traced() -> None:
        telemetry.use(tracer_provider, meter_provider)
        try:
            caller = _Invocation(f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")
            with telemetry.http_request("POST", "/api/v1/messages", caller) as request:
                await intake.submit(body, content_type="application/json")
                request.responded(202)
        finally:
            telemetry.use(None, None)

    sides = {"bare": bare, "intake": no_key, "intake+key": with_key, "intake+telemetry": traced}
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(requests + 50):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            await sides[name]()
            elapsed = time.perf_counter() - start
            await intake.drain()  # the background state write, outside the caller's wait
            if i >= 50:  # warm-up: connection pools, caches
                times[name].append(elapsed)
    await queue.close()
    await services.store.close()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with Azurite(project_dir=ROOT) as azurite:
        times = asyncio.run(measure(azurite.connection_string, args.requests))
    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"requests per side: {len(times['bare'])}")
    print(f"bare send_message:        median {median['bare']:.3f} ms")
    print(
        f"intake, no key:           median {median['intake']:.3f} ms "
        "(validate, policy, enqueue; the state record follows)"
    )
    print(
        f"intake, Idempotency-Key:  median {median['intake+key']:.3f} ms "
        "(... enqueue and keyed record together)"
    )
    print(
        f"intake, telemetry on:     median {median['intake+telemetry']:.3f} ms "
        "(... with the request and enqueue spans and the accepted counter)"
    )
    print(f"intake ratio: {median['intake'] / median['bare']:.2f}")
    print(f"intake ratio with Idempotency-Key: {median['intake+key'] / median['bare']:.2f}")
    print(f"intake ratio with telemetry: {median['intake+telemetry'] / median['bare']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
