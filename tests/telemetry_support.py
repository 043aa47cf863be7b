"""The gateway's telemetry caught in memory, with the OpenTelemetry SDK's own in-memory exporters:
what the spans and metrics say, read as docs/telemetry.md names them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mailgw import telemetry


@dataclass
class Captured:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    seen: dict[tuple[str, str], Any] = field(default_factory=dict)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        (only,) = self.spans(name)
        return only

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of every data point of metric ``name`` so far (counters: totals;
        gauges: the last reading; histograms: the point itself). A collection drops a gauge that
        has no new reading, so every collection is kept."""
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (
                            metric.name,
                            json.dumps(dict(point.attributes or {}), sort_keys=True),
                        )
                        self.seen[key] = getattr(point, "value", point)
        return [(json.loads(a), v) for (n, a), v in self.seen.items() if n == name]

    def total(self, name: str, **attributes: str) -> float:
        """A counter's total over the points whose attributes include ``attributes``."""
        return float(
            sum(
                value
                for point, value in self.points(name)
                if all(point.get(k) == v for k, v in attributes.items())
            )
        )

    def everything(self) -> str:
        """Every name, attribute, event, link and status of every span and metric point, as text:
        what could ever leave the process."""
        spans = [
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "events": [(e.name, dict(e.attributes or {})) for e in s.events],
                "status": s.status.description,
            }
            for s in self.spans()
        ]
        self.points("")
        return json.dumps([spans, [[*key, str(value)] for key, value in self.seen.items()]])


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    return dict(span.attributes or {})


@contextlib.contextmanager
def capture_telemetry() -> Iterator[Captured]:
    """Telemetry on, into memory, for the block; off again afterwards."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.use(tracer_provider, meter_provider)
    try:
        yield Captured(exporter, reader)
    finally:
        telemetry.use(None, None)
        tracer_provider.shutdown()
        meter_provider.shutdown()
