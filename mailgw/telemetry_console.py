"""Telemetry on the console, compactly (``MAILGW_TELEMETRY=console``): a line per span, a line
per metric data point, instead of the SDK's console exporters' JSON documents.

    telemetry 4bf92f35 mailgw.deliver consumer 12.3ms message_id=0192... attempt=1 outcome=sent
    telemetry mailgw.messages.sent +2 transport=outbox sender=noreply@contoso.com

The first eight digits of the trace id follow one message from its request to its sending. Only
the gateway's own tracer and meter are shown (``mailgw``); an OTLP collector gets everything.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from mailgw.telemetry import NAME


def pairs(attributes: Mapping[str, Any] | None) -> str:
    """``key=value`` pairs, without the ``mailgw.`` prefix."""
    return " ".join(f"{k.removeprefix('mailgw.')}={v}" for k, v in (attributes or {}).items())


class ConsoleSpanLines(SpanExporter):
    """One line per span: trace id (8 digits), name, kind, duration, status, attributes."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            scope = span.instrumentation_scope
            if scope is None or scope.name != NAME or span.context is None:
                continue
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            trace_id = format(span.context.trace_id, "032x")[:8]
            status = " ERROR" if span.status.status_code is StatusCode.ERROR else ""
            line = f"telemetry {trace_id} {span.name} {span.kind.name.lower()} {took:.1f}ms"
            print(f"{line}{status} {pairs(span.attributes)}".rstrip(), file=self._out(), flush=True)
        return SpanExportResult.SUCCESS

    def _out(self) -> TextIO:
        return self.out or sys.stderr


class ConsoleMetricLines(MetricExporter):
    """One line per data point of an export interval: counters as the period's increase (zero
    increases left out), gauges as their reading, the latency histogram as count, mean, max."""

    def __init__(self, out: TextIO | None = None) -> None:
        delta = AggregationTemporality.DELTA
        super().__init__(preferred_temporality={Counter: delta, Histogram: delta})
        self.out = out

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        for resource in metrics_data.resource_metrics:
            for scope in resource.scope_metrics:
                if scope.scope.name != NAME:
                    continue
                for metric in scope.metrics:
                    counter = isinstance(metric.data, Sum) and metric.data.is_monotonic
                    for point in metric.data.data_points:
                        value = _value(point, counter)
                        if value is not None:
                            line = f"telemetry {metric.name} {value} {pairs(point.attributes)}"
                            print(line.rstrip(), file=self.out or sys.stderr, flush=True)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _value(point: NumberDataPoint | HistogramDataPoint | Any, counter: bool) -> str | None:
    if isinstance(point, HistogramDataPoint):
        if not point.count:
            return None
        return f"n={point.count} mean={point.sum / point.count:.2f}s max={point.max:.2f}s"
    if counter:
        return f"+{point.value:g}" if point.value else None
    return f"{point.value:g}"
