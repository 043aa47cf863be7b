"""How much mail is waiting, and for how long: the depth of the outbound queue and of its poison
queues, and the age of each one's oldest visible message.

The report_queues timer turns this into the ``mailgw.queue.depth`` and ``mailgw.queue.oldest_age``
gauges (the alerts on a stuck queue and on anything in ``-poison-poison``), and ``mailgw top``
shows it. An age counts from when a message became due, not from when it was written: a message
scheduled hours ahead, or a retry waiting out its back-off, is not late the moment it turns up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceNotFoundError

from mailgw import telemetry
from mailgw.queue import TIME_TO_LIVE_AFTER_DUE, MailQueue

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage

#: Peeked per queue: the service hands out visible messages roughly oldest first.
PEEK = 32


@dataclass(frozen=True)
class QueueReading:
    queue: str
    #: the service's approximate count: visible and invisible (scheduled, retrying) messages
    depth: int
    #: seconds the oldest visible message has been due (0: none is visible)
    oldest_age: float
    exists: bool = True


def due_at(message: QueueMessage, now: datetime) -> datetime | None:
    """When a visible message became due. The gateway gives every message a time-to-live of its
    delay plus seven days (:data:`mailgw.queue.TIME_TO_LIVE_AFTER_DUE`), so expiry minus seven days
    is when it became visible; a producer's message (another time-to-live) counts from when it
    was written."""
    inserted, expires = message.inserted_on, message.expires_on
    if inserted is None:
        return None
    if expires is None:
        return inserted
    due = expires - TIME_TO_LIVE_AFTER_DUE
    return due if inserted <= due <= now else inserted


async def read_queue(queue: MailQueue, name: str, now: datetime) -> QueueReading:
    # Peeked without decoding: a message that is not Base64 (possible in the poison queues) must
    # not fail the whole reading.
    client = queue.raw_queue(name)
    try:
        properties = await client.get_queue_properties()
        peeked = await client.peek_messages(max_messages=PEEK)
    except ResourceNotFoundError:
        return QueueReading(name, 0, 0.0, exists=False)
    dues = [due for due in (due_at(m, now) for m in peeked) if due is not None]
    oldest = max(((now - due).total_seconds() for due in dues), default=0.0)
    return QueueReading(name, int(properties.approximate_message_count or 0), max(oldest, 0.0))


async def read_queues(queue: MailQueue, now: datetime) -> list[QueueReading]:
    """The outbound queue, ``-poison`` and ``-poison-poison``, in that order."""
    names = (queue.queue_name, queue.poison_queue_name, queue.poison_poison_queue_name)
    return list(await asyncio.gather(*(read_queue(queue, name, now) for name in names)))


async def report_queues(queue: MailQueue, now: datetime) -> list[QueueReading]:
    """Read the queues and report them as gauges (nothing is read when telemetry is off)."""
    if not telemetry.enabled():
        return []
    readings = await read_queues(queue, now)
    for reading in readings:
        telemetry.queue_reported(reading.queue, reading.depth, reading.oldest_age)
    return readings
