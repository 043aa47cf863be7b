"""Issue 9's loss paths, each on real Azurite through the real core: an accepted message is sent
once, or recorded as failed with its payload kept; nothing a message contains can crash a function
into a queue nobody reads."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rigs import (
    DENIED,
    CountingTransport,
    Rig,
    blob_bytes,
    deliver_all,
    failure_events,
    poison,
    poison_report,
)

from mailgw.delivery import Delivery, RetryPolicy
from mailgw.intake import Intake
from mailgw.models import Envelope, MessageStatus
from mailgw.operations import Operations
from mailgw.queue import INLINE_LIMIT, MailQueue, SentMessage
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports import render
from mailgw.transports.errors import transient
from support import TEST_SEAL, depth, pull, sample_request


async def submit(intake: Intake, body: dict[str, Any], key: str | None = None) -> Any:
    result = await intake.submit(
        json.dumps(body).encode(), content_type="application/json", idempotency_key=key
    )
    await intake.drain()
    return result


def large_request(**overrides: Any) -> dict[str, Any]:
    """Over the inline limit: it travels as a claim check."""
    data = base64.b64encode(os.urandom(INLINE_LIMIT)).decode()
    return sample_request(attachments=[{"name": "big.bin", "contentBase64": data}], **overrides)


# --- 1. claim-check blobs are never shared between copies --------------------------------------


async def test_a_keyed_retry_of_a_large_message_leaves_the_first_copys_payload(
    intake: Intake, rig: Rig
) -> None:
    """A client's timeout retry of a claim-checked message: both answers are the first 202, and
    the message goes out once. Before, the retry overwrote ``<id>.json``, its take-back deleted
    it, and the original was poisoned ``payload_missing``."""
    body = large_request()
    first = await submit(intake, body, key="order-43")
    again = await submit(intake, body, key="order-43")
    assert again == first
    assert await deliver_all(rig) == ["sent"]
    record = await rig.store.get(first.id)
    assert record is not None and record.status is MessageStatus.sent
    assert len(rig.transport.sent) == 1


async def test_concurrent_replays_of_a_large_failed_message_keep_its_payload(rig: Rig) -> None:
    """Two operators replay at once: one replay goes out, and the kept payload survives the
    loser's take-back (before, the take-back deleted it and the replay failed again)."""
    await poison(rig, "m-big", large_request())
    failed = await rig.store.get("m-big")
    assert failed is not None and failed.payload_ref is not None
    kept = failed.payload_ref

    replays = await asyncio.gather(*(rig.operations.replay("m-big") for _ in range(4)))
    assert {r.status for r in replays} == {MessageStatus.queued}
    assert await blob_bytes(rig.queue, kept) is not None
    assert await deliver_all(rig) == ["sent"]
    assert len(rig.transport.sent) == 1


async def test_a_take_back_after_a_worker_took_the_copy_keeps_its_payload(
    rig: Rig, settings: Settings
) -> None:
    """An intake that takes back a copy a worker already received must not delete the copy's
    payload from under it."""
    sent = await rig.queue.enqueue(
        Envelope(id="m-taken", created_at=datetime.now(UTC), request=large_request())
    )
    assert sent.created_payload is not None
    received = [m async for m in rig.queue.queue().receive_messages(visibility_timeout=30)]
    assert len(received) == 1  # a worker holds it: its pop receipt changed
    await rig.queue.delete(sent)
    assert await blob_bytes(rig.queue, sent.created_payload) is not None
    outcome = await rig.delivery.handle(received[0].content, queue_message_id=received[0].id)
    assert outcome.action == "sent"


# --- 2. failed only once its payload is kept, and the report is never lost ---------------------


class PoisonRefused(MailQueue):
    """A queue whose poison queue cannot be written, ``failures`` times."""

    failures = 1

    async def enqueue(
        self, envelope: Envelope, *, delay: timedelta | None = None, poison: bool = False
    ) -> SentMessage:
        if poison and self.failures:
            self.failures -= 1
            raise ConnectionError("the poison queue is unreachable")
        return await super().enqueue(envelope, delay=delay, poison=poison)


