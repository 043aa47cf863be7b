"""Budgets in Azure Table storage: one entity per budget, changed only under its ETag.

Optimistic concurrency suits a budget that many instances touch briefly: a write that lost the race
(HTTP 412) re-reads and decides again on the winner's numbers. The last version each instance read
or wrote is kept, so the common case (one writer at a time) costs one request, not a read and a
write. A decision that changes nothing is taken only on a fresh read. docs/operations.md says why
Tables with ETags rather than Blob leases.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from mailgw.pacing.budget import Budget

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

#: every budget's partition (a message id never starts with "~")
PARTITION = "~pacing"
TENANT_KEY = "~tenant"
T = TypeVar("T")
#: a change: the budget as read → (the budget to write, or None: nothing to write; the answer)
Change = Callable[[Budget], tuple[Budget | None, T]]


def row_key(mailbox: str) -> str:
    """A mailbox's row: its lower-case address, with the characters a RowKey forbids escaped."""
    return quote(mailbox.strip().lower(), safe="@.+-_!$&'*=^`{|}~")


class BudgetTable:
    """Reads and writes budgets; counts its requests (the bench reports them per message)."""

    def __init__(self, table: Callable[[], TableClient]):
        self._table = table
        self._known: dict[str, tuple[Budget, str | None]] = {}
        self.requests = 0

    async def read(self, key: str) -> tuple[Budget, str | None]:
        self.requests += 1
        try:
            entity = await self._table().get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return Budget(), None
        budget = Budget.from_json(json.loads(entity.get("budget") or "{}"))
        return budget, entity.metadata.get("etag")

    async def keys(self) -> list[str]:
        """Every budget's row key (an operator's listing, not a hot path)."""
        self.requests += 1
        try:
            query = self._table().query_entities(
                f"PartitionKey eq '{PARTITION}'", select=["RowKey"]
            )
            return [entity["RowKey"] async for entity in query]
        except ResourceNotFoundError:
            return []

    async def update(self, key: str, change: Change[T]) -> T:
        """Apply ``change`` to the latest version of the budget (retrying on a lost race)."""
        known = self._known.get(key)
        for _ in range(30):
            fresh = known is None
            budget, etag = known if known is not None else await self.read(key)
            known = None
            updated, answer = change(budget)
            if updated is None or updated == budget:
                if fresh:
                    self._known[key] = (budget, etag)
                    return answer
                continue  # decided on what this instance last saw: look again before saying no
            try:
                new_etag = await self._write(key, updated, etag)
            except (ResourceExistsError, ResourceModifiedError):
                continue
            except HttpResponseError as error:
                if error.status_code in (409, 412):
                    continue
                raise
            self._known[key] = (updated, new_etag)
            return answer
        raise RuntimeError(f"budget {key}: too many concurrent changes")

    async def _write(self, key: str, budget: Budget, etag: str | None) -> str | None:
        self.requests += 1
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": key,
            "budget": json.dumps(budget.to_json(), separators=(",", ":")),
        }
        table = self._table()
        if etag is None:
            try:
                written = await table.create_entity(entity)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    await table.create_table()
                written = await table.create_entity(entity)
        else:
            written = await table.update_entity(
                entity, mode="replace", etag=etag, match_condition=MatchConditions.IfNotModified
            )
        return str(written.get("etag")) if written.get("etag") else None
