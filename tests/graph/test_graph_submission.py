"""Exactly once against Graph's asynchronous send, on real queues and the state table.

Exchange sends a draft after answering ``/send``: the Graph stand-in keeps a sent draft a draft
for a while, then finds it nowhere for a moment, then has it in Sent Items (the issue saw 60 s).
After a lost answer (504, 500, a dropped connection, a late answer) or a worker killed after
``/send``, the gateway must wait for Exchange, never send again while the first submission may be
in flight, and end with exactly one delivery.

Most tests hold the draft "being sent" until they end the lag themselves
(``graph.submission.complete_pending()``), so that what they assert does not depend on how fast
a loaded machine runs; one lets Exchange take its few seconds on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from graph_helpers import SHORT_GRACE, CrashAfterSend, Pipeline, body, request

from mailgw.delivery import RetryPolicy
from mailgw.transports.base import OutboundMessage
from mailgw.transports.graph import GraphTransport
from mailgw.transports.graph_message import STAMP_PROPERTY
from mailgw.transports.graph_submission import PENDING
from mailgw.transports.render import message_id_for
from standins.graph import GraphStandIn

#: Exchange's own pace in the test that lets it run: a draft, then found nowhere, then sent
LAG, TRANSIT = 3.0, 1.0
#: comfortably longer than LAG + TRANSIT on a loaded machine; rechecks every 2 s
GRACE = 20

LOST_ANSWERS = [
    pytest.param({"mode": "status", "status": 504}, id="504"),
    pytest.param({"mode": "status", "status": 500}, id="500"),
    pytest.param({"mode": "drop"}, id="dropped"),
    pytest.param({"mode": "delay", "delay_seconds": 2.0}, id="late"),
]


@pytest.fixture
def drafts(draft_with_grace: Callable[[int], GraphTransport]) -> GraphTransport:
    return draft_with_grace(GRACE)


@pytest.fixture
def slow_exchange(graph: GraphStandIn) -> GraphStandIn:
    """Exchange keeps every sent draft a draft until the test calls ``complete_pending()``."""
    graph.submit_lag_seconds = 3600
    return graph


async def wait_then_finish(pipeline: Pipeline, graph: GraphStandIn) -> None:
    """One attempt that must find the submission pending; then Exchange finishes; then run."""
    step = await pipeline.step()
    assert step.outcome.error is not None and step.outcome.error.code == PENDING, step.outcome
    assert graph.submission.pending == 1
    graph.submission.complete_pending()
    await pipeline.run()


def assert_waited_then_sent(pipeline: Pipeline) -> None:
    """Pending retries, none using an attempt, then sent: it was already out."""
    *waiting, done = pipeline.steps
    assert waiting, "a lost answer while Exchange was still sending must wait"
    assert [s.outcome.action for s in waiting] == ["retry"] * len(waiting)
    assert {s.outcome.error.code for s in waiting if s.outcome.error} == {PENDING}
    assert all(s.envelope.attempt == 0 for s in pipeline.steps)
    assert done.outcome.action == "sent"
    assert "already sent" in done.outcome.detail


@pytest.mark.parametrize("fault", LOST_ANSWERS)
async def test_a_lost_answer_while_exchange_is_still_sending_is_waited_for_not_resent(
    drafts: GraphTransport,
    slow_exchange: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    fault: dict[str, Any],
) -> None:
    graph = slow_exchange
    graph.accept_then_fail(**fault, operation="send")
    pipeline = make_pipeline(drafts)
    message_id = await pipeline.submit(body(subject="slow exchange"))

    await wait_then_finish(pipeline, graph)
    assert_waited_then_sent(pipeline)
    assert len(graph.requests_for("send")) == 1
    assert len(graph.requests_for("createMessage")) == 1
    (delivered,) = graph.delivered
    assert delivered.message_id is not None
    assert graph.drafts[delivered.message_id].folder == "SentItems"
    record = await pipeline.delivery.store.get(message_id)
    assert record is not None and (record.status, record.ambiguous) == ("sent", True)
    assert record.checkpoint is None


async def test_waiting_for_exchange_uses_no_attempt(
    drafts: GraphTransport, slow_exchange: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    """Like throttling: one attempt allowed, and waiting for Exchange still ends in 'sent'."""
    slow_exchange.accept_then_fail(operation="send")
    pipeline = make_pipeline(drafts, retry=RetryPolicy(max_attempts=1))
    await pipeline.submit(body())

    first = await pipeline.step()
    second = await pipeline.step()  # looked again: still being sent, still no attempt used
    assert [first.outcome.action, second.outcome.action] == ["retry", "retry"]
    slow_exchange.submission.complete_pending()
    await pipeline.run()
    assert_waited_then_sent(pipeline)
    assert len(slow_exchange.delivered) == 1


async def test_waiting_for_exchange_is_bounded_by_max_age(
    drafts: GraphTransport, slow_exchange: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    slow_exchange.accept_then_fail(operation="send")
    pipeline = make_pipeline(drafts, retry=RetryPolicy(max_age_seconds=60))
    await pipeline.submit(body(), created_at=datetime.now(UTC) - timedelta(minutes=5))

    (step,) = await pipeline.run()
    assert step.outcome.action == "poisoned"
    dead = await pipeline.poisoned()
    assert dead.error is not None and dead.error.code == PENDING
    assert "MAILGW_MAX_AGE_SECONDS" in dead.error.message
    assert "MAILGW_GRAPH_SUBMIT_GRACE_SECONDS" in dead.error.hint


async def test_exchange_taking_seconds_on_its_own_sends_each_message_once(
    drafts: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    """Exchange's lag and transit run on their own clock here: whenever the gateway happens to
    look (a draft, not found, sent), every message whose answer was lost goes out once."""
    graph.submit_lag_seconds, graph.transit_seconds = LAG, TRANSIT
    pipeline = make_pipeline(drafts)
    ids = []
    for n, fault in enumerate(LOST_ANSWERS):
        graph.accept_then_fail(**cast(dict[str, Any], fault.values[0]), operation="send")
        ids.append(await pipeline.submit(body(subject=f"on its own {n}")))

    finished: set[str] = set()
    for _ in range(60):
        step = await pipeline.step(timeout=30)
        if step.outcome.action in ("sent", "poisoned"):
            finished.add(step.envelope.id)
        if finished == set(ids):
            break
    assert {s.envelope.id for s in pipeline.steps if s.outcome.action == "sent"} == set(ids)
    assert sorted(d.subject or "" for d in graph.delivered) == [
        f"on its own {n}" for n in range(len(ids))
    ]
    assert len(graph.requests_for("send")) == len(ids)


async def test_an_item_not_found_after_send_is_looked_for_in_sent_items(
    drafts: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    """Not found is not "not sent": the item may be between Drafts and Sent Items, or its Sent
    Items copy may answer to another id. The gateway looks for its stamp in Sent Items."""
    graph.transit_seconds = 3600  # gone from Drafts, not yet in Sent Items, until we say so
    graph.accept_then_fail(operation="send")
    pipeline = make_pipeline(drafts)
    message_id = await pipeline.submit(body(subject="in transit"))

    first = await pipeline.step()
    assert first.outcome.error is not None and first.outcome.error.code == PENDING
    assert "is not found" in first.outcome.error.message
    operations = [(r.operation, r.status) for r in graph.requests]
    assert operations[-2:] == [("getMessage", 404), ("listMessages", 200)]
    looked = graph.requests[-1]
    assert looked.path.lower().endswith("/mailfolders/sentitems/messages")
    assert looked.query["$filter"] == (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP_PROPERTY}' "
        f"and ep/value eq '{message_id}')"
    )

    (delivered,) = graph.delivered
    assert delivered.message_id is not None
    item = graph.drafts[delivered.message_id]
    graph.drafts.move_to_sent(item)  # Exchange is done
    graph.fail_next(404, "ErrorItemNotFound", operation="getMessage")  # a copy, another id
    await pipeline.run()
    assert pipeline.actions[-1] == "sent"
    assert "found in Sent Items" in pipeline.steps[-1].outcome.detail
    assert len(graph.requests_for("send")) == 1 and len(graph.delivered) == 1


async def test_a_mime_draft_is_found_in_sent_items_by_its_message_id(
    drafts: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    graph.accept_then_fail(operation="send")
    pipeline = make_pipeline(drafts)
    message_id = await pipeline.submit(body(subject="both bodies", html="<p>html</p>"))
    graph.fail_next(404, "ErrorItemNotFound", operation="getMessage")  # the answer, then a copy

    (step,) = await pipeline.run()
    assert step.outcome.action == "sent"
    (listed,) = graph.requests_for("listMessages")
    internet_id = message_id_for(message_id, "noreply@contoso.com")
    assert listed.query["$filter"] == f"internetMessageId eq '{internet_id}'"
    (delivered,) = graph.delivered
    assert delivered.message_id is not None
    assert delivered.via == "draft"
    assert graph.drafts[delivered.message_id].message["internetMessageId"] == internet_id


async def test_a_draft_gone_without_being_sent_is_built_again_after_the_grace(
    draft_short_grace: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """The 504 came before Graph did anything, and then the draft was deleted (a user, a
    retention policy): not a draft, not in Sent Items. After the grace: a new draft, sent once."""
    graph.gateway_timeout(operation="send")
    pipeline = make_pipeline(draft_short_grace)
    await pipeline.submit(body(subject="deleted draft"))

    first = await pipeline.step()
    assert first.outcome.error is not None and first.outcome.error.code == PENDING
    (stale,) = graph.requests_for("createMessage")
    assert stale.message_id is not None
    graph.drafts[stale.message_id].deleted = True

    await pipeline.run()
    assert pipeline.actions[-1] == "sent"
    first_send, second_send = graph.requests_for("send")
    assert second_send.time - first_send.time >= SHORT_GRACE
    assert len(graph.requests_for("createMessage")) == 2
    (delivered,) = graph.delivered
    assert delivered.message_id is not None
    assert delivered.message_id != stale.message_id


async def test_a_worker_killed_after_send_while_exchange_is_still_sending_sends_once(
    drafts: GraphTransport,
    slow_exchange: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """The record said 'submitting' before /send was made, so the resumed attempt knows the
    draft may be on its way, though /send's 202 was never seen by anyone."""
    graph = slow_exchange
    pipeline = make_pipeline(CrashAfterSend(drafts))
    message_id = await pipeline.submit(body(subject="crash while slow"))

    first = await pipeline.receive(visibility=1)
    with pytest.raises(RuntimeError, match="worker killed"):
        await pipeline.delivery.handle(
            first.content, queue_message_id=first.id, dequeue_count=first.dequeue_count
        )
    record = await pipeline.delivery.store.get(message_id)
    assert record is not None and record.checkpoint is not None
    assert record.checkpoint["stage"] == "submitting"
    assert len(graph.delivered) == 1

    again = await pipeline.receive()  # the host hands the same message out again
    assert (again.id, again.dequeue_count) == (first.id, 2)
    outcome = await pipeline.delivery.handle(
        again.content, queue_message_id=again.id, dequeue_count=again.dequeue_count
    )
    await pipeline.queue.queue().delete_message(again)  # handled: the host deletes it
    assert outcome.action == "retry" and outcome.error is not None
    assert outcome.error.code == PENDING

    graph.submission.complete_pending()
    await pipeline.run()
    assert pipeline.actions[-1] == "sent"
    assert len(graph.requests_for("send")) == 1
    assert len(graph.delivered) == 1, "sent twice after a crash while Exchange was sending"


async def test_every_json_draft_carries_the_message_id_and_sendmail_does_not(
    drafts: GraphTransport, transport: GraphTransport, graph: GraphStandIn
) -> None:
    message = OutboundMessage(id=uuid.uuid4().hex, request=request())
    await drafts.send(message)
    (created,) = graph.requests_for("createMessage")
    assert created.json["singleValueExtendedProperties"] == [
        {"id": STAMP_PROPERTY, "value": message.id}
    ]
    await transport.send(OutboundMessage(id=uuid.uuid4().hex, request=request()))
    (sent,) = graph.requests_for("sendMail")
    assert "singleValueExtendedProperties" not in sent.json["message"]
