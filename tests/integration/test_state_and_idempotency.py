"""State records, idempotency and the message life cycle on real Azurite (no host).

StateStore CRUD and expiry, the public view, optimistic concurrency under contention, the
Idempotency-Key contract through Intake, and the states Delivery leaves behind for every outcome
(sent, retried, failed, duplicate, deferred, resumed after a crash, keyed orphan).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from mailgw.delivery import CLAIM_GRACE, Delivery, Outcome, RetryPolicy
from mailgw.ids import new_message_id
from mailgw.intake import Intake, request_hash
from mailgw.models import Envelope, ErrorInfo, MessageStatus, PayloadRef, SubmitResult
from mailgw.queue import MailQueue, SentMessage
from mailgw.settings import Settings
from mailgw.state import Attempt, MessageRecord, machine
from mailgw.store import StateStore
from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.errors import permanent, transient
from mailgw.transports.outbox import OutboxTransport
from support import (
    RETENTION,
    TEST_SEAL,
    TransportDefaults,
    depth,
    new_record,
    pull,
    raises_problem,
    sample_request,
    sealed,
    wait_until_async,
)

# --- helpers ------------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand (``StateStore(clock=...)``, ``Intake(clock=...)``)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class ObservingTransport(TransportDefaults):
    """Records the state the store shows while the transport runs; fails as scripted first."""

    store: StateStore
    failures: list[Exception]
    name: str = "observing"

    def __post_init__(self) -> None:
        self.sent: list[OutboundMessage] = []
        self.seen: list[MessageStatus | None] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        record = await self.store.get(message.id)
        self.seen.append(record.status if record else None)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return SendReceipt(self.name, "accepted")


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


async def submit(intake: Intake, document: dict[str, Any], key: str | None = None) -> SubmitResult:
    """Submit, then wait for the intake's background state write, so tests see a settled store."""
    result = await intake.submit(
        body_of(document), content_type="application/json", idempotency_key=key
    )
    await intake.drain()
    return result


def outcomes(record: MessageRecord | None) -> list[str]:
    assert record is not None
    return [step.outcome for step in record.history]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def clocked_store(settings: Settings, clock: Clock) -> AsyncIterator[StateStore]:
    state = StateStore(settings.storage(), f"itc{uuid.uuid4().hex[:12]}", clock=clock)
    yield state
    await state.close()


@pytest.fixture
def clocked_intake(
    settings: Settings, mail_queue: MailQueue, clocked_store: StateStore, clock: Clock
) -> Intake:
    return Intake(settings, mail_queue, clocked_store, clock=clock)


@pytest.fixture
def observing(store: StateStore) -> ObservingTransport:
    return ObservingTransport(store, [])


@pytest.fixture
def observed_delivery(
    settings: Settings, mail_queue: MailQueue, store: StateStore, observing: ObservingTransport
) -> Delivery:
    return Delivery(
        settings,
        mail_queue,
        observing,
        store,
        retry=RetryPolicy(max_attempts=3, base_seconds=0.0),
    )


@dataclass
class Life:
    """The delivery-state tests' world: intake, queue and store on Azurite, and the Delivery that
    sends through the observing transport."""

    intake: Intake
    queue: MailQueue
    store: StateStore
    transport: ObservingTransport
    delivery: Delivery

    async def submit(
        self, document: dict[str, Any] | None = None, key: str | None = None
    ) -> SubmitResult:
        return await submit(self.intake, sample_request() if document is None else document, key)

    async def next_message(self) -> Any:
        """The next visible queue message (there must be one)."""
        message = await pull(self.queue)
        assert message is not None
        return message

    async def handle(self, message: Any, **options: Any) -> Outcome:
        """One queue-trigger invocation on ``message`` (``dequeue_count=...``)."""
        return await self.delivery.handle(message.content, queue_message_id=message.id, **options)

    async def deliver_next(self) -> Outcome:
        return await self.handle(await self.next_message())

    async def record(self, message_id: str) -> MessageRecord:
        record = await self.store.get(message_id)
        assert record is not None
        return record

    def sent_ids(self) -> list[str]:
        """The ids the transport sent, in order."""
        return [m.id for m in self.transport.sent]


