"""The stored answer of a keyed batch: one row per ``Idempotency-Key`` (and generation).

A keyed single message keeps its first answer in its own record (``response``). A batch is many
messages, so its answer gets a row of its own in the state table, beside the records
(``PartitionKey`` = the id derived from the key, ``RowKey`` = ``batch``): inserting the row is the
atomic "first request wins", the row holds the request's fingerprint (so another body with the
key is refused), and once the batch is done, the whole answer. The answer can be large (500
items, each maybe a problem with its field errors), so it is kept compressed, over as many
properties as it needs (a property holds 64 KiB; an entity 1 MiB).
"""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from mailgw.store import StateStore

ANSWER_ROW = "batch"
#: characters per property (a string property holds 64 KiB of UTF-16)
_CHUNK = 30_000
#: properties an answer may use: the entity stays under its 1 MiB
_MAX_CHUNKS = 15


@dataclass(frozen=True)
class StoredAnswer:
    answer_id: str
    request_hash: str
    key_expires_at: datetime
    #: None while the batch that claimed the key is still at work (or crashed)
    answer: dict[str, Any] | None
    etag: str | None = None


def _encode(answer: dict[str, Any]) -> list[str]:
    packed = base64.b64encode(zlib.compress(json.dumps(answer).encode(), 6)).decode("ascii")
    return [packed[i : i + _CHUNK] for i in range(0, len(packed), _CHUNK)] or [""]


def _decode(entity: Mapping[str, Any]) -> dict[str, Any] | None:
    parts = entity.get("answerParts")
    if not isinstance(parts, int):
        return None
    packed = "".join(str(entity.get(f"answer{i}", "")) for i in range(parts))
    decoded: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode(packed)))
    return decoded


class AnswerStore:
    """Keyed batches' answers, in the table of :class:`StateStore` (whose clients it uses)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def claim(
        self,
        answer_id: str,
        request_hash: str,
        *,
        now: datetime,
        key_expires_at: datetime,
        expires_at: datetime,
    ) -> bool:
        """Insert the key's row; False if a live one is there. A row past ``expiresAt``
        (retention, as the records it names) is taken over."""
        entity = {
            "PartitionKey": answer_id,
            "RowKey": ANSWER_ROW,
            "requestHash": request_hash,
            "keyExpiresAt": key_expires_at,
            "expiresAt": expires_at,
        }
        table = self.store.table()
        try:
            await self._insert(entity)
            return True
        except ResourceExistsError:
            existing = await self._read(answer_id)
            if existing is None or existing.get("expiresAt", now) > now:
                return False
        try:
            await table.update_entity(
                entity,
                mode="replace",
                etag=existing.metadata.get("etag"),
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def _insert(self, entity: dict[str, Any]) -> None:
        table = self.store.table()
        try:
            await table.create_entity(entity)
        except ResourceNotFoundError:  # no table yet (locally, the first write creates it)
            with contextlib.suppress(ResourceExistsError):
                await table.create_table()
            await table.create_entity(entity)

    async def _read(self, answer_id: str) -> Any | None:
        try:
            return await self.store.table().get_entity(answer_id, ANSWER_ROW)
        except ResourceNotFoundError:
            return None

    async def get(self, answer_id: str) -> StoredAnswer | None:
        entity = await self._read(answer_id)
        if entity is None or entity["expiresAt"] <= self.store.clock():
            return None
        return StoredAnswer(
            answer_id,
            entity["requestHash"],
            entity["keyExpiresAt"],
            _decode(entity),
            entity.metadata.get("etag"),
        )

    async def save(self, answer_id: str, answer: dict[str, Any]) -> None:
        """Keep the batch's answer with its row (merged: the claim's fields stay)."""
        chunks = _encode(answer)
        if len(chunks) > _MAX_CHUNKS:
            chunks = _encode(_without_field_errors(answer))
        entity: dict[str, Any] = {
            "PartitionKey": answer_id,
            "RowKey": ANSWER_ROW,
            "answerParts": len(chunks),
        }
        entity.update({f"answer{i}": chunk for i, chunk in enumerate(chunks)})
        await self.store.table().update_entity(entity, mode="merge")


def _without_field_errors(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer too large to keep whole keeps each refusal's detail, not its field list."""
    items = [{k: v for k, v in item.items() if k != "errors"} for item in answer["items"]]
    return {**answer, "items": items}
