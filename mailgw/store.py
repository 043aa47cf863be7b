"""Persistence of message records (:mod:`mailgw.state`) in Azure Table storage; nothing else.

One entity per message (PartitionKey = message id): its state, attempts, timestamps, metadata and
last error, never its body or attachments (those stay in the queue or in Blob). Every change goes
through :meth:`StateStore.transition`, an optimistic-concurrency loop on the entity's ETag that
applies a transition of :mod:`mailgw.state.machine`, so two workers updating one message never
lose a transition: the loser re-reads and re-decides.

A message made with an ``Idempotency-Key`` gets an id derived from the key, so inserting its record
is the atomic "first request wins". Records expire (``expiresAt``): expired ones read as absent and
``purge_expired`` deletes them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from pydantic import BaseModel

from mailgw.models import MessageStatus, PayloadRef
from mailgw.state.record import MessageRecord
from mailgw.storage import LazyTable, StorageConnection

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

STATE_ROW = "state"
#: The row that holds the key of the envelopes' seal (mailgw/seal.py); no message uses this id.
KEY_PARTITION, KEY_ROW = "~gateway", "envelope-key"
_NO_CONTENT = {"response_preference": "return-no-content"}


# Table properties are flat: nested values are stored as JSON strings.
_JSON_FIELDS = (
    "lastError",
    "metadata",
    "history",
    "payloadRef",
    "checkpoint",
    "response",
    "template",
)


def _to_entity(model: BaseModel, partition: str, row: str) -> dict[str, Any]:
    """Datetimes stay datetimes (Edm.DateTime, so ``expiresAt lt datetime'...'`` compares times,
    not strings); nested values become JSON strings."""
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    native = model.model_dump(by_alias=True)
    for key, value in model.model_dump(mode="json", by_alias=True).items():
        if value is None:
            continue
        if key in _JSON_FIELDS:  # not ASCII-escaped: "é" is one character of 32K, not six
            entity[key] = json.dumps(value, ensure_ascii=False)
        elif isinstance(native[key], datetime):
            entity[key] = native[key]
        else:
            entity[key] = value
    return entity


def _from_entity(entity: Any) -> dict[str, Any]:
    data = {k: v for k, v in dict(entity).items() if k not in ("PartitionKey", "RowKey")}
    for key in _JSON_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    data["etag"] = entity.metadata.get("etag")
    return data


@dataclass(frozen=True)
class Expired:
    """A record retention deleted, and the payload it had kept for a replay."""

    message_id: str
    payload_ref: PayloadRef | None


#: A transition of :mod:`mailgw.state.machine` with its facts bound: it returns the next record (or
#: None: no change) and never changes the record it is given.
Transition = Callable[[MessageRecord | None], MessageRecord | None]


class _Unread:
    """Marker: the caller has not read the record (``None`` would mean "known to be absent")."""


UNREAD = _Unread()


@dataclass
class StateStore:
    connection: StorageConnection
    table_name: str
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self._lazy = LazyTable(self.connection, self.table_name)
        self._created = False

    def table(self) -> TableClient:
        return self._lazy.client()

    async def close(self) -> None:
        await self._lazy.close()

    async def _ensure_table(self) -> None:
        """Bicep creates the table in Azure; locally the first write creates it."""
        if not self._created:
            with contextlib.suppress(ResourceExistsError):
                await self.table().create_table()
            self._created = True

    async def _insert(self, entity: dict[str, Any]) -> Mapping[str, Any]:
        try:
            return await self.table().create_entity(entity, **_NO_CONTENT)
        except ResourceNotFoundError:
            await self._ensure_table()
            return await self.table().create_entity(entity, **_NO_CONTENT)

    async def _read(self, partition: str, row: str) -> Any | None:
        try:
            return await self.table().get_entity(partition, row)
        except ResourceNotFoundError:
            return None  # no such entity, or no table yet

    # --- the seal's key ---------------------------------------------------------------------------

    async def envelope_key(self) -> bytes:
        """The key that seals the gateway's envelopes: made once, by whichever instance comes
        first (the insert decides a race), and read by every other. Queue producers have no
        access to this table, so they cannot seal an envelope."""
        entity = await self._read(KEY_PARTITION, KEY_ROW)
        if entity is None:
            fresh = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
            with contextlib.suppress(ResourceExistsError):
                await self._insert({"PartitionKey": KEY_PARTITION, "RowKey": KEY_ROW, "key": fresh})
            entity = await self._read(KEY_PARTITION, KEY_ROW)
        if entity is None or not isinstance(entity.get("key"), str):
            raise RuntimeError(f"the envelope key row {KEY_PARTITION}/{KEY_ROW} is unreadable")
        return base64.b64decode(entity["key"])

    # --- message records ------------------------------------------------------------------------

    async def create(self, record: MessageRecord) -> bool:
        """Insert a new record; False if the message already has a live one. On success the
        record carries the stored row's ETag, so its next transition can skip the read."""
        try:
            written = await self._insert_fresh(_to_entity(record, record.id, STATE_ROW))
        except ResourceExistsError:
            return False
        record.etag = written.get("etag")
        return True

    async def _insert_fresh(self, entity: dict[str, Any]) -> Mapping[str, Any]:
        """Insert, or take over a row that has expired but is not purged yet (it reads as absent,
        so it must not block its id). ``ResourceExistsError`` if a live row is there."""
        try:
            return await self._insert(entity)
        except ResourceExistsError:
            existing = await self._read(entity["PartitionKey"], entity["RowKey"])
            if existing is None:
                return await self._insert(entity)
            expires = existing.get("expiresAt")
            if expires is None or expires > self.clock():
                raise
            try:
                return await self.table().update_entity(
                    entity,
                    mode="replace",
                    etag=existing.metadata.get("etag"),
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                raise ResourceExistsError("the expired record changed meanwhile") from None

    async def get(self, message_id: str) -> MessageRecord | None:
        entity = await self._read(message_id, STATE_ROW)
        if entity is None:
            return None
        record = MessageRecord.model_validate(_from_entity(entity))
        return None if record.expires_at <= self.clock() else record

    async def delete(self, message_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self.table().delete_entity(message_id, STATE_ROW)

    async def transition(
        self, message_id: str, change: Transition, known: MessageRecord | _Unread | None = UNREAD
    ) -> MessageRecord | None:
        """Apply ``change`` to the current record (None if absent) and store the result, retrying
        on a concurrent update until it applies to the latest version. ``change`` returns the new
        record, or None to leave things as they are; the stored (or current) record is returned.

        ``known``: a record (or None) the caller just read, with its ETag, to save the first read;
        if it is stale, the ETag check fails and the loop reads the latest version."""
        record, _ = await self.apply(message_id, change, known)
        return record

    async def apply(
        self, message_id: str, change: Transition, known: MessageRecord | _Unread | None = UNREAD
    ) -> tuple[MessageRecord | None, bool]:
        """:meth:`transition`, also telling whether ``change`` itself was stored (False: it chose
        no change on the latest version, e.g. a concurrent caller got there first)."""
        if isinstance(known, MessageRecord) and known.etag is None:
            known = UNREAD  # without its ETag a known record cannot guard the write: read it
        for _ in range(20):
            current = await self.get(message_id) if isinstance(known, _Unread) else known
            known = UNREAD
            updated = change(current)
            if updated is None:
                return current, False
            updated.updated_at = self.clock()
            entity = _to_entity(updated, message_id, STATE_ROW)
            try:
                if current is None:
                    written = await self._insert_fresh(entity)
                else:
                    written = await self.table().update_entity(
                        entity,
                        mode="replace",
                        etag=current.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone else changed it first: decide again on their version
            except HttpResponseError as error:
                if error.status_code in (409, 412):
                    continue
                raise
            updated.etag = written.get("etag")  # no read-back: the write answered with its ETag
            return updated, True
        raise RuntimeError(f"could not update message {message_id}: too many concurrent changes")

    async def records(
        self,
        status: MessageStatus | None = None,
        limit: int = 100,
        since: datetime | None = None,
    ) -> list[MessageRecord]:
        """Records (optionally of one status, or changed ``since``), newest first. A scan: an
        operator's tool, not a hot path."""
        query = f"RowKey eq '{STATE_ROW}'"
        if status is not None:
            query += f" and status eq '{status.value}'"
        if since is not None:
            query += f" and Timestamp ge datetime'{_odata_time(since)}'"
        found: list[MessageRecord] = []
        try:
            async for entity in self.table().query_entities(query):
                record = MessageRecord.model_validate(_from_entity(entity))
                if record.expires_at > self.clock():
                    found.append(record)
        except ResourceNotFoundError:
            return []
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    # --- retention ------------------------------------------------------------------------------

    async def purge_expired(self, now: datetime | None = None) -> list[Expired]:
        """Delete every expired row; returns what was deleted, with the payload each record kept
        (for the caller to delete: the store knows no blobs)."""
        cutoff = _odata_time(now or self.clock())
        deleted = []
        try:
            async for entity in self.table().query_entities(f"expiresAt lt datetime'{cutoff}'"):
                with contextlib.suppress(ResourceNotFoundError):
                    await self.table().delete_entity(entity["PartitionKey"], entity["RowKey"])
                kept = entity.get("payloadRef")
                ref = PayloadRef.model_validate_json(kept) if isinstance(kept, str) else None
                deleted.append(Expired(entity["PartitionKey"], ref))
        except ResourceNotFoundError:
            pass  # no table yet: nothing has expired
        return deleted


def _odata_time(when: datetime) -> str:
    """A time as an OData filter's ``datetime'...'`` literal (UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