@pytest.fixture
def life(
    intake: Intake,
    mail_queue: MailQueue,
    store: StateStore,
    observing: ObservingTransport,
    observed_delivery: Delivery,
) -> Life:
    return Life(intake, mail_queue, store, observing, observed_delivery)


# --- StateStore: CRUD, public view, concurrency, expiry -------------------------------------------


async def test_record_round_trips_every_field(store: StateStore) -> None:
    assert await store.get("nothing-yet") is None  # not even a table: absent, not an error
    now = datetime.now(UTC)
    record = new_record(
        "m-crud",
        MessageStatus.retrying,
        attempts=2,
        send_at=now + timedelta(hours=1),
        sender="noreply@contoso.com",
        last_error=ErrorInfo(code="Timeout", message="slow", hint="wait"),
        metadata={"orderId": "42", "ünï": "cödé"},
        history=[Attempt(at=now, outcome="queued"), Attempt(at=now, outcome="retry", code="T")],
        ambiguous=True,
        source="queue",
        replays=1,
        request_hash="ab" * 32,
        payload_ref=PayloadRef(container="c", blob="m-crud.json", sha256="00" * 32, size=12),
        checkpoint={"draftId": "AAMk", "stage": "ready"},
        lease="lease-1",
    )
    assert await store.create(record) is True
    assert await store.create(record) is False  # one record per message
    stored = await store.get("m-crud")
    assert stored is not None and stored.etag
    assert stored.model_dump(exclude={"etag"}) == record.model_dump(exclude={"etag"})
    await store.delete("m-crud")
    assert await store.get("m-crud") is None
    await store.delete("m-crud")  # deleting twice is fine


async def test_records_lists_by_status_newest_first(store: StateStore) -> None:
    for n, status in enumerate([MessageStatus.failed, MessageStatus.sent, MessageStatus.failed]):
        record = new_record(f"m-{n}", status)
        record.created_at += timedelta(seconds=n)
        assert await store.create(record)
    assert [r.id for r in await store.records(MessageStatus.failed)] == ["m-2", "m-0"]
    assert [r.id for r in await store.records()] == ["m-2", "m-1", "m-0"]
    assert [r.id for r in await store.records(limit=1)] == ["m-2"]


async def test_public_view_hides_internals_and_turns_scheduled_into_queued(
    store: StateStore,
) -> None:
    now = datetime.now(UTC)
    record = new_record(
        "m-pub",
        MessageStatus.scheduled,
        send_at=now + timedelta(minutes=5),
        sender="noreply@contoso.com",
        metadata={"orderId": "42"},
        request_hash="ff" * 32,
        checkpoint={"draftId": "x"},
        lease="secret-lease",
        payload_ref=PayloadRef(container="c", blob="b", sha256="00" * 32, size=1),
    )
    await store.create(record)
    stored = await store.get("m-pub")
    assert stored is not None
    before = stored.public(now)
    assert before["status"] == "scheduled"
    assert set(before) == {
        "id",
        "status",
        "attempts",
        "createdAt",
        "updatedAt",
        "sendAt",
        "lastError",
        "metadata",
        "history",
        "ambiguous",
        "replays",
    }
    assert before["metadata"] == {"orderId": "42"}
    assert "secret-lease" not in json.dumps(before)
    after = stored.public(now + timedelta(minutes=5))  # sendAt reached: it is waiting to go
    assert after["status"] == "queued"
    stored.status = MessageStatus.sending
    assert stored.public(now + timedelta(days=1))["status"] == "sending"
    stored.status, stored.send_at = MessageStatus.scheduled, None
    assert stored.public(now)["status"] == "queued"


async def test_20_concurrent_transitions_on_one_record_are_all_applied(store: StateStore) -> None:
    await store.create(new_record("m-hot", MessageStatus.queued))

    def bump(n: int) -> Callable[[MessageRecord | None], MessageRecord | None]:
        def change(current: MessageRecord | None) -> MessageRecord | None:
            assert current is not None
            bumped = current.model_copy(
                update={
                    "attempts": current.attempts + 1,
                    "metadata": {**current.metadata, f"w{n}": str(n)},
                }
            )
            return bumped.with_step("bump", datetime.now(UTC), f"w{n}")

        return change

    results = await asyncio.gather(*(store.transition("m-hot", bump(n)) for n in range(20)))
    assert all(r is not None for r in results)
    final = await store.get("m-hot")
    assert final is not None
    assert final.attempts == 20  # no lost update
    assert final.metadata == {f"w{n}": str(n) for n in range(20)}
    assert sorted(s.code or "" for s in final.history) == sorted(f"w{n}" for n in range(20))


