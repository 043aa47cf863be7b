"""Publishing outcome events: after the state write, bounded, and never at the cost of mail.

The order is the outbox pattern's, with the outbox written only when needed:

1. the transition is written to the message's record (the state store);
2. its events (:mod:`mailgw.state.events`) go to every sink at once, one try each, each bounded by
   ``MAILGW_EVENTS_TIMEOUT_SECONDS`` (``sent`` goes out while it is written: :meth:`alongside`);
3. only what a sink did not take is written to the ``~events-pending`` rows
   (:mod:`mailgw.events.pending`), which the ``republish_events`` timer publishes again with
   backoff until every sink has it.

A worker that dies between 1 and 2 leaves its queue message behind; whoever handles the message
next republishes the events of the state it finds (same ids), so nothing is lost and consumers
de-duplicate. Nothing here raises into the delivery or the intake: a failure is logged and kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailgw.events.pending import PendingEvents
from mailgw.events.sinks import EventSink
from mailgw.state.events import (
    EventKind,
    acceptance_kinds,
    kinds_on_start,
    latest_kinds,
    message_event,
)
from mailgw.state.record import MessageRecord

log = logging.getLogger("mailgw.events")

Event = Mapping[str, Any]


@dataclass
class Events:
    """The gateway's event publisher: ``emit`` at each transition, ``republish_pending`` on a timer.

    With no sink configured every call returns at once, so the emit points cost nothing."""

    sinks: Sequence[EventSink] = ()
    pending: PendingEvents | None = None
    source: str = "urn:mailgw:gateway"
    transport: str = ""
    timeout_seconds: float = 5.0
    #: intake writes the record after publishing ``accepted``: a status lookup right after the
    #: 202 waits for that record only a few seconds, so a slow sink may hold it up only briefly
    accept_timeout_seconds: float = 1.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    # --- emit points --------------------------------------------------------------------------

    async def emit(
        self, record: MessageRecord | None, *kinds: EventKind, sink_seconds: float | None = None
    ) -> None:
        """Publish the ``kinds`` of events that ``record`` reports (a kind whose transition did
        not happen, because it changed nothing, yields no event)."""
        if not self.sinks or record is None:
            return
        events = [
            event
            for kind in kinds
            if (event := message_event(record, kind, source=self.source, transport=self.transport))
        ]
        if events:
            await self.publish(events, expires_at=record.expires_at, sink_seconds=sink_seconds)

    async def alongside(
        self, write: Awaitable[MessageRecord | None], written: MessageRecord | None, kind: EventKind
    ) -> MessageRecord | None:
        """Await ``write`` (a transition) and publish its event at once, from ``written`` (the
        record it will store); returns what the write returned.

        For ``sent``, whose fact (the transport accepted the message) is true before it is
        recorded: overlapping the two keeps a round trip off every delivery. If the write fails,
        the message is retried and ``sent`` is published again with the same id; a publish that
        fails is kept like any other."""
        stored, _ = await asyncio.gather(write, self.emit(written, kind))
        return stored

    async def accepted(self, record: MessageRecord) -> None:
        """A message was accepted (by any intake): ``accepted``, and ``scheduled`` if it waits."""
        seconds = min(self.accept_timeout_seconds, self.timeout_seconds)
        await self.emit(record, *acceptance_kinds(record), sink_seconds=seconds)

    async def republish(self, record: MessageRecord | None) -> None:
        """The events of the record's last notable transition, again (same ids): for a copy of a
        message that finds it finished, whose worker may have died before publishing."""
        if record is not None:
            await self.emit(record, *latest_kinds(record))

    async def started(
        self, before: MessageRecord | None, after: MessageRecord, *, redelivered: bool
    ) -> None:
        """Delivery began an attempt on ``after`` (it read ``before``): publish the events of the
        state it left that nobody may have published (:func:`kinds_on_start`)."""
        if not self.sinks:
            return
        described, kinds = kinds_on_start(before, redelivered=redelivered)
        await self.emit(described or after, *kinds)

    # --- publishing ---------------------------------------------------------------------------

    async def publish(
        self, events: Sequence[Event], *, expires_at: datetime, sink_seconds: float | None = None
    ) -> None:
        """Every sink at once; what one did not take is kept for later. Never raises."""
        limit = self.timeout_seconds if sink_seconds is None else sink_seconds
        outcomes = await asyncio.gather(*(self._try(s, events, limit) for s in self.sinks))
        failed = [sink.name for sink, ok in zip(self.sinks, outcomes, strict=True) if not ok]
        if failed:
            await self._keep(events, failed, expires_at)

    async def _try(self, sink: EventSink, events: Sequence[Event], seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await sink.publish(events)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning(
                "events %s not published to %s (%s); kept to publish again",
                ", ".join(str(e["type"]) for e in events),
                sink.name,
                reason,
            )
            return False
        return True

    async def _keep(self, events: Sequence[Event], sinks: list[str], expires_at: datetime) -> None:
        try:
            if self.pending is None:
                raise RuntimeError("no pending-event store")
            await self.pending.keep(events, sinks, expires_at)
        except Exception as exc:
            # The state is written; the next touch of the message publishes its events again.
            log.error(
                "events %s for %s could not be kept for republishing (%s)",
                ", ".join(str(e["id"]) for e in events),
                ", ".join(sinks),
                exc,
            )

    async def republish_pending(self, limit: int = 500) -> int:
        """Publish the kept events that are due, each to the sinks still owed it; returns how
        many are now published everywhere. The ``republish_events`` timer calls this."""
        if self.pending is None or not self.sinks:
            return 0
        by_name = {sink.name: sink for sink in self.sinks}
        finished = 0
        #: (subject, sink) whose older event just failed: its newer ones wait, to keep the order
        held: set[tuple[str, str]] = set()
        for pending in await self.pending.due(limit):
            subject = str(pending.event.get("subject"))
            owed = [by_name[name] for name in pending.sinks if name in by_name]
            if any((subject, sink.name) in held for sink in owed):
                continue  # due again next round, after the older event
            outcomes = await asyncio.gather(
                *(self._try(s, [pending.event], self.timeout_seconds) for s in owed)
            )
            left = [sink.name for sink, ok in zip(owed, outcomes, strict=True) if not ok]
            held.update((subject, name) for name in left)
            if left:
                await self.pending.later(pending, left)
            else:
                await self.pending.done(pending)
                finished += 1
        return finished

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()
