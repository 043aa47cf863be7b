"""What the gateway tells about itself: OpenTelemetry traces and metrics, named as docs/telemetry.md
says (the workbook and the alerts in infra/ query exactly those names).

Every span and metric is made here, so the contract lives in one module and the rest of the code
makes one small call per event (``telemetry.message_sent(...)``). Telemetry is off unless
:func:`configure` finds somewhere to send it (Application Insights, an OTLP endpoint, the console);
off, every helper returns at once, without building attributes or touching OpenTelemetry's
context, so an uninstrumented run pays next to nothing.

One trace per message: the HTTP request (continuing the caller's ``traceparent``), the enqueue,
and every delivery attempt with its transport call. The trace context crosses the queue in the
envelope's ``traceparent``, which :func:`enqueuing` sets to the enqueue span before the envelope is
sealed; the next attempt's span is that span's child. Attributes carry ids, transports, attempts,
outcomes and error codes, and the organisation's own sending mailbox on metrics: never recipients,
subjects or bodies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mailgw.models import Envelope, ErrorInfo
from mailgw.settings import SettingsError
from mailgw.transports.errors import DeliveryError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import TracerProvider

    from mailgw.state.record import MessageRecord

#: The tracer's and the meter's name (docs/telemetry.md).
NAME = "mailgw"
CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: ``console``: also print telemetry, compactly, on stderr; ``off``: none at all, wherever else
#: it could go. Unset: Application Insights and/or OTLP when their settings are there.
MODE_SETTING = "MAILGW_TELEMETRY"
MODES = ("", "console", "off")
#: Seconds, for OTLP backends that keep buckets (Application Insights keeps count, sum, min, max).
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: Delivery outcomes (``Outcome.action``) as spans report them: poisoned is failed; an adopted
#: producer's message (carried on as a sealed envelope, not tried) is put off, like a deferral.
OUTCOMES = {"poisoned": "failed", "adopted": "deferred"}

_PROPAGATOR = TraceContextTextMapPropagator()


class _Outcome(Protocol):
    """What a delivery attempt ended with (mailgw.delivery.Outcome)."""

    @property
    def action(self) -> str: ...

    @property
    def error(self) -> ErrorInfo | None: ...


class TraceContextLike(Protocol):
    """The invocation's trace context, as azure.functions' ``Context.trace_context`` has it."""

    @property
    def trace_parent(self) -> str: ...

    @property
    def trace_state(self) -> str: ...


OutcomeT = TypeVar("OutcomeT", bound=_Outcome)


class _Instruments:
    """The tracer and every instrument, from one pair of providers."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self.tracer = tracer_provider.get_tracer(NAME)
        meter = meter_provider.get_meter(NAME)
        count = meter.create_counter
        self.accepted = count("mailgw.messages.accepted", "{message}", "accepted messages")
        self.sent = count("mailgw.messages.sent", "{message}", "messages the transport took")
        self.failed = count("mailgw.messages.failed", "{message}", "messages recorded as failed")
        self.retried = count("mailgw.messages.retried", "{message}", "transient failures retried")
        self.throttled = count("mailgw.messages.throttled", "{message}", "throttled, retried")
        self.deferred = count("mailgw.messages.deferred", "{message}", "attempts put off")
        self.latency = meter.create_histogram(
            "mailgw.delivery.latency",
            "s",
            "seconds from acceptance (or sendAt) to sent",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.depth = meter.create_gauge("mailgw.queue.depth", "{message}", "messages in a queue")
        self.oldest_age = meter.create_gauge(
            "mailgw.queue.oldest_age", "s", "how long the oldest visible message has been due"
        )
        self.token_fetches = count("mailgw.token.fetches", "{request}", "token requests made")


_active: _Instruments | None = None
_configured: list[str] | None = None
#: instruments per pair of providers (kept alive with them), so switching back and forth is cheap
_made: dict[tuple[int, int], tuple[TracerProvider, MeterProvider, _Instruments]] = {}


def use(tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
    """Emit through these providers from now on (None: telemetry off). :func:`configure` calls it
    with what it set up; tests and benchmarks with providers of their own."""
    global _active
    if tracer_provider is None or meter_provider is None:
        _active = None
        return
    key = (id(tracer_provider), id(meter_provider))
    if key not in _made:
        made = _Instruments(tracer_provider, meter_provider)
        _made[key] = (tracer_provider, meter_provider, made)
    _active = _made[key][2]


def enabled() -> bool:
    return _active is not None


# --- where telemetry goes -------------------------------------------------------------------------


def destinations(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where :func:`configure` sends telemetry with these settings, in words (empty: off)."""
    environ = os.environ if environ is None else environ
    mode = environ.get(MODE_SETTING, "").strip().lower()
    if mode not in MODES:
        raise SettingsError(f"{MODE_SETTING}={mode!r}: use 'console', 'off', or leave it unset")
    if mode == "off":
        return []
    found = []
    if environ.get(CONNECTION_STRING, "").strip():
        found.append("Application Insights")
    if environ.get(OTLP_ENDPOINT, "").strip():
        found.append(f"OTLP {environ[OTLP_ENDPOINT].strip()}")
    if mode == "console":
        found.append("the console")
    return found


def configure(environ: Mapping[str, str] | None = None) -> list[str]:
    """Turn telemetry on as the settings say, once per process (the app calls it as it loads):

    - ``APPLICATIONINSIGHTS_CONNECTION_STRING``: Azure Monitor's distro
      (``configure_azure_monitor``; Entra ID ingestion through
      ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``, which its exporter reads). Every trace is
      kept unless ``OTEL_TRACES_SAMPLER`` says otherwise (the distro's own default keeps 5 per
      second; the workbook counts spans). Logs of the ``mailgw`` loggers (``MAILGW_FAILED``) go
      with them: with ``PYTHON_ENABLE_OPENTELEMETRY`` the host no longer forwards the worker's
      logs. httpx is not instrumented: a Graph upload session's URL carries its own token.
    - ``OTEL_EXPORTER_OTLP_ENDPOINT``: OTLP over HTTP (protobuf) to a collector.
    - ``MAILGW_TELEMETRY=console``: a line per span and per metric on stderr.

    Returns the destinations (empty: telemetry stays off)."""
    global _configured
    environ = os.environ if environ is None else environ
    targets = destinations(environ)
    if _configured is not None or not targets:
        return _configured if _configured is not None else targets
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    span_processors: list[SpanProcessor] = []
    readers: list[PeriodicExportingMetricReader] = []
    if environ.get(OTLP_ENDPOINT, "").strip():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        span_processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if "the console" in targets:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        from mailgw.telemetry_console import ConsoleMetricLines, ConsoleSpanLines

        span_processors.append(SimpleSpanProcessor(ConsoleSpanLines()))
        interval = float(environ.get("OTEL_METRIC_EXPORT_INTERVAL", "") or 10_000)
        readers.append(
            PeriodicExportingMetricReader(ConsoleMetricLines(), export_interval_millis=interval)
        )
    if environ.get(CONNECTION_STRING, "").strip():
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=environ[CONNECTION_STRING].strip(),
            logger_name=environ.get("PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME", NAME),
            sampling_ratio=1.0,
            instrumentation_options={"httpx": {"enabled": False}},
            span_processors=span_processors,
            metric_readers=readers,
        )
    else:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

        resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", NAME)})
        tracer_provider = SdkTracerProvider(resource=resource)
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(SdkMeterProvider(resource=resource, metric_readers=readers))
    use(trace.get_tracer_provider(), metrics.get_meter_provider())
    _configured = targets
    return targets


# --- spans ----------------------------------------------------------------------------------------


class Step:
    """A span in progress, or nothing at all when telemetry is off."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def responded(self, status: int) -> None:
        """An HTTP answer: its status (a 5xx marks the request failed)."""
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))

    def ended(self, outcome: OutcomeT) -> OutcomeT:
        """A delivery attempt's outcome, as the span's ``mailgw.outcome`` (and error code)."""
        if self.span.is_recording():
            result = OUTCOMES.get(outcome.action, outcome.action)
            self.span.set_attribute("mailgw.outcome", result)
            if outcome.error is not None:
                self.span.set_attribute("mailgw.error_code", outcome.error.code)
            if result == "failed":
                code = outcome.error.code if outcome.error else None
                self.span.set_status(Status(StatusCode.ERROR, code))
        return outcome


_OFF = Step(INVALID_SPAN)
_OFF_CONTEXT = nullcontext(_OFF)


def _parent(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The context a W3C ``traceparent`` names; None (the current context) if it names none."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _traceparent(span: Span) -> str:
    """The W3C ``traceparent`` naming ``span`` (what the propagator would write, without its
    detour through a context and a carrier: this runs once per enqueue)."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _invocation_links() -> Sequence[Link]:
    """The function invocation this span runs in (the host's span, when the worker attached it):
    a span whose parent comes from a message links to the execution that handled it."""
    current = trace.get_current_span().get_span_context()
    return [Link(current)] if current.is_valid else []


@contextmanager
def _span(
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    parent: Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Step]:
    """A span made current; an exception marks it failed with its type only (an exception's
    message may quote a recipient)."""
    assert _active is not None
    with _active.tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        step = Step(span)
        try:
            yield step
        except DeliveryError as error:
            span.set_attribute("mailgw.outcome", "retry" if error.transient else "failed")
            span.set_attribute("mailgw.error_code", error.code)
            span.set_status(Status(StatusCode.ERROR, error.code))
            raise
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


def http_request(
    method: str, route: str, invocation: TraceContextLike
) -> AbstractContextManager[Step]:
    """The HTTP server span (``POST /api/v1/messages``), a child of the invocation's trace
    context: the caller's ``traceparent`` as the Functions host (or the dev host) passed it on."""
    if _active is None:
        return _OFF_CONTEXT
    attributes = {"http.request.method": method, "http.route": route}
    parent = _parent(invocation.trace_parent, invocation.trace_state)
    return _span(f"{method} {route}", SpanKind.SERVER, attributes, parent)


def set_message_id(message_id: str) -> None:
    """The message the current span (the HTTP request) is about."""
    if _active is not None:
        trace.get_current_span().set_attribute("mailgw.message_id", message_id)


@contextmanager
def _enqueue_span(envelope: Envelope, queue: str) -> Iterator[Envelope]:
    # messaging.destination.name for OTLP backends; Application Insights' exporter turns it into
    # the dependency's type and keeps it from customDimensions, so the queue is also mailgw.queue.
    attributes = {
        "mailgw.message_id": envelope.id,
        "mailgw.queue": queue,
        "messaging.destination.name": queue,
    }
    with _span("mailgw.enqueue", SpanKind.PRODUCER, attributes) as step:
        yield envelope.model_copy(update={"traceparent": _traceparent(step.span)})


def enqueuing(envelope: Envelope, queue: str) -> AbstractContextManager[Envelope]:
    """The enqueue span; the envelope it yields carries the span as its ``traceparent`` (seal it
    after this), so the next delivery attempt continues the message's trace."""
    if _active is None:
        return nullcontext(envelope)
    return _enqueue_span(envelope, queue)


def delivering(envelope: Envelope, transport: str) -> AbstractContextManager[Step]:
    """One delivery attempt, continuing the trace the envelope carries."""
    if _active is None:
        return _OFF_CONTEXT
    attributes = {
        "mailgw.message_id": envelope.id,
        "mailgw.transport": transport,
        "mailgw.attempt": envelope.attempt + 1,
    }
    return _span(
        "mailgw.deliver",
        SpanKind.CONSUMER,
        attributes,
        _parent(envelope.traceparent),
        _invocation_links(),
    )


@contextmanager
def _transport_span(message_id: str, transport: str) -> Iterator[Step]:
    attributes = {"mailgw.message_id": message_id, "mailgw.transport": transport}
    with _span("mailgw.transport.send", SpanKind.CLIENT, attributes) as step:
        yield step
        step.span.set_attribute("mailgw.outcome", "sent")


def sending(message_id: str, transport: str) -> AbstractContextManager[Step]:
    """The transport's call (Graph, SMTP, the outbox): ``sent``, or the DeliveryError's code."""
    if _active is None:
        return _OFF_CONTEXT
    return _transport_span(message_id, transport)


def recording_failure(envelope: Envelope) -> AbstractContextManager[Step]:
    """The poison queue's record of one failed message, in the message's trace."""
    if _active is None:
        return _OFF_CONTEXT
    return _span(
        "mailgw.record_failure",
        SpanKind.CONSUMER,
        {"mailgw.message_id": envelope.id},
        _parent(envelope.traceparent),
        _invocation_links(),
    )


# --- metrics --------------------------------------------------------------------------------------


def _sender(address: str | None) -> str:
    return (address or "").lower()


def message_accepted(source: str, sender: str) -> None:
    """A message passed validation and the sender policy and is queued (source api, queue, smtp)."""
    if _active is not None:
        _active.accepted.add(1, {"source": source, "sender": _sender(sender)})


def message_sent(transport: str, sender: str, latency: float) -> None:
    """The transport took the message, ``latency`` seconds after it was accepted (or due); the
    attempt's span carries the same seconds (the workbook's percentiles come from spans)."""
    if _active is None:
        return
    _active.sent.add(1, {"transport": transport, "sender": _sender(sender)})
    _active.latency.record(latency, {"transport": transport})
    trace.get_current_span().set_attribute("mailgw.delivery.latency", latency)


def message_retried(code: str, transport: str, *, throttled: bool) -> None:
    """A transient failure, retried later; throttling (the provider asked to wait) apart."""
    if _active is not None:
        counter = _active.throttled if throttled else _active.retried
        counter.add(1, {"code": code, "transport": transport})


def message_deferred(reason: str) -> None:
    """An attempt put off without trying: ``pacing``, ``busy`` (another worker is sending it),
    ``awaiting-record`` (a keyed message before its record)."""
    if _active is not None:
        _active.deferred.add(1, {"reason": reason})


def failure_recorded(record: MessageRecord, *, counted: bool, transport: str) -> None:
    """A failed message recorded from the poison queue; ``counted`` once per failure (its first
    report), as the ``MAILGW_FAILED`` event is."""
    if _active is None:
        return
    code = record.last_error.code if record.last_error else "mailgw/unknown"
    trace.get_current_span().set_attribute("mailgw.error_code", code)
    if counted:
        attributes = {"code": code, "transport": transport, "sender": _sender(record.sender)}
        _active.failed.add(1, attributes)


def queue_reported(queue: str, depth: int, oldest_age: float) -> None:
    """One queue's reading (the report_queues timer): its depth and its oldest message's age."""
    if _active is not None:
        _active.depth.set(depth, {"queue": queue})
        _active.oldest_age.set(oldest_age, {"queue": queue})


@contextmanager
def _token_fetch(scope: str) -> Iterator[None]:
    assert _active is not None
    try:
        yield
    except BaseException:
        _active.token_fetches.add(1, {"scope": scope, "outcome": "error"})
        raise
    _active.token_fetches.add(1, {"scope": scope, "outcome": "ok"})


def fetching_token(scopes: Sequence[str]) -> AbstractContextManager[None]:
    """One request to the identity endpoint (not a cached token): ok, or error if it raises."""
    if _active is None:
        return nullcontext()
    return _token_fetch(" ".join(scopes))