async def test_transition_returning_none_writes_nothing(store: StateStore) -> None:
    await store.create(new_record("m-same", MessageStatus.sent))
    before = await store.get("m-same")
    assert before is not None
    after = await store.transition("m-same", lambda current: None)
    assert after is not None and after.etag == before.etag
    assert await store.transition("m-absent", lambda current: None) is None
    assert await store.get("m-absent") is None


async def test_a_created_record_carries_its_etag_and_a_stale_one_is_read_again(
    store: StateStore,
) -> None:
    """Intake confirms a keyed message from the record it just wrote, without reading it back;
    had anyone changed the row since, the ETag check fails and the change applies to theirs."""
    record = new_record("m-etag", MessageStatus.queued)
    assert await store.create(record)
    stored = await store.get("m-etag")
    assert stored is not None and record.etag is not None and record.etag == stored.etag

    # someone else writes first; the change built on the stale copy must not undo their step
    await store.transition("m-etag", lambda r: r and r.with_step("other", store.clock()))
    after = await store.transition(
        "m-etag", lambda r: r and r.with_step("mine", store.clock()), known=record
    )
    assert after is not None
    assert [step.outcome for step in after.history][-2:] == ["other", "mine"]

    # a known record without its ETag (a store that answered none) is read again, not trusted
    record.etag = None
    again = await store.transition(
        "m-etag", lambda r: r and r.with_step("again", store.clock()), known=record
    )
    assert again is not None
    assert [step.outcome for step in again.history][-3:] == ["other", "mine", "again"]


async def test_records_expire_read_as_absent_and_are_purged(
    clocked_intake: Intake, clocked_store: StateStore, clock: Clock
) -> None:
    store = clocked_store
    await store.create(new_record("m-old", MessageStatus.sent, now=clock.now))
    keeper = new_record("m-keep", MessageStatus.failed, now=clock.now)
    keeper.expires_at = clock.now + timedelta(days=90)
    await store.create(keeper)
    keyed = await submit(clocked_intake, sample_request(), key="expiring-key")
    await clocked_intake.drain()
    assert await store.get(keyed.id) is not None

    clock.advance(timedelta(hours=25))  # past the key's 24 h, well within the 30 days
    assert await store.get("m-old") is not None
    assert await store.get(keyed.id) is not None

    clock.advance(RETENTION)
    assert await store.get("m-old") is None  # expired: reads as absent
    assert await store.get(keyed.id) is None
    assert [r.id for r in await store.records()] == ["m-keep"]
    purged = await store.purge_expired()
    assert sorted(p.message_id for p in purged) == sorted(["m-old", keyed.id])
    clock.now = datetime.now(UTC)  # back to today: the rows are really gone, not just expired
    assert await store.get("m-old") is None
    assert await store.get(keyed.id) is None
    assert await store.get("m-keep") is not None
    assert await store.purge_expired() == []


async def test_transition_on_an_expired_record_starts_afresh(
    clocked_store: StateStore, clock: Clock
) -> None:
    """An expired record reads as absent, so a transition must see None and store its result
    (not spin on the row that is still there until 'too many concurrent changes')."""
    store = clocked_store
    await store.create(new_record("m-exp", MessageStatus.sent, now=clock.now))
    clock.advance(RETENTION + timedelta(days=1))
    envelope = Envelope(id="m-exp", created_at=clock.now, raw="x", source="queue")
    error = ErrorInfo(code="mailgw/invalid-message", message="bad", hint="fix it")
    failed = partial(
        machine.failed, envelope=envelope, error=error, now=clock.now, retention=RETENTION
    )
    updated = await store.transition("m-exp", failed)
    assert updated is not None
    assert updated.status is MessageStatus.failed
    assert updated.expires_at > clock.now


# --- Idempotency-Key through Intake ------------------------------------------------------------


