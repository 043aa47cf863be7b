"""Ambiguous outcomes: Graph processed the request (the message IS out) but the answer was a 504, a
dropped connection, or came after the timeout.

- sendMail has no idempotency key: the retry sends again. That is the documented at-least-once
  behaviour, and the envelope records the ambiguity.
- Draft mode keeps the draft's immutable id and its stage in a checkpoint (in the message's state
  record, the only place the gateway trusts it): after a lost answer the draft is read at once,
  seen sent, and not sent again. Exactly once, end to end on real queues, even when the worker
  dies after the send. A draft that still reads as a draft is pending until the grace is over
  (test_graph_submission.py has Exchange's submission lag).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from graph_helpers import SHORT_GRACE, CrashAfterSend, Pipeline, attachment, body, sha256

from mailgw.settings import Settings
from mailgw.transports.graph import IMMUTABLE_IDS, GraphTransport
from mailgw.transports.graph_submission import PENDING
from standins.graph import GraphStandIn
from standins.graph.records import DeliveredMessage

#: how the answer is lost, and the code the transport reports for it
LOST_ANSWERS = [
    pytest.param({"mode": "status", "status": 504}, "graph/GatewayTimeout", id="504"),
    pytest.param({"mode": "status", "status": 500}, "graph/UnknownError", id="500"),
    pytest.param({"mode": "drop"}, "graph/network-error", id="dropped"),
    pytest.param({"mode": "delay", "delay_seconds": 2.0}, "graph/timeout", id="late"),
]


@pytest.fixture
async def sendmail_transport(
    graph_settings: Callable[..., Settings],
) -> AsyncIterator[GraphTransport]:
    """A 1 s timeout: the 'late' answers come after 2 s."""
    transport = GraphTransport(graph_settings(MAILGW_GRAPH_TIMEOUT_SECONDS="1"))
    yield transport
    await transport.aclose()


@pytest.fixture
async def draft_fast(graph_settings: Callable[..., Settings]) -> AsyncIterator[GraphTransport]:
    transport = GraphTransport(
        graph_settings(MAILGW_GRAPH_MODE="draft", MAILGW_GRAPH_TIMEOUT_SECONDS="1")
    )
    yield transport
    await transport.aclose()


@pytest.mark.parametrize(("fault", "code"), LOST_ANSWERS)
async def test_sendmail_lost_answer_is_ambiguous_and_the_retry_sends_again(
    sendmail_transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    code: str,
) -> None:
    graph.accept_then_fail(**fault, operation="sendMail")
    pipeline = make_pipeline(sendmail_transport)
    message_id = await pipeline.submit(body(subject="ambiguous"))

    with caplog.at_level(logging.WARNING, logger="mailgw.delivery"):
        first = await pipeline.step()
    assert first.outcome.action == "retry"
    assert first.outcome.error is not None and first.outcome.error.code == code
    assert "may already have been sent" in first.outcome.error.hint
    assert len(graph.delivered) == 1  # it WAS sent
    assert "at-least-once" in caplog.text and message_id in caplog.text

    second = await pipeline.step()
    assert second.envelope.id == message_id
    assert second.envelope.ambiguous is True  # the retry knows it may be a duplicate
    assert second.envelope.attempt == 1
    assert second.outcome.action == "sent"
    # documented at-least-once: sendMail has no idempotency key, so the retry sends again
    assert [d.subject for d in graph.delivered] == ["ambiguous", "ambiguous"]
    assert len(graph.requests_for("sendMail")) == 2
    record = await pipeline.delivery.store.get(message_id)  # and the message's state says so
    assert record is not None and (record.status, record.ambiguous) == ("sent", True)


@pytest.mark.parametrize(("fault", "code"), LOST_ANSWERS)
async def test_draft_lost_answer_to_send_is_read_at_once_and_not_sent_again(
    draft_fast: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    fault: dict[str, Any],
    code: str,
) -> None:
    """Graph sent it and the answer was lost: the same attempt reads the draft (no backoff),
    finds it sent, and is done."""
    graph.accept_then_fail(**fault, operation="send")
    pipeline = make_pipeline(draft_fast)
    message_id = await pipeline.submit(body(subject="exactly once"))

    (first,) = await pipeline.run()
    assert first.outcome.action == "sent"
    assert "the answer was lost" in first.outcome.detail
    (delivered,) = graph.delivered
    operations = [r.operation for r in graph.requests]
    assert operations == ["createMessage", "send", "getMessage"]  # looked, did not send again
    (send,) = graph.requests_for("send")
    assert send.fault is not None and send.fault.startswith("accept_then_")
    looked = graph.requests[-1]
    assert looked.message_id == delivered.message_id
    assert looked.header("Prefer") == IMMUTABLE_IDS
    record = await pipeline.delivery.store.get(message_id)
    assert record is not None and record.status == "sent" and record.attempts == 1
    assert await pipeline.is_empty()
    del code  # how the answer was lost does not matter: it is read at once


async def test_a_504_that_sent_nothing_is_sent_again_only_after_the_grace(
    draft_short_grace: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
) -> None:
    """A 504 that Graph answered *without* sending reads exactly like one it answered after
    handing the draft to Exchange: still a draft. So the draft is pending (looked at every
    second here, no attempt used) until the grace is over; then that same draft is sent, once."""
    graph.gateway_timeout(operation="send")
    pipeline = make_pipeline(draft_short_grace)
    await pipeline.submit(body())

    await pipeline.run()
    *waiting, done = pipeline.steps
    assert done.outcome.action == "sent"
    assert waiting and all(s.outcome.action == "retry" for s in waiting)
    assert {s.outcome.error.code for s in waiting if s.outcome.error} == {PENDING}
    assert all(s.envelope.attempt == 0 for s in pipeline.steps)  # no attempt used
    assert pipeline.steps[1].envelope.ambiguous is True  # a 504 to send is ambiguous
    assert len(graph.requests_for("createMessage")) == 1
    first, second = graph.requests_for("send")
    assert second.time - first.time >= SHORT_GRACE  # never before the grace is over
    (delivered,) = graph.delivered
    assert delivered.message_id == first.message_id == second.message_id
    assert done.checkpoint is not None and done.checkpoint["stage"] == "submitting"


@dataclass(frozen=True)
class ThreeAttachments:
    """Too much for the draft's first request: the big one goes through an upload session, one
    medium one is added by its own request (addAttachment), the other stays in the first one."""

    big: bytes = field(default_factory=lambda: os.urandom(3 * 1024 * 1024 + 1000))
    medium: bytes = field(default_factory=lambda: os.urandom(2_500_000))
    other: bytes = field(default_factory=lambda: os.urandom(2_400_000))

    def body(self) -> dict[str, Any]:
        return body(
            attachments=[
                attachment("medium.bin", self.medium),
                attachment("other.bin", self.other),
                attachment("big.bin", self.big),
            ]
        )

    def assert_delivered(self, delivered: DeliveredMessage) -> None:
        assert sha256(delivered.attachment("big.bin").content) == sha256(self.big)
        assert delivered.attachment("medium.bin").content == self.medium
        assert delivered.attachment("other.bin").content == self.other


@pytest.mark.parametrize("operation", ["createUploadSession", "upload", "addAttachment"])
async def test_draft_failure_before_send_rebuilds_the_draft_and_sends_once(
    draft_transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    operation: str,
) -> None:
    files = ThreeAttachments()
    graph.service_unavailable(operation=operation, retry_after=None)
    pipeline = make_pipeline(draft_transport)
    await pipeline.submit(files.body())

    first = await pipeline.step()
    assert first.outcome.action == "retry"
    assert (
        first.outcome.error is not None and first.outcome.error.code == "graph/ServiceUnavailable"
    )
    assert graph.requests[-1].operation == operation
    (half_built,) = graph.requests_for("createMessage")
    stale = half_built.message_id
    assert stale is not None and graph.delivered == []
    seen = len(graph.requests)

    second = await pipeline.step()
    assert second.checkpoint == {"draftId": stale, "stage": "created"}
    assert second.envelope.ambiguous is False  # nothing could have been sent
    assert second.outcome.action == "sent"
    retry_ops = [r.operation for r in graph.requests[seen:]]
    assert retry_ops[:3] == ["getMessage", "deleteMessage", "createMessage"]
    assert [r.message_id for r in graph.requests_for("deleteMessage")] == [stale]
    assert graph.drafts[stale].deleted and not graph.drafts[stale].sent
    assert graph.upload_sessions == {} or all(
        s.message_id == stale for s in graph.upload_sessions.values()
    )

    (delivered,) = graph.delivered
    assert delivered.message_id != stale
    assert sorted(a.name for a in delivered.attachments) == ["big.bin", "medium.bin", "other.bin"]
    files.assert_delivered(delivered)


@pytest.mark.parametrize("operation", ["createUploadSession", "upload", "addAttachment", "send"])
async def test_a_draft_or_upload_session_gone_midway_is_retried_not_poisoned(
    draft_short_grace: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    operation: str,
) -> None:
    """404 ErrorItemNotFound on the draft's own operations means the draft or the upload session
    is gone (expired session, draft deleted by a user or a retention policy). The mailbox is fine
    and a fresh draft will do: it is not the design's permanent 404 (an unknown mailbox)."""
    files = ThreeAttachments()
    graph.fail_next(404, "ErrorItemNotFound", operation=operation)
    pipeline = make_pipeline(draft_short_grace)
    await pipeline.submit(files.body())

    first = await pipeline.step()
    assert graph.requests[-1].operation == operation and graph.requests[-1].status == 404
    assert first.outcome.error is not None
    assert first.outcome.action == "retry", first.outcome.error
    assert "mailbox was not found" not in first.outcome.error.hint  # it was found

    await pipeline.run()
    # A 404 to /send is read as "the draft may be on its way" until the grace is over.
    assert (len(pipeline.steps) > 2) is (operation == "send")
    (delivered,) = graph.delivered
    files.assert_delivered(delivered)


async def test_draft_mode_worker_crash_after_the_send_does_not_send_again(
    draft_transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    """OutboundMessage.save_checkpoint persists the draft id while sending, so that 'even a
    crashed attempt can be resumed without sending twice'."""
    pipeline = make_pipeline(CrashAfterSend(draft_transport))
    await pipeline.submit(body(subject="crash"))

    first = await pipeline.receive(visibility=1)
    with pytest.raises(RuntimeError, match="worker killed"):
        await pipeline.delivery.handle(
            first.content, queue_message_id=first.id, dequeue_count=first.dequeue_count
        )
    assert len(graph.delivered) == 1
    seen = len(graph.requests)

    again = await pipeline.receive()  # the host hands the same message out again
    assert (again.id, again.dequeue_count) == (first.id, 2)
    outcome = await pipeline.delivery.handle(
        again.content, queue_message_id=again.id, dequeue_count=again.dequeue_count
    )
    assert outcome.action == "sent"
    assert [r.operation for r in graph.requests[seen:]] == ["getMessage"]
    assert len(graph.delivered) == 1, "sent twice after a crash in draft mode"
