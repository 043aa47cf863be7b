"""What operators do with failed messages: record them from the poison queue, replay, clean up.

Used by the poison-queue trigger, the replay endpoint, the maintenance timer and the ``mailgw``
command alike, so each rule exists once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from mailgw import telemetry
from mailgw.delivery import failure
from mailgw.errors import GatewayError, MessageNotFound, NotCancelable, NotReplayable
from mailgw.events import Events
from mailgw.ids import could_be_message_id, issued_at
from mailgw.models import Envelope, ErrorInfo, MessageStatus
from mailgw.queue import MailQueue
from mailgw.state import machine
from mailgw.state.events import EventKind
from mailgw.state.record import MessageRecord, Viewer
from mailgw.store import StateStore

log = logging.getLogger("mailgw.failures")

#: The prefix of the one log line per failed message; the KQL in docs/operations.md keys on it.
FAILURE_EVENT = "MAILGW_FAILED"

#: An id issued this recently may not have its record yet; a lookup waits at most FRESH_ID_WAIT.
FRESH_ID_WINDOW = timedelta(seconds=30)
FRESH_ID_WAIT = timedelta(seconds=3)
#: Instances' clocks may differ by this much: an id this far "ahead" may still be ours.
CLOCK_SKEW = timedelta(seconds=2)

CRASH_LOOP = ErrorInfo(
    code="mailgw/max-dequeue-exceeded",
    message="the delivery function failed on this message maxDequeueCount times (it crashed, "
    "timed out, or could not read it) and the Functions host moved it to the poison queue",
    hint="look up the exceptions logged for this message id, fix the cause, then replay it",
)


@dataclass
class Operations:
    queue: MailQueue
    store: StateStore
    retention: timedelta = timedelta(days=30)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: the configured transport (MAILGW_TRANSPORT): the failed-messages metric is by transport
    transport: str = ""
    events: Events = field(default_factory=Events)

    async def record_failure(self, body: bytes | str, *, queue_message_id: str) -> MessageRecord:
        """A poison-queue message: its payload kept (so it can be replayed once the poison
        message is gone), the message ``failed`` with its reason, one failure event logged.

        Never raises on content: a message that is not the gateway's sealed envelope is recorded
        under its own queue message id with the reason; only a storage failure raises (the host
        retries, then moves it to ``-poison-poison``, which :meth:`sweep_poison_poison` reads)."""
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        now = self.clock()
        try:
            envelope = await self.queue.read(text, queue_message_id, now)
            error = envelope.error
        except GatewayError as refused:
            envelope = Envelope(id=queue_message_id, created_at=now, raw=text, source="queue")
            error = failure(refused)
        with telemetry.recording_failure(envelope):
            return await self._record_failure(envelope, error, now, queue_message_id)

    async def _record_failure(
        self, envelope: Envelope, error: ErrorInfo | None, now: datetime, queue_message_id: str
    ) -> MessageRecord:
        current = await self.store.get(envelope.id)
        if machine.superseded(current, envelope):
            log.warning(
                "poison message %s for %s: superseded, nothing to record",
                queue_message_id,
                envelope.id,
            )
            assert current is not None
            return current
        failed_already = current is not None and current.status is MessageStatus.failed
        if error is None:  # moved here unchanged by the host, after a crash loop
            error = current.last_error if failed_already and current else None
            error = error or CRASH_LOOP
        kept = current.payload_ref if failed_already and current else None
        failed = partial(
            machine.failed,
            envelope=envelope,
            error=error,
            now=now,
            retention=self.retention,
            payload=kept or await self.queue.store_payload(envelope),
        )
        record = await self.store.transition(envelope.id, failed, current)
        assert record is not None  # failed creates the record when there is none
        await self.events.emit(record, EventKind.failed)  # again, if delivery reported it first
        record, first_report = await self.store.apply(envelope.id, machine.reported, record)
        if first_report and record is not None:
            log.error("%s %s", FAILURE_EVENT, json.dumps(failure_event(record)))
        assert record is not None
        telemetry.failure_recorded(record, counted=first_report, transport=self.transport)
        return record

    async def sweep_poison_poison(self, limit: int = 500) -> int:
        """Record what the host moved to ``<queue>-poison-poison``: poison messages whose recording
        failed ``maxDequeueCount`` times (a storage outage), or that the host could not even
        decode. Nothing else reads that queue, so one message must never block the others: each
        is read as it is (Base64 if it is, its text otherwise) and a message that still cannot be
        recorded is left for the next sweep, the rest going on."""
        client = self.queue.raw_queue(self.queue.poison_poison_queue_name)
        swept = 0
        try:
            async for message in client.receive_messages(
                messages_per_page=32, visibility_timeout=120, max_messages=limit
            ):
                try:
                    await self.record_failure(
                        host_text(message.content), queue_message_id=message.id
                    )
                    await client.delete_message(message)
                except Exception:
                    log.exception("poison-poison message %s not recorded; next sweep", message.id)
                    continue
                swept += 1
        except ResourceNotFoundError:
            return swept  # the queue does not exist: nothing was ever moved there
        return swept

    async def replay(self, message_id: str, viewer: Viewer | None = None) -> MessageRecord:
        """Send a failed message again: history kept, attempt budget reset. Idempotent: replaying
        a message whose replay is already under way changes nothing and enqueues nothing. Another
        app's message is as unknown to ``viewer`` as one that does not exist."""
        record = await self.store.get(message_id) if could_be_message_id(message_id) else None
        if record is None or not record.visible_to(viewer):
            raise not_found(message_id)
        if record.status is not MessageStatus.failed:
            if record.replays and record.status is not MessageStatus.sent:
                return record  # a replay is already on its way
            raise NotReplayable(
                f"Only failed messages can be replayed; this one is {record.status.value}."
            )
        if record.payload_ref is None:
            raise NotReplayable(
                "The payload of this message was not kept, so it cannot be sent again."
            )
        number = record.replays + 1
        now = self.clock()
        envelope = Envelope(
            id=message_id,
            created_at=now,
            payload_ref=record.payload_ref,
            source="api"
            if record.source == "api"
            else "smtp"
            if record.source == "smtp"
            else "queue",
            replay=number,
            owner=record.owner,
        )
        sent = await self.queue.enqueue(envelope)
        updated, applied = await self.store.apply(
            message_id, partial(machine.replayed, number=number, now=now)
        )
        if not applied:
            await self.queue.delete(sent)  # a concurrent replay got there first
        else:
            await self.events.emit(updated, EventKind.replayed)
        return updated or record

    async def cancel(self, message_id: str, viewer: Viewer | None = None) -> MessageRecord:
        """Cancel a message no attempt has started (:func:`machine.canceled`); canceling it
        again answers its state. Another app's message is as unknown as a missing one."""
        record = await self.find(message_id, viewer)
        if record is None:
            raise not_found(message_id)
        cancel = partial(machine.canceled, now=self.clock())
        updated, applied = await self.store.apply(message_id, cancel, record)
        if updated is None:
            raise not_found(message_id)
        if applied:
            await self.events.emit(updated, EventKind.canceled)
        if updated.status is MessageStatus.canceled:
            return updated
        state = updated.state(self.clock()).status.value
        why = "an attempt to send it has started" if updated.attempts else "it is not waiting"
        raise NotCancelable(
            f"Only a scheduled or queued message that no attempt has started can be canceled; "
            f"this one is {state} ({why})."
        )

    async def find(self, message_id: str, viewer: Viewer | None = None) -> MessageRecord | None:
        """A message's record, if ``viewer`` may see it. The intake writes it just after answering
        202, so for an id it issued seconds ago (UUIDv7 ids carry their time) this waits briefly
        instead of calling a message it just accepted unknown; an id dated in the future was
        never issued, and is unknown at once."""
        record = await self._find(message_id)
        return record if record is not None and record.visible_to(viewer) else None

    async def _find(self, message_id: str) -> MessageRecord | None:
        if not could_be_message_id(message_id):
            return None
        record = await self.store.get(message_id)
        issued = issued_at(message_id)
        if record is not None or issued is None:
            return record
        now = self.clock()
        if not timedelta(0) <= now - issued + CLOCK_SKEW < FRESH_ID_WINDOW:
            return None
        deadline = now + FRESH_ID_WAIT
        while self.clock() - issued < FRESH_ID_WINDOW and self.clock() < deadline:
            await asyncio.sleep(0.05)
            record = await self.store.get(message_id)
            if record is not None:
                return record
        return None

    async def failed(self, limit: int = 100) -> list[MessageRecord]:
        return await self.store.records(MessageStatus.failed, limit)

    async def purge_failed(self, message_ids: list[str] | None = None) -> int:
        """Forget failed messages for good (their records and kept payloads)."""
        targets = (
            [r for r in await self.failed(limit=100_000)]
            if message_ids is None
            else [r for m in message_ids if (r := await self.store.get(m)) is not None]
        )
        count = 0
        for record in targets:
            if record.status is not MessageStatus.failed:
                continue
            if record.payload_ref is not None:
                await self.queue.delete_payload(record.id, record.payload_ref)
            await self.store.delete(record.id)
            count += 1
        return count

    async def cleanup(self, now: datetime | None = None) -> int:
        """Retention: delete expired records and claims, and the payloads they kept."""
        deleted = await self.store.purge_expired(now)
        for expired in deleted:
            if expired.payload_ref is not None:
                await self.queue.delete_payload(expired.message_id, expired.payload_ref)
        return len(deleted)


def host_text(content: Any) -> str:
    """A queue message's content as the Functions host hands it over: Base64-decoded UTF-8 text
    when it is Base64, else the text as it is (what the host could not decode)."""
    raw = content if isinstance(content, bytes) else str(content).encode("utf-8", "replace")
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return raw.decode("utf-8", errors="replace")


def failure_event(record: MessageRecord) -> dict[str, Any]:
    """The one log line per failed message (``MAILGW_FAILED {...}``), as the docs' KQL reads it."""
    error = record.last_error or CRASH_LOOP
    return {
        "messageId": record.id,
        "code": error.code,
        "message": error.message,
        "hint": error.hint,
        "from": record.sender,
        "attempts": record.attempts,
        "source": record.source,
    }


def not_found(message_id: str) -> MessageNotFound:
    return MessageNotFound(
        f"No message {message_id} is known (unknown id, or older than the retention period)."
    )