async def test_same_key_and_body_answers_the_first_response_and_enqueues_once(
    intake: Intake, mail_queue: MailQueue, store: StateStore
) -> None:
    document = sample_request(metadata={"orderId": "7"})
    first = await submit(intake, document, key="order-7")
    # The same JSON with other key order and spacing is the same request.
    reordered = json.dumps(dict(reversed(list(document.items()))), indent=2).encode()
    second = await intake.submit(
        reordered, content_type="application/json", idempotency_key="order-7"
    )
    third = await submit(intake, document, key="order-7")
    await intake.drain()
    assert first == second == third
    assert first.status is MessageStatus.queued
    assert await depth(mail_queue) == 1
    assert [r.id for r in await store.records()] == [first.id]
    message = await pull(mail_queue)
    assert Envelope.model_validate_json(message.content).id == first.id


async def test_same_key_with_another_body_is_422_and_enqueues_nothing(
    intake: Intake, mail_queue: MailQueue, store: StateStore
) -> None:
    first = await submit(intake, sample_request(), key="k-422")
    with raises_problem() as reused:
        await submit(intake, sample_request(subject="another"), key="k-422")
    assert reused.value.status == 422
    assert reused.value.type == "urn:mailgw:problem:idempotency-key-reused"
    await intake.drain()
    assert await depth(mail_queue) == 1
    assert [r.id for r in await store.records()] == [first.id]
    record = await store.get(first.id)
    assert record is not None and record.status is MessageStatus.queued
    # a different key is a different message
    other = await submit(intake, sample_request(subject="another"), key="k-other")
    assert other.id != first.id
    assert await depth(mail_queue) == 2


async def test_20_concurrent_submits_with_one_key_make_one_message(
    intake: Intake, mail_queue: MailQueue, store: StateStore
) -> None:
    document = sample_request(subject="concurrent")
    results = await asyncio.gather(
        *(submit(intake, document, key="burst") for _ in range(20)), return_exceptions=True
    )
    await intake.drain()
    assert [r for r in results if isinstance(r, BaseException)] == []
    ids = {r.id for r in results if isinstance(r, SubmitResult)}
    assert len(ids) == 1
    (message_id,) = ids
    assert await depth(mail_queue) == 1
    assert [r.id for r in await store.records()] == [message_id]


class PickedUpQueue(MailQueue):
    """A queue whose worker receives every message the instant it is enqueued: the dev host
    (or Azure) polling between a duplicate intake's enqueue and its clean-up."""

    async def enqueue(
        self, envelope: Envelope, *, delay: timedelta | None = None, poison: bool = False
    ) -> SentMessage:
        sent = await super().enqueue(envelope, delay=delay, poison=poison)
        async for _ in self.queue().receive_messages(visibility_timeout=30):
            break  # received (new pop receipt), still being processed
        return sent


async def test_duplicate_submit_answers_the_first_even_if_a_worker_already_took_its_copy(
    intake: Intake, settings: Settings, store: StateStore, mail_queue: MailQueue
) -> None:
    """A retried POST must get the first 202 back; a worker that happened to receive the
    duplicate's queue copy before the intake took it back must not turn that into a 500."""
    first = await submit(intake, sample_request(), key="raced")
    await intake.drain()
    await pull(mail_queue)  # the first request's message is delivered and gone
    busy_queue = PickedUpQueue(
        settings.storage(), settings.queue, settings.payload_container, TEST_SEAL
    )
    try:
        racing = Intake(settings, busy_queue, store)
        again = await submit(racing, sample_request(), key="raced")
        await racing.drain()
    finally:
        await busy_queue.close()
    assert again == first


