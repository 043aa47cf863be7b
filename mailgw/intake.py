"""Intake: validate → authorise the sender → enqueue. Nothing reaches the queue unless all pass.

Host-agnostic: the HTTP adapter hands over the raw body and headers and renders what comes back
(a :class:`SubmitResult`, or a raised :class:`Problem`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from mailgw.ids import new_message_id
from mailgw.models import Envelope, MessageStatus, SendRequest, SubmitResult
from mailgw.policy import SenderPolicy, denial_reason
from mailgw.problems import FieldError, Problem, validation_problem
from mailgw.queue import MailQueue, SentMessage
from mailgw.settings import Settings
from mailgw.store import Claim, MessageRecord, StateStore, key_partition

log = logging.getLogger("mailgw.intake")

STATUS_PATH = "/api/v1/messages/{id}"


def parse_json_body(body: bytes, content_type: str | None, limit: int) -> Any:
    """The request body as JSON, or a 4xx problem saying exactly what is wrong with it."""
    if len(body) > limit:
        raise Problem(
            413,
            "Request too large",
            f"The request body is {len(body)} bytes; the limit is {limit} bytes.",
            "too-large",
        )
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(
            415,
            "Unsupported media type",
            f"Send the message as application/json, not {media_type}.",
            "unsupported-media-type",
        )
    if not body.strip():
        raise Problem(
            400, "Empty body", "The request body is empty; send a JSON object.", "empty-body"
        )
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise Problem(400, "Invalid JSON", "The body is not UTF-8 text.", "invalid-json") from None
    except json.JSONDecodeError as exc:
        raise Problem(
            400,
            "Invalid JSON",
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            "invalid-json",
        ) from None
    except (ValueError, RecursionError) as exc:  # absurd nesting or integers past Python's limit
        raise Problem(
            400, "Invalid JSON", f"The body is not acceptable JSON: {exc}.", "invalid-json"
        ) from None
    if not isinstance(document, dict):
        raise Problem(
            400,
            "Invalid send request",
            "The body must be a JSON object.",
            "validation",
            [FieldError("(body)", f"expected an object, got {type(document).__name__}")],
        )
    return document


def validate_request(
    document: Any, settings: Settings, *, now: datetime | None = None, what: str = "request"
) -> SendRequest:
    try:
        return SendRequest.model_validate(
            document,
            by_alias=True,
            by_name=False,  # the wire names only: "sender" or "send_at" are not part of the API
            context={"max_attachment_bytes": settings.max_attachment_bytes, "now": now},
        )
    except ValidationError as exc:
        raise validation_problem(exc, document, what=what) from None


def forbidden_sender(policy: SenderPolicy, address: str) -> Problem:
    return Problem(
        403,
        "Sender not allowed",
        denial_reason(policy, address),
        "sender-not-allowed",
        [FieldError("from", "this gateway is not allowed to send as this mailbox")],
    )


def check_idempotency_key(key: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1-255 printable ASCII characters, or absent."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
        raise Problem(
            400,
            "Invalid Idempotency-Key",
            "The Idempotency-Key header must be 1-255 printable ASCII characters.",
            "invalid-idempotency-key",
            [FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")],
        )
    return key


def request_hash(document: Any) -> str:
    """The body's fingerprint for idempotency: canonical JSON, so whitespace and key order in a
    retried request do not matter, but any value does."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Intake:
    """validate → authorise → (claim the idempotency key) → enqueue and record the state.

    Without a key, the queue message and the state record are written at the same time (one round
    trip); delivery creates the record itself if the intake's write was lost. With a key, the
    message is enqueued first and the key claimed after, so no crash can leave a claimed key
    without its message; a request that loses the claim deletes what it enqueued and answers
    with the first request's response (or 422 for a different body).
    """

    settings: Settings
    queue: MailQueue
    store: StateStore
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.policy = SenderPolicy(self.settings.allowed_senders)

    async def submit(
        self,
        body: bytes,
        *,
        content_type: str | None = None,
        traceparent: str | None = None,
        idempotency_key: str | None = None,
    ) -> SubmitResult:
        key = check_idempotency_key(idempotency_key)
        document = parse_json_body(body, content_type, self.settings.max_request_bytes)
        now = self.clock()
        request = validate_request(document, self.settings, now=now)
        if not self.policy.allows(request.sender.address):
            raise forbidden_sender(self.policy, request.sender.address)
        message_id = new_message_id()
        delay = request.send_at - now if request.send_at and request.send_at > now else None
        result = SubmitResult(
            id=message_id,
            status=MessageStatus.scheduled if delay else MessageStatus.queued,
            status_url=STATUS_PATH.format(id=message_id),
        )
        fingerprint = request_hash(document)
        record = self.store.new_record(
            message_id,
            result.status,
            send_at=request.send_at,
            sender=request.sender.address,
            metadata=request.metadata,
            request_hash=fingerprint,
            source="api",
        )
        record.record(result.status.value, now)
        envelope = Envelope(
            id=message_id,
            created_at=now,
            traceparent=traceparent,
            request=request.to_json(),
            source="api",
            claim=key_partition(key) if key else None,
        )
        if key is None:
            await self._enqueue_and_record(envelope, record, delay)
            return result
        sent = await self._enqueue(envelope, delay)
        claim = Claim(
            message_id=message_id,
            request_hash=fingerprint,
            response=result.model_dump(mode="json", by_alias=True),
            created_at=now,
            expires_at=now,
        )
        winner, _ = await asyncio.gather(
            self.store.claim(key_partition(key), claim), self.store.create(record)
        )
        if winner is None:
            return result
        # Another request with this key came first: take back what we wrote, answer as it did.
        await asyncio.gather(self.queue.delete(sent), self.store.delete(message_id))
        if winner.request_hash != fingerprint:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "This Idempotency-Key was used with a different request body; use a new key "
                "for a new message.",
                "idempotency-key-reused",
            )
        return SubmitResult.model_validate(winner.response)

    async def _enqueue(self, envelope: Envelope, delay: timedelta | None) -> SentMessage:
        try:
            return await self.queue.enqueue(envelope, delay=delay)
        except Exception as exc:
            raise Problem(
                503,
                "Queue unavailable",
                "The message could not be queued and was not accepted; retry later.",
                "queue-unavailable",
                headers={"Retry-After": "10"},
            ) from exc

    async def _enqueue_and_record(
        self, envelope: Envelope, record: MessageRecord, delay: timedelta | None
    ) -> None:
        enqueued, created = await asyncio.gather(
            self._enqueue(envelope, delay), self.store.create(record), return_exceptions=True
        )
        if isinstance(enqueued, BaseException):
            if created is True:
                await self.store.delete(record.id)
            raise enqueued
        if isinstance(created, BaseException):
            # The message is queued, so it is accepted: delivery records its state itself.
            log.warning(
                "state record for %s not written (%s); delivery will create it", record.id, created
            )
