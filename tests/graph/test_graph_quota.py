"""Exchange's own sending quota, as Graph answers it: the message waits for the window instead of
failing, and the whole mailbox waits with it, on every instance (the budget table knows)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from graph_helpers import Pipeline, body

from mailgw.pacing import Pacer
from mailgw.store import StateStore
from mailgw.transports.graph import GraphTransport
from mailgw.transports.graph_errors import classify_graph
from standins.graph import GraphStandIn


@pytest.mark.parametrize(
    "code", ["ErrorExceededMessageLimit", "ErrorSubmissionQuotaExceeded", "SubmissionQuotaExceeded"]
)
def test_a_quota_answer_is_waited_out_not_failed(code: str) -> None:
    error = classify_graph(403, code, "sending limit exceeded")
    assert error.transient and error.quota == "daily"
    assert "10,000" in error.hint and not error.ambiguous


async def test_exchanges_quota_defers_the_message_and_holds_the_mailbox(
    transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    pacer: Pacer,
    store: StateStore,
) -> None:
    graph.fail_with("ErrorExceededMessageLimit")
    pipeline = make_pipeline(transport, pacer=pacer)
    first = await pipeline.submit(body())
    step = await pipeline.step()
    assert step.outcome.action == "deferred"
    record = await store.get(first)
    assert record is not None
    state = record.public(datetime.now(UTC))
    assert state["status"] == "scheduled"
    assert state["reason"] == "Exchange sending quota"
    assert state["lastError"] is None  # not a failure
    # until the oldest recipients the gateway counted (this message's) leave the 24 h window:
    # a day, and at most one 15-minute bucket more
    waits = datetime.fromisoformat(state["nextAttemptAt"]) - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < waits <= timedelta(hours=24, minutes=15)

    # the mailbox's next message waits too, without asking Graph again
    second = await pipeline.submit(body())
    assert (await pipeline.step()).outcome.action == "deferred"
    assert len(graph.requests_for("sendMail")) == 1
    held = await store.get(second)
    assert held is not None and held.reason == "Exchange sending quota"
    # another mailbox is not held
    await pipeline.submit(body(**{"from": "other@contoso.com"}))
    assert (await pipeline.step()).outcome.action == "sent"
    usage = await pacer.usage("noreply@contoso.com")
    assert usage.blocked_reason == "graph/ErrorExceededMessageLimit"
    assert await pipeline.is_empty()