class StuckQueue(MailQueue):
    """An enqueue that never completes: the intake's process dies between its two writes."""

    async def enqueue(
        self, envelope: Envelope, *, delay: timedelta | None = None, poison: bool = False
    ) -> SentMessage:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_retry_after_the_first_request_died_between_its_writes_is_accepted_once(
    intake: Intake,
    settings: Settings,
    store: StateStore,
    mail_queue: MailQueue,
    observing: ObservingTransport,
    observed_delivery: Delivery,
) -> None:
    stuck = StuckQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    dying = asyncio.ensure_future(submit(Intake(settings, stuck, store), sample_request(), "crash"))
    await wait_until_async(store.records, timeout=10, what="the first request's record")
    dying.cancel()  # the process is gone: its record was written, its message never was
    with pytest.raises(asyncio.CancelledError):
        await dying
    assert await depth(mail_queue) == 0
    (orphan,) = await store.records()

    retried = await submit(intake, sample_request(), key="crash")
    await intake.drain()
    assert retried.id == orphan.id
    assert await depth(mail_queue) == 1  # the retry's copy stands in for the lost message
    again = await submit(intake, sample_request(), key="crash")
    await intake.drain()
    assert again == retried
    assert await depth(mail_queue) == 1
    while (message := await pull(mail_queue)) is not None:
        await observed_delivery.handle(message.content, queue_message_id=message.id)
    assert [m.id for m in observing.sent] == [retried.id]


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "clé-ünïcode", "tab\there", "new\nline", "\x7f"],
    ids=["256-chars", "empty", "non-ascii", "tab", "newline", "del"],
)
async def test_invalid_idempotency_key_is_400_and_enqueues_nothing(
    intake: Intake, mail_queue: MailQueue, key: str
) -> None:
    with raises_problem() as bad:
        await submit(intake, sample_request(), key=key)
    assert bad.value.status == 400
    assert bad.value.type == "urn:mailgw:problem:invalid-idempotency-key"
    assert [e.field for e in bad.value.errors] == ["Idempotency-Key"]
    assert await depth(mail_queue) == 0


async def test_longest_and_oddest_valid_keys_are_accepted(
    intake: Intake, mail_queue: MailQueue
) -> None:
    for key in ("k" * 255, " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"):
        first = await submit(intake, sample_request(), key=key)
        assert await submit(intake, sample_request(), key=key) == first
    await intake.drain()
    assert await depth(mail_queue) == 2


async def test_an_expired_key_makes_a_new_message(
    clocked_intake: Intake, clocked_store: StateStore, mail_queue: MailQueue, clock: Clock
) -> None:
    first = await submit(clocked_intake, sample_request(), key="daily")
    clock.advance(timedelta(hours=23, minutes=59))
    assert await submit(clocked_intake, sample_request(), key="daily") == first
    await clocked_intake.drain()
    assert await depth(mail_queue) == 1
    clock.advance(timedelta(minutes=2))  # 24 h and a minute: the key may be used again
    second = await submit(clocked_intake, sample_request(subject="new"), key="daily")
    assert second.id != first.id
    await clocked_intake.drain()
    assert await depth(mail_queue) == 2
    assert await submit(clocked_intake, sample_request(subject="new"), key="daily") == second
    with raises_problem() as reused:
        await submit(clocked_intake, sample_request(), key="daily")
    assert reused.value.status == 422  # the key now belongs to the new body
    await clocked_intake.drain()
    assert await depth(mail_queue) == 2
    assert sorted(r.id for r in await clocked_store.records()) == sorted([first.id, second.id])


async def test_a_live_key_keeps_its_message_when_an_older_use_is_purged(
    clocked_intake: Intake, clocked_store: StateStore, mail_queue: MailQueue, clock: Clock
) -> None:
    """Idempotency must not depend on the retention clean-up: a retry within the key's 24 h
    answers the first response even if the record of an older use of the key was just purged."""
    await submit(clocked_intake, sample_request(subject="month ago"), key="monthly")
    clock.advance(RETENTION + timedelta(hours=1))  # that record has now expired
    current = await submit(clocked_intake, sample_request(subject="today"), key="monthly")
    await clocked_intake.drain()
    await clocked_store.purge_expired()  # the daily clean-up runs
    clock.advance(timedelta(hours=1))
    retried = await submit(clocked_intake, sample_request(subject="today"), key="monthly")
    await clocked_intake.drain()
    assert retried == current
    assert await depth(mail_queue) == 2  # the month-old message and today's, nothing more


