"""Canceling a message on real Azurite, and its race with a delivery worker.

The cancellation and the start of an attempt are both transitions of the message's record under
the store's ETag check (mailgw/state/machine.py: ``canceled`` and ``start_sending``), so exactly
one of them wins, whichever order their reads and writes interleave in.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rigs import CountingTransport, Rig, outcomes

from mailgw.delivery import Delivery
from mailgw.errors import MessageNotFound, NotCancelable
from mailgw.intake import Intake
from mailgw.models import MessageStatus
from mailgw.operations import Operations
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.state import MessageRecord, Viewer
from mailgw.store import UNREAD, StateStore, Transition
from support import pull, sample_request


class InterleavingStore(StateStore):
    """A store that runs ``before_write`` once, inside the next transition, after the caller's
    read and before its write: what another instance could do in that very gap."""

    before_write: Callable[[], Awaitable[Any]] | None = None

    async def apply(
        self, message_id: str, change: Transition, known: Any = UNREAD
    ) -> tuple[MessageRecord | None, bool]:
        hook, self.before_write = self.before_write, None
        if hook is None:
            return await super().apply(message_id, change, known)
        current = known if isinstance(known, MessageRecord) else await self.get(message_id)
        await hook()  # the other side commits here, between our read and our write
        return await super().apply(message_id, change, current)


@pytest.fixture
async def rig(settings: Settings, mail_queue: MailQueue, store: StateStore) -> AsyncIterator[Rig]:
    racing = InterleavingStore(store.connection, store.table_name)
    transport = CountingTransport([])
    delivery = Delivery(settings, mail_queue, transport, racing)
    yield Rig(mail_queue, racing, transport, delivery, Operations(mail_queue, store))
    await racing.close()


async def _accepted(intake: Intake, **fields: Any) -> str:
    result = await intake.submit(json.dumps(sample_request(**fields)).encode())
    await intake.drain()
    return result.id


async def test_a_canceled_message_is_never_sent_when_its_queued_copy_comes(
    rig: Rig, intake: Intake
) -> None:
    message_id = await _accepted(intake)
    canceled = await rig.operations.cancel(message_id)
    assert canceled.status is MessageStatus.canceled
    copy = await pull(rig.queue)
    assert copy is not None
    for dequeue_count in (1, 3):  # first delivery, and a redelivered copy
        outcome = await rig.delivery.handle(
            copy.content, queue_message_id=copy.id, dequeue_count=dequeue_count
        )
        assert outcome.action == "canceled"
    assert rig.transport.sent == []
    record = await rig.store.get(message_id)
    assert record is not None and record.status is MessageStatus.canceled
    assert outcomes(record) == ["queued", "canceled"]


async def test_cancel_between_the_workers_read_and_its_write_wins(rig: Rig, intake: Intake) -> None:
    """The worker read ``queued`` and is about to write ``sending``; the cancellation commits
    first. The worker's write fails its ETag check, it decides again on ``canceled``, and the
    message is not sent."""
    message_id = await _accepted(intake)
    copy = await pull(rig.queue)
    assert copy is not None
    canceled: list[MessageRecord] = []

    async def cancel() -> None:
        canceled.append(await rig.operations.cancel(message_id))

    assert isinstance(rig.store, InterleavingStore)
    rig.store.before_write = cancel
    outcome = await rig.delivery.handle(copy.content, queue_message_id=copy.id)
    assert [r.status for r in canceled] == [MessageStatus.canceled]
    assert outcome.action == "canceled"
    assert rig.transport.sent == []
    record = await rig.store.get(message_id)
    assert record is not None and record.status is MessageStatus.canceled
    assert record.attempts == 0


async def test_an_attempt_that_started_first_makes_the_cancel_a_conflict(
    rig: Rig, intake: Intake
) -> None:
    """The other order: the cancellation read ``queued``, the worker's ``sending`` commits in the
    gap, and the cancellation decides again: too late (409), the message goes out once."""
    message_id = await _accepted(intake)
    copy = await pull(rig.queue)
    assert copy is not None
    racing = InterleavingStore(rig.store.connection, rig.store.table_name)
    operations = Operations(rig.queue, racing)
    outcomes_seen: list[str] = []

    async def deliver() -> None:
        outcome = await rig.delivery.handle(copy.content, queue_message_id=copy.id)
        outcomes_seen.append(outcome.action)

    racing.before_write = deliver
    with pytest.raises(NotCancelable):
        await operations.cancel(message_id)
    await racing.close()
    assert outcomes_seen == ["sent"]
    assert [m.id for m in rig.transport.sent] == [message_id]


async def test_cancel_answers(rig: Rig, intake: Intake) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await _accepted(intake, sendAt=later)
    first = await rig.operations.cancel(scheduled)
    again = await rig.operations.cancel(scheduled)  # idempotent: its state again
    assert first.status is again.status is MessageStatus.canceled
    assert first.state(datetime.now(UTC)).status is MessageStatus.canceled

    sent = await _accepted(intake)
    copy = await pull(rig.queue)
    while copy is not None:
        await rig.delivery.handle(copy.content, queue_message_id=copy.id)
        copy = await pull(rig.queue)
    with pytest.raises(NotCancelable, match="sent"):
        await rig.operations.cancel(sent)
    with pytest.raises(MessageNotFound):
        await rig.operations.cancel("0190f0c8-0000-7000-8000-000000000000")
    with pytest.raises(MessageNotFound):
        await rig.operations.cancel("not/an id")


async def test_another_apps_message_cannot_be_canceled(rig: Rig, intake: Intake) -> None:
    result = await intake.submit(json.dumps(sample_request()).encode(), owner="app-a")
    await intake.drain()
    with pytest.raises(MessageNotFound):
        await rig.operations.cancel(result.id, Viewer("app-b"))
    # Messages.ReadAll reads others' messages; it does not call them back (the adapter passes
    # an owner-only viewer), and the owner itself can.
    canceled = await rig.operations.cancel(result.id, Viewer("app-a"))
    assert canceled.status is MessageStatus.canceled
