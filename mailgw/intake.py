"""Intake: validate → authorise the sender → enqueue. Nothing reaches the queue unless all pass.

Host-agnostic: the HTTP adapter hands over the raw body and headers and renders what comes back
(a :class:`SubmitResult`, or a raised :class:`Problem`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mailgw.ids import new_message_id
from mailgw.models import Envelope, MessageStatus, SendRequest, SubmitResult
from mailgw.policy import SenderPolicy, denial_reason
from mailgw.problems import FieldError, Problem, validation_problem
from mailgw.queue import MailQueue
from mailgw.settings import Settings

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


@dataclass
class Intake:
    settings: Settings
    queue: MailQueue
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.policy = SenderPolicy(self.settings.allowed_senders)

    async def submit(
        self, body: bytes, *, content_type: str | None = None, traceparent: str | None = None
    ) -> SubmitResult:
        document = parse_json_body(body, content_type, self.settings.max_request_bytes)
        now = self.clock()
        request = validate_request(document, self.settings, now=now)
        if not self.policy.allows(request.sender.address):
            raise forbidden_sender(self.policy, request.sender.address)
        message_id = new_message_id()
        envelope = Envelope(
            id=message_id,
            created_at=now,
            traceparent=traceparent,
            request=request.to_json(),
            source="api",
        )
        delay = request.send_at - now if request.send_at and request.send_at > now else None
        await self.queue.enqueue(envelope, delay=delay)
        return SubmitResult(
            id=message_id,
            status=MessageStatus.scheduled if delay else MessageStatus.queued,
            status_url=STATUS_PATH.format(id=message_id),
        )