async def test_first_message_of_a_key_is_still_delivered_after_the_expired_key_is_reused(
    clocked_intake: Intake,
    clocked_store: StateStore,
    mail_queue: MailQueue,
    settings: Settings,
    clock: Clock,
) -> None:
    """A keyed message still in the queue after its key expired (scheduled up to 7 days ahead,
    or retried for up to MAILGW_MAX_AGE_SECONDS) is not the losing duplicate of a later request
    that reused the expired key: it was accepted with 202, so it is sent."""
    first = await submit(clocked_intake, sample_request(subject="first"), key="reused")
    message = await pull(mail_queue)  # e.g. the scheduled copy, taken when its sendAt comes
    clock.advance(timedelta(hours=25))
    second = await submit(clocked_intake, sample_request(subject="second"), key="reused")
    await clocked_intake.drain()
    assert second.id != first.id
    transport = ObservingTransport(clocked_store, [])
    delivery = Delivery(settings, mail_queue, transport, clocked_store, clock=clock)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "sent", outcome
    while (other := await pull(mail_queue)) is not None:
        assert (await delivery.handle(other.content, queue_message_id=other.id)).action == "sent"
    assert [m.id for m in transport.sent] == [first.id, second.id]
    assert [m.request.subject for m in transport.sent] == ["first", "second"]


# --- the states delivery leaves ------------------------------------------------------------------


async def test_sent_goes_queued_sending_sent(life: Life) -> None:
    result = await life.submit(sample_request(metadata={"orderId": "1"}))
    queued = await life.record(result.id)
    assert queued.status is MessageStatus.queued and queued.attempts == 0
    outcome = await life.deliver_next()
    assert outcome.action == "sent"
    assert life.transport.seen == [MessageStatus.sending]  # recorded before the transport runs
    sent = await life.record(result.id)
    assert sent.status is MessageStatus.sent
    assert (sent.attempts, sent.lease, sent.last_error) == (1, None, None)
    assert outcomes(sent) == ["queued", "sending", "sent"]
    assert sent.metadata == {"orderId": "1"}
    assert sent.public(datetime.now(UTC))["status"] == "sent"


async def test_transient_failure_goes_retrying_then_sent(life: Life) -> None:
    life.transport.failures.append(
        transient("ServiceUnavailable", "busy", hint="wait", retry_after=0)
    )
    result = await life.submit()
    outcome = await life.deliver_next()
    assert outcome.action == "retry"
    retrying = await life.record(result.id)
    assert retrying.status is MessageStatus.retrying
    assert retrying.last_error is not None and retrying.last_error.code == "ServiceUnavailable"
    assert retrying.lease is None
    second = await life.next_message()
    assert Envelope.model_validate_json(second.content).attempt == 1
    outcome = await life.handle(second)
    assert outcome.action == "sent"
    sent = await life.record(result.id)
    assert sent.status is MessageStatus.sent
    assert sent.attempts == 2
    assert outcomes(sent) == ["queued", "sending", "retry", "sending", "sent"]
    assert life.transport.seen == [MessageStatus.sending, MessageStatus.sending]
    assert life.sent_ids() == [result.id]


async def test_permanent_failure_goes_failed_with_error_and_hint(life: Life) -> None:
    life.transport.failures.append(
        permanent("ErrorSendAsDenied", "no send as", hint="grant Send As")
    )
    result = await life.submit()
    outcome = await life.deliver_next()
    assert outcome.action == "poisoned"
    failed = await life.record(result.id)
    assert failed.status is MessageStatus.failed
    assert failed.last_error == ErrorInfo(
        code="ErrorSendAsDenied", message="no send as", hint="grant Send As"
    )
    assert outcomes(failed) == ["queued", "sending", "failed"]
    view = failed.public(datetime.now(UTC))
    assert view["lastError"] == {
        "code": "ErrorSendAsDenied",
        "message": "no send as",
        "hint": "grant Send As",
    }
    assert await depth(life.queue, life.queue.poison_queue_name) == 1
    assert await depth(life.queue) == 0


async def test_redelivered_copy_of_a_sent_message_is_a_duplicate(life: Life) -> None:
    result = await life.submit()
    message = await life.next_message()
    assert (await life.handle(message)).action == "sent"
    for dequeue_count in (1, 2, 5):  # the delete was lost: the host hands it out again
        again = await life.handle(message, dequeue_count=dequeue_count)
        assert (again.action, again.detail) == ("duplicate", "already sent")
    assert life.sent_ids() == [result.id]
    record = await life.record(result.id)
    assert record.attempts == 1
    assert await depth(life.queue) == 0


