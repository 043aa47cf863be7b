"""Events a sink could not take yet: one row each in the state table, until they are published.

Written only when a publish fails (the common path writes nothing here: a delivery's state writes
stay three table requests). The rows share one partition, ``~events-pending``, which no message id
can be, so the republishing timer finds them with one partition query instead of a table scan. A
row holds the event as it was first built (its ``id`` and data never change) and the sinks still
owed it; it expires with the message's record, so retention ends even an event no sink ever took.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from mailgw.store import StateStore

PENDING_PARTITION = "~events-pending"
#: Republishing backs off from this delay, doubling up to BACKOFF_CAP (Event Grid's 429/503).
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """How long to wait after ``attempts`` failed publishes of one event."""
    return min(BACKOFF_CAP, BACKOFF_BASE * (1 << min(max(attempts - 1, 0), 16)))


@dataclass(frozen=True)
class PendingEvent:
    event: dict[str, Any]
    sinks: tuple[str, ...]
    attempts: int
    due: datetime
    expires_at: datetime
    etag: str | None = None

    @property
    def time(self) -> str:
        return str(self.event.get("time", ""))


def _entity(pending: PendingEvent) -> dict[str, Any]:
    return {
        "PartitionKey": PENDING_PARTITION,
        "RowKey": str(pending.event["id"]),
        "event": json.dumps(pending.event, separators=(",", ":")),
        "sinks": ",".join(pending.sinks),
        "attempts": pending.attempts,
        "due": pending.due,
        "expiresAt": pending.expires_at,
    }


def _pending(entity: Mapping[str, Any], etag: str | None) -> PendingEvent:
    return PendingEvent(
        event=json.loads(entity["event"]),
        sinks=tuple(s for s in str(entity.get("sinks", "")).split(",") if s),
        attempts=int(entity.get("attempts", 1)),
        due=entity["due"],
        expires_at=entity["expiresAt"],
        etag=etag,
    )


@dataclass
class PendingEvents:
    """The ``~events-pending`` rows of the state table."""

    store: StateStore
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def keep(
        self, events: Sequence[Mapping[str, Any]], sinks: Sequence[str], expires_at: datetime
    ) -> None:
        """Remember ``events`` for ``sinks``; the first republish is due after one backoff."""
        due = self.clock() + backoff(1)
        for event in events:
            row = _entity(PendingEvent(dict(event), tuple(sinks), 1, due, expires_at))
            try:
                await self.store.table().upsert_entity(row, mode="replace")
            except ResourceNotFoundError:  # the very first write to a new table
                with contextlib.suppress(ResourceExistsError):
                    await self.store.table().create_table()
                await self.store.table().upsert_entity(row, mode="replace")

    async def due(self, limit: int = 500) -> list[PendingEvent]:
        """Rows whose republish is due, oldest event first (a message's events keep their order)."""
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = f"PartitionKey eq '{PENDING_PARTITION}' and due le datetime'{now}'"
        found: list[PendingEvent] = []
        try:
            async for entity in self.store.table().query_entities(query):
                if entity["expiresAt"] > self.clock():
                    found.append(_pending(entity, entity.metadata.get("etag")))
                if len(found) >= limit:
                    break
        except ResourceNotFoundError:
            return []
        return sorted(found, key=lambda p: p.time)

    async def done(self, pending: PendingEvent) -> None:
        """Published everywhere: forget it, unless a newer failure wrote the row again meanwhile."""
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            await self.store.table().delete_entity(
                PENDING_PARTITION,
                str(pending.event["id"]),
                etag=pending.etag,
                match_condition=MatchConditions.IfNotModified,
            )

    async def later(self, pending: PendingEvent, sinks: Sequence[str]) -> None:
        """Still owed to ``sinks``: try again after a longer backoff."""
        attempts = pending.attempts + 1
        due = self.clock() + backoff(attempts)
        again = PendingEvent(pending.event, tuple(sinks), attempts, due, pending.expires_at)
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            await self.store.table().update_entity(
                _entity(again),
                mode="replace",
                etag=pending.etag,
                match_condition=MatchConditions.IfNotModified,
            )
