"""What operators do with failed messages: record them from the poison queue, replay, clean up.

Used by the poison-queue trigger, the replay endpoint, the maintenance timer and the ``mailgw``
command alike, so each rule exists once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pydantic import ValidationError

from mailgw.errors import MessageNotFound, NotReplayable
from mailgw.ids import issued_at
from mailgw.models import Envelope, ErrorInfo, MessageStatus
from mailgw.queue import MailQueue
from mailgw.state import machine
from mailgw.state.record import MessageRecord
from mailgw.store import StateStore

log = logging.getLogger("mailgw.failures")

#: The prefix of the one log line per failed message; the KQL in docs/operations.md keys on it.
FAILURE_EVENT = "MAILGW_FAILED"

#: An id issued this recently may not have its record yet; a lookup waits at most FRESH_ID_WAIT.
FRESH_ID_WINDOW = timedelta(seconds=30)
FRESH_ID_WAIT = timedelta(seconds=3)

CRASH_LOOP = ErrorInfo(
    code="mailgw/max-dequeue-exceeded",
    message="the delivery function failed on this message maxDequeueCount times (it crashed, "
    "timed out, or could not read it) and the Functions host moved it to the poison queue",
    hint="look up the exceptions logged for this message id, fix the cause, then replay it",
)


def parse_poison(text: str, queue_message_id: str, now: datetime) -> Envelope:
    """A poison message as an envelope: the gateway's own (with its error), or what the host
    moved there unchanged after a crash loop (an envelope, a producer's bare request, or bytes
    that were never JSON)."""
    document: Any = None
    with contextlib.suppress(json.JSONDecodeError):
        document = json.loads(text)
    if isinstance(document, dict) and "mailgw" in document:
        with contextlib.suppress(ValidationError):
            return Envelope.model_validate(document)
    if isinstance(document, dict):
        return Envelope(id=queue_message_id, created_at=now, request=document, source="queue")
    return Envelope(id=queue_message_id, created_at=now, raw=text, source="queue")


@dataclass
class Operations:
    queue: MailQueue
    store: StateStore
    retention: timedelta = timedelta(days=30)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def record_failure(self, body: bytes | str, *, queue_message_id: str) -> MessageRecord:
        """A poison-queue message: keep its payload (so it can be replayed once the poison
        message is gone), mark it ``failed`` with its reason, and log one failure event."""
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        envelope = parse_poison(text, queue_message_id, self.clock())
        error = envelope.error or CRASH_LOOP
        ref = await self.queue.store_payload(envelope)
        failed = partial(
            machine.failed,
            envelope=envelope,
            error=error,
            now=self.clock(),
            retention=self.retention,
            payload=ref,
        )
        record = await self.store.transition(envelope.id, failed)
        assert record is not None
        if record.status is MessageStatus.failed:
            log.error(
                "%s %s",
                FAILURE_EVENT,
                json.dumps(
                    {
                        "messageId": record.id,
                        "code": error.code,
                        "message": error.message,
                        "hint": error.hint,
                        "from": record.sender,
                        "attempts": record.attempts,
                        "source": record.source,
                    }
                ),
            )
        return record

    async def replay(self, message_id: str) -> MessageRecord:
        """Send a failed message again: history kept, attempt budget reset. Idempotent: replaying
        a message whose replay is already under way changes nothing and enqueues nothing."""
        record = await self.store.get(message_id)
        if record is None:
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
            source="api" if record.source == "api" else "queue",
            replay=number,
        )
        sent = await self.queue.enqueue(envelope)
        updated, applied = await self.store.apply(
            message_id, partial(machine.replayed, number=number, now=now)
        )
        if not applied:
            await self.queue.delete(sent)  # a concurrent replay got there first
        return updated or record

    async def find(self, message_id: str) -> MessageRecord | None:
        """A message's record. The intake writes it just after answering 202, so for an id it
        issued seconds ago (UUIDv7 ids carry their time) this waits briefly instead of calling a
        message it just accepted unknown."""
        record = await self.store.get(message_id)
        issued = issued_at(message_id)
        if record is not None or issued is None:
            return record
        deadline = self.clock() + FRESH_ID_WAIT
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
                await self.queue.delete_payload(record.payload_ref)
            await self.store.delete(record.id)
            count += 1
        return count

    async def cleanup(self, now: datetime | None = None) -> int:
        """Retention: delete expired records and claims, and the payloads they kept."""
        deleted = await self.store.purge_expired(now)
        for expired in deleted:
            if expired.payload_ref is not None:
                await self.queue.delete_payload(expired.payload_ref)
        return len(deleted)


def not_found(message_id: str) -> MessageNotFound:
    return MessageNotFound(
        f"No message {message_id} is known (unknown id, or older than the retention period)."
    )