async def test_copy_arriving_while_another_worker_sends_is_deferred(life: Life) -> None:
    result = await life.submit()
    message = await life.next_message()
    life.transport.gate = asyncio.Event()
    worker = asyncio.create_task(life.handle(message))
    await asyncio.wait_for(life.transport.entered.wait(), 10)
    holding = await life.record(result.id)
    assert holding.status is MessageStatus.sending and holding.lease
    # A second copy (a retry timer firing twice, a producer's duplicate) while the first sends:
    copy = await life.handle(message, dequeue_count=1)
    assert copy.action == "deferred"
    assert copy.delay == 30.0
    assert life.transport.sent == []
    still = await life.record(result.id)
    assert (still.lease, still.attempts) == (holding.lease, 1)
    assert await depth(life.queue) == 1  # the copy waits, invisible, for its next look
    life.transport.gate.set()
    assert (await asyncio.wait_for(worker, 10)).action == "sent"
    assert life.sent_ids() == [result.id]


class Crash(Exception):
    """Not a DeliveryError: the worker dies with the message in flight (as the host sees it)."""


async def test_crashed_attempt_is_resumed_by_its_redelivery_and_sent_once(life: Life) -> None:
    life.transport.failures.append(Crash("worker died"))
    result = await life.submit()
    message = await life.next_message()
    with pytest.raises(Crash):
        await life.handle(message)
    left = await life.record(result.id)
    assert left.status is MessageStatus.sending
    # The host hands the same queue message out again (dequeue count 2): the crash's leftover
    # 'sending' is taken over at once instead of waiting 15 minutes.
    outcome = await life.handle(message, dequeue_count=2)
    assert outcome.action == "sent"
    assert life.sent_ids() == [result.id]
    sent = await life.record(result.id)
    assert sent.status is MessageStatus.sent
    assert sent.attempts == 2
    assert outcomes(sent) == ["queued", "sending", "resumed", "sending", "sent"]


async def test_keyed_copy_of_a_losing_body_is_not_sent(life: Life) -> None:
    winner = await life.submit(key="orphan-key")
    # The 422 loser's queue copy has the winner's id (derived from the key) but its own body;
    # its intake died before taking it back.
    loser_body = sample_request(subject="another body")
    orphan = Envelope(
        id=winner.id,
        created_at=datetime.now(UTC) - timedelta(minutes=5),
        request=loser_body,
        request_hash=request_hash(loser_body),
    )
    outcome = await life.delivery.handle(await sealed(orphan), queue_message_id="q-orphan")
    assert (outcome.action, outcome.message_id) == ("duplicate", winner.id)
    assert life.transport.sent == []
    untouched = await life.record(winner.id)
    assert (untouched.status, untouched.attempts) == (MessageStatus.queued, 0)
    # the winner's own message still goes out, once, with the winner's body
    assert (await life.deliver_next()).action == "sent"
    sent = [(m.id, m.request.subject) for m in life.transport.sent]
    assert sent == [(winner.id, "Your receipt")]


async def test_keyed_message_whose_intake_died_before_recording_waits_then_is_sent(
    life: Life,
) -> None:
    document = sample_request()
    fresh = Envelope(
        id=new_message_id(),
        created_at=datetime.now(UTC),
        request=document,
        request_hash=request_hash(document),
    )
    early = await life.delivery.handle(await sealed(fresh), queue_message_id="q-1")
    assert early.action == "deferred"  # its record may still be on the way
    assert early.delay == (CLAIM_GRACE / 3).total_seconds()
    assert life.transport.sent == []
    assert await depth(life.queue) == 1
    old = fresh.model_copy(update={"created_at": datetime.now(UTC) - CLAIM_GRACE * 2})
    late = await life.delivery.handle(await sealed(old), queue_message_id="q-1")
    assert late.action == "sent"  # accepted by its queue write: deliver, never drop
    assert life.sent_ids() == [fresh.id]


async def test_outbox_delivery_through_intake_leaves_one_eml(
    intake: Intake, mail_queue: MailQueue, delivery: Delivery, outbox: OutboxTransport
) -> None:
    result = await submit(intake, sample_request(), key="eml-once")
    assert await submit(intake, sample_request(), key="eml-once") == result
    while (message := await pull(mail_queue)) is not None:
        await delivery.handle(message.content, queue_message_id=message.id)
    assert sorted(p.name for p in Path(outbox.directory).glob("*.eml")) == [f"{result.id}.eml"]
