"""Telemetry of the Graph path, with the real msgraph-sdk and azure-identity against the stand-ins
and real queues: a throttled attempt, a retried one, a permanent failure with its code, and the
identity endpoint's token requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from graph_helpers import SENDER, Pipeline, body
from telemetry_support import Captured, attributes, capture_telemetry

from mailgw.delivery import RetryPolicy
from mailgw.operations import Operations
from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn
from support import pull


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture_telemetry() as caught:
        yield caught


def attempts(captured: Captured) -> list[tuple[int, str, str | None]]:
    """(attempt, outcome, error code) of each mailgw.deliver span, in order."""
    spans = sorted(captured.spans("mailgw.deliver"), key=lambda s: s.start_time or 0)
    return [
        (
            attributes(s)["mailgw.attempt"],
            attributes(s)["mailgw.outcome"],
            attributes(s).get("mailgw.error_code"),
        )
        for s in spans
    ]


async def test_throttling_is_counted_by_code_and_spends_no_attempt(
    transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    captured: Captured,
) -> None:
    graph.throttle(retry_after=0)
    pipeline = make_pipeline(transport)
    await pipeline.submit(body())
    await pipeline.run()
    assert pipeline.actions == ["retry", "sent"]

    code = "graph/ApplicationThrottled"
    assert attempts(captured) == [(1, "retry", code), (1, "sent", None)]
    assert captured.total("mailgw.messages.throttled", code=code, transport="graph") == 1
    assert captured.total("mailgw.messages.retried") == 0
    assert captured.total("mailgw.messages.sent", transport="graph", sender=SENDER) == 1
    sends = sorted(captured.spans("mailgw.transport.send"), key=lambda s: s.start_time or 0)
    assert [attributes(s)["mailgw.outcome"] for s in sends] == ["retry", "sent"]
    assert attributes(sends[0])["mailgw.error_code"] == code
    # Both attempts continue the message's one trace: the retry's enqueue carries it on.
    assert len({s.context.trace_id for s in captured.spans()}) == 1


async def test_a_transient_failure_is_retried_on_the_next_attempt(
    transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    captured: Captured,
) -> None:
    graph.service_unavailable(retry_after=0)
    pipeline = make_pipeline(transport)
    await pipeline.submit(body())
    await pipeline.run()
    code = "graph/ServiceUnavailable"
    assert attempts(captured) == [(1, "retry", code), (2, "sent", None)]
    assert captured.total("mailgw.messages.retried", code=code, transport="graph") == 1
    assert captured.total("mailgw.messages.throttled") == 0
    ((_, latency),) = captured.points("mailgw.delivery.latency")
    assert latency.count == 1


async def test_a_permanent_failure_carries_its_code_to_the_failed_metric(
    transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    captured: Captured,
) -> None:
    graph.fail_with("ErrorSendAsDenied")
    pipeline = make_pipeline(transport, retry=RetryPolicy(max_attempts=3))
    message_id = await pipeline.submit(body())
    await pipeline.run()
    code = "graph/ErrorSendAsDenied"
    assert attempts(captured) == [(1, "failed", code)]

    operations = Operations(pipeline.queue, pipeline.delivery.store, transport="graph")
    poisoned = await pull(pipeline.queue, pipeline.queue.poison_queue_name)
    await operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    # A second report of the same failure (a redelivered poison message) is not a second failure.
    await operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    recorded = captured.spans("mailgw.record_failure")
    assert [attributes(s)["mailgw.error_code"] for s in recorded] == [code, code]
    assert {attributes(s)["mailgw.message_id"] for s in recorded} == {message_id}
    failed = captured.total("mailgw.messages.failed", code=code, transport="graph", sender=SENDER)
    assert failed == 1


async def test_token_requests_are_counted_not_cached_tokens(
    transport: GraphTransport,
    graph: GraphStandIn,
    identity: IdentityStandIn,
    make_pipeline: Callable[..., Pipeline],
    captured: Captured,
) -> None:
    scope = transport.settings.graph_scope  # the audience the transport asks tokens for
    identity.fail_next(500, n=4)  # azure-identity retries; the request fails as a whole
    with pytest.raises(Exception):  # noqa: B017, PT011 - azure-identity's own error type
        await transport.credential.get_token(scope)
    assert captured.total("mailgw.token.fetches", scope=scope, outcome="error") == 1

    pipeline = make_pipeline(transport)
    for _ in range(2):
        await pipeline.submit(body())
        await pipeline.run()
    assert pipeline.actions.count("sent") == 2
    assert captured.total("mailgw.token.fetches", scope=scope, outcome="ok") == 1
