"""``POST /api/v1/messages:batch``: up to 500 send requests, each accepted or refused on its own.

Every item goes through exactly what a single ``POST /api/v1/messages`` does (:class:`Intake`:
the rules, the sender policy, its template, the enqueue), concurrently; the answer lists one
result per item, in order: the item's 202 body, or the error that refused it (the HTTP adapter
renders it as problem+json).

An ``Idempotency-Key`` covers the whole batch. As for a single message, the key stands for ids
derived from it (one per item, and one for the batch's stored answer, :mod:`mailgw.answers`), so a
retry of the same batch enqueues nothing new and gets the first answer again; another body with
the key is refused (422). A retry also finishes what the first request could not: items that the
queue refused (503) are tried again, and a batch whose first request crashed midway is completed
with the same ids (delivery keeps each id to one send).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Unpack

from pydantic import BaseModel, ConfigDict, Field

from mailgw import errors
from mailgw.answers import AnswerStore, StoredAnswer
from mailgw.errors import (
    FieldError,
    GatewayError,
    IdempotencyKeyExhausted,
    IdempotencyKeyReused,
    InvalidRequest,
)
from mailgw.ids import keyed_message_id
from mailgw.intake import Intake, request_hash
from mailgw.models import MAX_BATCH, SendRequest, SubmitResult
from mailgw.state.record import MessageRecord
from mailgw.validation import RequestParts, read_request

log = logging.getLogger("mailgw.batch")

#: Items prepared and enqueued at once (storage clients pool about this many connections).
CONCURRENCY = 64
#: How long a retry waits for the first request with its key to store the batch's answer before
#: taking the batch over (that request crashed, or is still at work: ids keep it to one send).
ANSWER_WAIT = timedelta(seconds=10)


class BatchRequest(BaseModel):
    """The body of ``POST /api/v1/messages:batch`` (its schema; items are read one by one)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[SendRequest] = Field(min_length=1, max_length=MAX_BATCH)


ItemResult = SubmitResult | GatewayError


@dataclass(frozen=True)
class BatchResult:
    """One result per item, in the request's order."""

    items: list[ItemResult]

    @property
    def accepted(self) -> int:
        return sum(isinstance(item, SubmitResult) for item in self.items)

    def to_stored(self) -> dict[str, Any]:
        return {"items": [_stored_item(item) for item in self.items]}

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> BatchResult:
        return cls([_item_from_stored(item) for item in stored["items"]])


def batch_items(document: Any) -> list[Any]:
    """The items of a batch body: ``{"messages": [1 to 500 items]}``, or why not (400)."""
    unknown = sorted(set(document) - {"messages"})
    problems = [FieldError(name, "is not a known field") for name in unknown]
    messages = document.get("messages")
    if not isinstance(messages, list):
        problems.append(FieldError("messages", "is required: a list of send requests"))
    elif not 1 <= len(messages) <= MAX_BATCH:
        problems.append(
            FieldError("messages", f"must hold 1 to {MAX_BATCH} send requests; got {len(messages)}")
        )
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise InvalidRequest(f"The batch is not valid: {summary}", problems)
    assert isinstance(messages, list)
    return messages


