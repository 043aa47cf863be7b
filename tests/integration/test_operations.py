"""Operations on real Azurite: record poison messages, replay, purge and retention clean-up.

Failed messages are produced the way production produces them: Delivery poisons a message (or
the host moves a crashing one unchanged), and the poison trigger hands it to
``Operations.record_failure``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from rigs import (
    DENIED,
    Rig,
    blob_bytes,
    enqueue_new,
    fail_permanently,
    failure_events,
    outcomes,
)

from mailgw.models import Envelope, ErrorInfo, MessageStatus
from mailgw.operations import CRASH_LOOP, Operations
from mailgw.settings import Settings
from mailgw.state import MessageRecord
from mailgw.store import StateStore
from support import RETENTION, depth, new_record, pull, raises_problem, sample_request

# --- record_failure ----------------------------------------------------------------------------


async def test_gateway_poison_envelope_is_recorded_with_its_error_and_payload_kept(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mailgw.failures")
    message_id, _, poisoned = await fail_permanently(rig)
    dead = Envelope.model_validate_json(poisoned.content)
    assert dead.payload_ref is None and dead.request is not None  # small: inline in the queue

    record = await rig.store.get(message_id)
    assert record is not None
    assert record.status is MessageStatus.failed
    assert record.last_error == DENIED.info()
    assert outcomes(record) == ["sending", "failed"]
    # Kept in Blob although it travelled inline: the poison message is consumed right now.
    assert record.payload_ref is not None
    kept = await blob_bytes(rig.queue, record.payload_ref)
    assert kept is not None and json.loads(kept) == {"request": dead.request}
    assert len(kept) == record.payload_ref.size

    (event,) = failure_events(caplog, message_id)
    assert (event["code"], event["hint"], event["from"]) == (
        "ErrorSendAsDenied",
        "grant Send As",
        "noreply@contoso.com",
    )
    assert event["attempts"] == 1


async def test_host_moved_envelope_without_error_is_recorded_as_a_crash_loop(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mailgw.failures")
    rig.transport.failures.append(RuntimeError("worker crashed"))
    message_id, original = await enqueue_new(rig)
    with pytest.raises(RuntimeError):
        await rig.delivery.handle(original.content, queue_message_id=original.id)
    # maxDequeueCount later the host moves the original text, unchanged, to the poison queue.
    record = await rig.operations.record_failure(original.content, queue_message_id="q-moved")
    assert record.id == message_id  # the envelope's id, not the poison queue message's
    assert record.status is MessageStatus.failed
    assert record.last_error == CRASH_LOOP
    assert record.last_error.code == "mailgw/max-dequeue-exceeded"
    assert record.last_error.hint
    assert record.attempts == 1
    assert record.lease is None
    assert record.payload_ref is not None
    assert await blob_bytes(rig.queue, record.payload_ref) is not None
    codes = [e["code"] for e in failure_events(caplog, message_id)]
    assert codes == ["mailgw/max-dequeue-exceeded"]


async def test_raw_text_is_recorded_under_its_queue_message_id(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mailgw.failures")
    raw = "this was never JSON \u2603"
    record = await rig.operations.record_failure(raw.encode(), queue_message_id="q-raw-1")
    assert record.id == "q-raw-1"
    assert record.status is MessageStatus.failed
    assert record.source == "queue"
    # not JSON at all: recorded as what it is (the host moves such a message only after the
    # delivery function crashed on it, and that function now records it itself)
    assert record.last_error is not None and record.last_error.code == "mailgw/invalid-message"
    assert record.payload_ref is not None
    kept = await blob_bytes(rig.queue, record.payload_ref)
    assert kept is not None and json.loads(kept) == {"raw": raw}
    assert len(failure_events(caplog, "q-raw-1")) == 1
    stored = await rig.store.get("q-raw-1")
    assert stored is not None and stored.status is MessageStatus.failed


async def test_producer_bare_request_moved_by_the_host_keeps_its_request(rig: Rig) -> None:
    document = sample_request(subject="from a producer")
    record = await rig.operations.record_failure(json.dumps(document), queue_message_id="q-bare")
    assert (record.id, record.source, record.status) == ("q-bare", "queue", MessageStatus.failed)
    assert record.sender == document["from"]  # `mailgw failed list` shows who sent it
    assert record.payload_ref is not None
    kept = await blob_bytes(rig.queue, record.payload_ref)
    assert kept is not None and json.loads(kept) == {"request": document}


# --- replay ------------------------------------------------------------------------------------


async def test_replay_requeues_a_failed_message_with_its_history(rig: Rig) -> None:
    message_id, _, _ = await fail_permanently(rig)
    failed = await rig.store.get(message_id)
    assert failed is not None and failed.payload_ref is not None

    replayed = await rig.operations.replay(message_id)
    assert replayed.status is MessageStatus.queued
    assert replayed.replays == 1
    assert outcomes(replayed)[-2:] == ["failed", "replayed"]
    assert replayed.last_error == DENIED.info()  # the failure stays visible
    stored = await rig.store.get(message_id)
    assert stored is not None and (stored.status, stored.replays) == (MessageStatus.queued, 1)

    assert await depth(rig.queue) == 1
    message = await pull(rig.queue)
    envelope = Envelope.model_validate_json(message.content)
    assert envelope.id == message_id
    assert (envelope.replay, envelope.attempt) == (1, 0)
    assert envelope.error is None
    assert envelope.payload_ref == failed.payload_ref
    assert envelope.request is None


async def test_replaying_twice_enqueues_once(rig: Rig) -> None:
    message_id, _, _ = await fail_permanently(rig)
    first = await rig.operations.replay(message_id)
    second = await rig.operations.replay(message_id)
    assert first.replays == second.replays == 1
    assert second.status is MessageStatus.queued
    assert await depth(rig.queue) == 1
    record = await rig.store.get(message_id)
    assert record is not None and outcomes(record).count("replayed") == 1


class LockstepStore(StateStore):
    """Holds the first ``parties`` reads until all have arrived: concurrent requests that all
    see the same state before any of them acts (two operators pressing replay at once)."""

    parties = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self._arrived = 0
        self._all_here = asyncio.Event()

    async def get(self, message_id: str) -> MessageRecord | None:
        record = await super().get(message_id)
        if self._arrived < self.parties:
            self._arrived += 1
            if self._arrived == self.parties:
                self._all_here.set()
            await asyncio.wait_for(self._all_here.wait(), 10)
        return record


async def test_concurrent_replays_enqueue_one_copy(rig: Rig, settings: Settings) -> None:
    message_id, _, _ = await fail_permanently(rig)
    lockstep = LockstepStore(settings.storage(), rig.store.table_name)
    try:
        operations = Operations(rig.queue, lockstep)
        results = await asyncio.gather(operations.replay(message_id), operations.replay(message_id))
    finally:
        await lockstep.close()
    assert [r.replays for r in results] == [1, 1]
    record = await rig.store.get(message_id)
    assert record is not None and outcomes(record).count("replayed") == 1
    assert await depth(rig.queue) == 1  # the replay that lost takes its copy back


async def test_replay_of_a_sent_message_is_409_and_of_an_unknown_one_404(rig: Rig) -> None:
    message_id, message = await enqueue_new(rig)
    assert (await rig.delivery.handle(message.content, queue_message_id=message.id)).action == (
        "sent"
    )
    with raises_problem() as conflict:
        await rig.operations.replay(message_id)
    assert conflict.value.status == 409
    assert conflict.value.type == "urn:mailgw:problem:not-replayable"
    with raises_problem() as missing:
        await rig.operations.replay("no-such-message")
    assert missing.value.status == 404
    assert missing.value.type == "urn:mailgw:problem:not-found"
    assert await depth(rig.queue) == 0


async def test_replayed_message_is_sent_exactly_once_whatever_old_copies_turn_up(
    rig: Rig,
) -> None:
    message_id, original, poisoned = await fail_permanently(rig)
    # An old copy (replay 0) while the message is failed: stale, not a way to resend it.
    stale = await rig.delivery.handle(original.content, queue_message_id=original.id)
    assert stale.action == "duplicate"
    assert rig.transport.sent == []

    await rig.operations.replay(message_id)
    replay = await pull(rig.queue)
    outcome = await rig.delivery.handle(replay.content, queue_message_id=replay.id)
    assert outcome.action == "sent"
    assert [m.id for m in rig.transport.sent] == [message_id]
    assert rig.transport.sent[0].request.subject == "Your receipt"  # loaded from the kept blob

    for text, queue_id, count in (
        (original.content, original.id, 2),
        (poisoned.content, poisoned.id, 1),
        (replay.content, replay.id, 2),
    ):
        again = await rig.delivery.handle(text, queue_message_id=queue_id, dequeue_count=count)
        assert again.action == "duplicate"
    assert len(rig.transport.sent) == 1
    record = await rig.store.get(message_id)
    assert record is not None
    assert (record.status, record.replays) == (MessageStatus.sent, 1)
    assert outcomes(record) == ["sending", "failed", "replayed", "sending", "sent"]
    with raises_problem() as done:
        await rig.operations.replay(message_id)
    assert done.value.status == 409


async def test_replay_that_fails_again_can_be_replayed_again(rig: Rig) -> None:
    message_id, _, _ = await fail_permanently(rig)
    await rig.operations.replay(message_id)
    rig.transport.failures.append(DENIED)
    first_replay = await pull(rig.queue)
    outcome = await rig.delivery.handle(first_replay.content, queue_message_id=first_replay.id)
    assert outcome.action == "poisoned"
    poisoned = await pull(rig.queue, rig.queue.poison_queue_name)
    assert Envelope.model_validate_json(poisoned.content).replay == 1
    await rig.operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    again = await rig.operations.replay(message_id)
    assert (again.status, again.replays) == (MessageStatus.queued, 2)
    second_replay = await pull(rig.queue)
    # Both replays' copies may turn up; between them the message goes out once.
    actions = [
        (await rig.delivery.handle(text, queue_message_id=queue_id)).action
        for text, queue_id in (
            (first_replay.content, "old-copy"),
            (second_replay.content, second_replay.id),
        )
    ]
    assert sorted(actions) == ["duplicate", "sent"]
    assert [m.id for m in rig.transport.sent] == [message_id]


# --- purge and retention -----------------------------------------------------------------------


async def test_purge_failed_removes_records_and_kept_payloads(rig: Rig) -> None:
    first_id, _, _ = await fail_permanently(rig)
    second_id, _, _ = await fail_permanently(rig)
    sent_id, message = await enqueue_new(rig)
    await rig.delivery.handle(message.content, queue_message_id=message.id)
    refs = {}
    for message_id in (first_id, second_id):
        record = await rig.store.get(message_id)
        assert record is not None and record.payload_ref is not None
        refs[message_id] = record.payload_ref

    assert await rig.operations.purge_failed([first_id, sent_id, "unknown"]) == 1
    assert await rig.store.get(first_id) is None
    assert await blob_bytes(rig.queue, refs[first_id]) is None
    assert await rig.store.get(second_id) is not None  # not named: kept
    assert await blob_bytes(rig.queue, refs[second_id]) is not None

    assert await rig.operations.purge_failed() == 1  # every failed one left
    assert await rig.store.get(second_id) is None
    assert await blob_bytes(rig.queue, refs[second_id]) is None
    sent = await rig.store.get(sent_id)
    assert sent is not None and sent.status is MessageStatus.sent  # only failed ones go


async def test_cleanup_removes_expired_records_and_their_payload_blobs(rig: Rig) -> None:
    failed_id, _, _ = await fail_permanently(rig)
    failed = await rig.store.get(failed_id)
    assert failed is not None and failed.payload_ref is not None
    keeper = new_record(
        "m-keeper",
        MessageStatus.failed,
        last_error=ErrorInfo(code="x", message="y"),
    )
    keeper.expires_at = datetime.now(UTC) + timedelta(days=365)
    await rig.store.create(keeper)

    assert await rig.operations.cleanup() == 0  # nothing has expired yet
    assert await rig.store.get(failed_id) is not None

    later = datetime.now(UTC) + RETENTION + timedelta(days=1)
    assert await rig.operations.cleanup(now=later) >= 1
    assert await rig.store.get(failed_id) is None
    assert await blob_bytes(rig.queue, failed.payload_ref) is None
    assert await rig.store.get("m-keeper") is not None
    assert await rig.operations.cleanup(now=later) == 0  # idempotent