async def test_a_failure_whose_report_is_lost_is_reported_by_the_redelivered_copy(
    settings: Settings, store: StateStore
) -> None:
    queue = PoisonRefused(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    transport = CountingTransport([DENIED])
    delivery = Delivery(settings, queue, transport, store)
    operations = Operations(queue, store)
    try:
        await queue.enqueue(
            Envelope(id="m-lost", created_at=datetime.now(UTC), request=sample_request())
        )
        message = await pull(queue)
        assert message is not None
        with pytest.raises(ConnectionError):  # a crash: the host redelivers this very message
            await delivery.handle(message.content, queue_message_id=message.id)
        failed = await store.get("m-lost")
        assert failed is not None and failed.status is MessageStatus.failed
        assert failed.payload_ref is not None and not failed.reported
        # already replayable: the payload was kept before anyone could see "failed"
        replay = await operations.replay("m-lost")
        assert replay.status is MessageStatus.queued
    finally:
        await queue.close()


async def test_a_redelivered_copy_of_an_unreported_failure_reports_it(
    settings: Settings, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    queue = PoisonRefused(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    delivery = Delivery(settings, queue, CountingTransport([DENIED]), store)
    operations = Operations(queue, store)
    try:
        await queue.enqueue(
            Envelope(id="m-rep", created_at=datetime.now(UTC), request=sample_request())
        )
        received = [m async for m in queue.queue().receive_messages(visibility_timeout=1)]
        with pytest.raises(ConnectionError):
            await delivery.handle(received[0].content, queue_message_id=received[0].id)
        # the host hands the same message out again (dequeue count 2)
        again = await delivery.handle(
            received[0].content, queue_message_id=received[0].id, dequeue_count=2
        )
        assert again.action == "poisoned"
        poisoned = await pull(queue, queue.poison_queue_name)
        assert poisoned is not None
        caplog.set_level("ERROR", logger="mailgw.failures")
        record = await operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
        assert record.reported and record.payload_ref is not None
        assert [e["code"] for e in failure_events(caplog, "m-rep")] == ["ErrorSendAsDenied"]
    finally:
        await queue.close()


async def test_failed_is_replayable_the_moment_it_shows(rig: Rig) -> None:
    """Before the poison function has run at all, a failed message already has its payload."""
    await poison(rig, "m-now")
    record = await rig.store.get("m-now")
    assert record is not None and record.status is MessageStatus.failed
    assert record.payload_ref is not None  # before: None until record_failure ran → 409
    assert (await rig.operations.replay("m-now")).status is MessageStatus.queued
    assert await deliver_all(rig) == ["sent"]


# --- 3. scheduled messages age from when they were due -----------------------------------------


async def test_a_scheduled_message_ages_from_when_it_was_due(
    settings: Settings, mail_queue: MailQueue, store: StateStore
) -> None:
    """Accepted 48 h before it is due, its first transient error is retried, not poisoned as
    'still failing after 48 h' (MAILGW_MAX_AGE_SECONDS counts from sendAt)."""
    accepted = datetime.now(UTC) - timedelta(hours=48)
    due = datetime.now(UTC) - timedelta(seconds=1)
    transport = CountingTransport([transient("graph/http-503", "busy")])
    delivery = Delivery(settings, mail_queue, transport, store, retry=RetryPolicy(base_seconds=0))
    request = sample_request(sendAt=due.isoformat())
    await mail_queue.enqueue(Envelope(id="m-sched", created_at=accepted, request=request))
    message = await pull(mail_queue)
    assert message is not None
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "retry"
    record = await store.get("m-sched")
    assert record is not None and record.status is MessageStatus.retrying


# --- 4. failures that vanish ---------------------------------------------------------------------

HOSTILE_JSON = {
    "a 5,000-digit integer": '{"from": "noreply@contoso.com", "x": ' + "9" * 5000 + "}",
    "1,000-deep nesting": '{"metadata": ' + "[" * 1000 + "]" * 1000 + "}",
    "a lone surrogate": '{"from": "noreply@contoso.com", "subject": "\\ud800", "to": ["a@b.c"]}',
}


@pytest.mark.parametrize("text", list(HOSTILE_JSON.values()), ids=list(HOSTILE_JSON))
async def test_hostile_json_is_recorded_failed_with_its_raw_text_kept(rig: Rig, text: str) -> None:
    outcome = await rig.delivery.handle(text, queue_message_id="q-hostile")
    assert outcome.action == "poisoned"
    record = await rig.store.get("q-hostile")
    assert record is not None and record.status is MessageStatus.failed
    assert record.last_error is not None and record.last_error.code.startswith("mailgw/")
    assert record.payload_ref is not None
    kept = await blob_bytes(rig.queue, record.payload_ref)
    assert kept is not None
    # and the poison function records its report without raising
    poisoned = await pull(rig.queue, rig.queue.poison_queue_name)
    assert poisoned is not None
    recorded = await rig.operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    assert recorded.id == "q-hostile" and recorded.reported


@pytest.mark.parametrize("text", list(HOSTILE_JSON.values()), ids=list(HOSTILE_JSON))
async def test_the_poison_function_never_raises_on_content(rig: Rig, text: str) -> None:
    record = await rig.operations.record_failure(text, queue_message_id="q-poison-hostile")
    assert record.status is MessageStatus.failed and record.payload_ref is not None


async def test_what_lands_in_poison_poison_is_recorded_by_the_sweep(rig: Rig) -> None:
    """A poison message whose recording failed maxDequeueCount times (storage down) is moved by
    the host to -poison-poison; the sweep timer records it, so the failure is not lost."""
    poisoned = await poison_report(rig, "m-pp")
    pp = rig.queue.queue(rig.queue.poison_poison_queue_name)
    await pp.create_queue()
    await pp.send_message(poisoned.content)  # as the host moves it, unchanged
    assert await rig.operations.sweep_poison_poison() == 1
    record = await rig.store.get("m-pp")
    assert record is not None and record.reported
    assert await depth(rig.queue, rig.queue.poison_poison_queue_name) == 0
    assert await rig.operations.sweep_poison_poison() == 0


# --- 5. a render failure -------------------------------------------------------------------------


async def test_a_render_failure_is_a_permanent_failure_with_its_reason_not_a_crash(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("the renderer refuses this")

    monkeypatch.setattr(render, "render_mime", refuse)
    from mailgw.transports.outbox import OutboxTransport

    rig.delivery.transport = OutboxTransport(settings.outbox_dir)
    await rig.queue.enqueue(
        Envelope(id="m-render", created_at=datetime.now(UTC), request=sample_request())
    )
    assert await deliver_all(rig) == ["poisoned"]
    record = await rig.store.get("m-render")
    assert record is not None and record.last_error is not None
    assert record.last_error.code == "mailgw/render-failed"
    assert "the renderer refuses this" in record.last_error.message


# --- 6. a message never expires before it is due -------------------------------------------------


async def test_a_message_due_in_almost_seven_days_lives_past_its_due_time(rig: Rig) -> None:
    """The time-to-live is explicit: a message scheduled close to seven days ahead (the longest
    visibility delay) cannot expire before it is due, as it would with the service's default."""
    delay = timedelta(days=6, hours=23)
    envelope = Envelope(id="m-far", created_at=datetime.now(UTC), request=sample_request())
    stored = await rig.queue.enqueue(envelope, delay=delay)
    assert stored.expires_on is not None
    assert stored.expires_on > datetime.now(UTC) + delay + timedelta(days=6)


# --- leaks and small abuses ----------------------------------------------------------------------


class CountingStore(StateStore):
    reads = 0

    async def get(self, message_id: str) -> Any:
        self.reads += 1
        return await super().get(message_id)


async def test_a_well_formed_id_dated_in_the_future_is_unknown_at_once(
    settings: Settings, mail_queue: MailQueue
) -> None:
    """Before, any UUIDv7 id was polled for 3 s as one 'issued seconds ago'; an id dated an hour
    ahead was never issued, so it is looked up once."""
    from mailgw.ids import new_message_id

    store = CountingStore(settings.storage(), settings.state_table)
    ahead = Operations(mail_queue, store, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    try:
        assert await ahead.find(new_message_id()) is None
        assert store.reads == 1
    finally:
        await store.close()