@dataclass
class BatchIntake:
    intake: Intake
    answers: AnswerStore
    answer_wait: timedelta = ANSWER_WAIT

    async def submit(self, body: bytes, **parts: Unpack[RequestParts]) -> BatchResult:
        """A batch; ``parts``: the request's headers and its owner, as for ``Intake.submit``."""
        key, document = read_request(body, parts, self.intake.settings.max_request_bytes)
        items = batch_items(document)
        traceparent, owner = parts.get("traceparent"), parts.get("owner")
        work = _Work(self.intake, items, self.intake.clock(), traceparent, owner)
        if key is None:
            return _whole_or_partial(await work.run())
        return await self._keyed(key, work, request_hash(document))

    async def _keyed(self, key: str, work: _Work, fingerprint: str) -> BatchResult:
        settings, now = self.intake.settings, work.now
        scope = f"{work.owner or ''}\x00batch"
        for generation in range(1, 100):
            answer_id = keyed_message_id(key, generation, scope=scope)
            ids = [
                keyed_message_id(key, generation, scope=f"{scope}\x00{i}")
                for i in range(len(work.items))
            ]
            claimed = await self.answers.claim(
                answer_id,
                fingerprint,
                now=now,
                key_expires_at=now + settings.idempotency_window,
                expires_at=now + settings.retention,
            )
            if claimed:
                return await self._finish(answer_id, work.keyed(ids, fingerprint), None)
            existing = await self._settled(answer_id)
            if existing is None:
                continue  # its retention ended in between: the next generation is a new batch
            if existing.key_expires_at <= now:
                continue  # that use of the key has expired: the key makes a new batch
            if existing.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used with a different batch; use a new key for a "
                    "new batch."
                )
            previous = BatchResult.from_stored(existing.answer) if existing.answer else None
            if previous is not None and not any(_retryable(i) for i in previous.items):
                return previous
            return await self._finish(answer_id, work.keyed(ids, fingerprint), previous)
        raise IdempotencyKeyExhausted("Use a new Idempotency-Key.")

    async def _finish(
        self, answer_id: str, work: _Work, previous: BatchResult | None
    ) -> BatchResult:
        """Run the items not done yet (all, or those the queue refused last time) and keep the
        answer. Even if keeping it fails, the items stand: a retry runs them again with the
        same ids, so nothing is sent twice."""
        redo = None if previous is None else [_retryable(i) for i in previous.items]
        result = await work.run(redo)
        if previous is not None:
            result = BatchResult(
                [new if again else old for old, new, again in _zip(previous, result, redo)]
            )
        try:
            await self.answers.save(answer_id, result.to_stored())
        except Exception as exc:
            log.warning("batch answer %s not kept (%s); a retry runs it again", answer_id, exc)
        return _whole_or_partial(result)

    async def _settled(self, answer_id: str) -> StoredAnswer | None:
        clock = self.intake.clock
        deadline = clock() + self.answer_wait
        while True:
            existing = await self.answers.get(answer_id)
            if existing is None or existing.answer is not None or clock() >= deadline:
                return existing
            await asyncio.sleep(0.1)


@dataclass
class _Work:
    """The items of one batch request, and how each is accepted."""

    intake: Intake
    items: list[Any]
    now: datetime
    traceparent: str | None
    owner: str | None
    ids: Sequence[str] | None = None
    fingerprint: str | None = None

    def keyed(self, ids: Sequence[str], fingerprint: str) -> _Work:
        return _Work(
            self.intake, self.items, self.now, self.traceparent, self.owner, ids, fingerprint
        )

    async def run(self, only: Sequence[bool] | None = None) -> BatchResult:
        """The items (``only`` those marked), concurrently. The records of unkeyed items are
        written once all are queued, as a single request's follow its answer: the caller waits
        for the enqueues only."""
        gate = asyncio.Semaphore(CONCURRENCY)
        later: list[MessageRecord] = []

        async def one(index: int, item: Any) -> ItemResult | None:
            if only is not None and not only[index]:
                return None
            async with gate:
                try:
                    accepted = await self.intake.prepare(
                        item, self.now, self.traceparent, self.owner
                    )
                    message_id = self.ids[index] if self.ids else None
                    return await self.intake.accept(accepted, message_id, self.fingerprint, later)
                except GatewayError as error:
                    return error

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(self.items)))
        self.intake.record_later(later)
        return BatchResult([r if r is not None else _SKIPPED for r in results])


_SKIPPED = GatewayError("not run")


def _zip(
    previous: BatchResult, result: BatchResult, redo: Sequence[bool] | None
) -> list[tuple[ItemResult, ItemResult, bool]]:
    again = redo or [True] * len(previous.items)
    return list(zip(previous.items, result.items, again, strict=True))


def _retryable(item: ItemResult) -> bool:
    """Refused for now, not for good (the queue or the template store was out of reach)."""
    return isinstance(item, GatewayError) and item.retry_after is not None


def _whole_or_partial(result: BatchResult) -> BatchResult:
    """When storage refused items that were otherwise fine and none was accepted, the batch as a
    whole could not be queued: that is the request's 503 (retry it), not 207."""
    refused = [i for i in result.items if isinstance(i, GatewayError) and _retryable(i)]
    if refused and result.accepted == 0:
        raise refused[0]
    return result


def _stored_item(item: ItemResult) -> dict[str, Any]:
    if isinstance(item, SubmitResult):
        return {"accepted": item.model_dump(mode="json", by_alias=True)}
    return {
        "error": type(item).__name__,
        "detail": item.detail,
        "errors": [{"field": e.field, "message": e.message} for e in item.errors],
    }


def _item_from_stored(item: dict[str, Any]) -> ItemResult:
    if "accepted" in item:
        return SubmitResult.model_validate(item["accepted"])
    kind = getattr(errors, str(item.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, GatewayError)):
        kind = InvalidRequest
    fields = [FieldError(e["field"], e["message"]) for e in item.get("errors", [])]
    return kind(item["detail"], fields)
