"""Reading a send request: the body as JSON, then the contract's rules, then the sender policy.

Intake (HTTP) and delivery (a queue producer's message) both read requests here, so both refuse
exactly the same input; each reports the refusal its own way (problem+json, or a failed message).
Field paths use the caller's own names (``to[2].address``, ``headers.X-Foo``), so a caller can find
the place in the JSON it sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mailgw.errors import (
    EmptyBody,
    FieldError,
    InvalidIdempotencyKey,
    InvalidJson,
    InvalidRequest,
    MessageTooLarge,
    SenderNotAllowed,
    UnsupportedMediaType,
)
from mailgw.models import SendRequest
from mailgw.policy import SenderPolicy, denial_reason
from mailgw.settings import Settings

_FRIENDLY = {
    "extra_forbidden": "is not a known field",
    "missing": "is required",
}


def parse_json_body(body: bytes, content_type: str | None, limit: int) -> Any:
    """The request body as JSON, or an error saying exactly what is wrong with it."""
    if len(body) > limit:
        raise MessageTooLarge(f"The request body is {len(body)} bytes; the limit is {limit} bytes.")
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"Send the message as application/json, not {media_type}.")
    if not body.strip():
        raise EmptyBody("The request body is empty; send a JSON object.")
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise InvalidJson("The body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except (ValueError, RecursionError) as exc:  # absurd nesting or integers past Python's limit
        raise InvalidJson(f"The body is not acceptable JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise InvalidRequest(
            "The body must be a JSON object.",
            [FieldError("(body)", f"expected an object, got {type(document).__name__}")],
        )
    return document


def validate_request(
    document: Any,
    settings: Settings,
    *,
    now: datetime | None = None,
    what: str = "request",
    templates: bool = False,
) -> SendRequest:
    """The send request, or :class:`InvalidRequest` (:class:`MessageTooLarge` when the only
    problem is size) listing every broken field. ``templates``: a ``template`` may stand for
    subject/text/html (the HTTP intake renders it; a queued message must be rendered already)."""
    try:
        return SendRequest.model_validate(
            document,
            by_alias=True,
            by_name=False,  # the wire names only: "sender" or "send_at" are not part of the API
            context={
                "max_attachment_bytes": settings.max_attachment_bytes,
                "now": now,
                "templates": templates,
            },
        )
    except ValidationError as exc:
        raise validation_error(exc, document, what=what) from None


def check_sender(policy: SenderPolicy, address: str) -> None:
    """The sender policy, as enforced at intake and again at delivery."""
    if not policy.allows(address):
        raise SenderNotAllowed(
            denial_reason(policy, address),
            [FieldError("from", "this gateway is not allowed to send as this mailbox")],
        )


def check_idempotency_key(key: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1-255 printable ASCII characters, or absent."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
        raise InvalidIdempotencyKey(
            "The Idempotency-Key header must be 1-255 printable ASCII characters.",
            [FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")],
        )
    return key


def validation_error(
    exc: ValidationError, raw: Any = None, *, what: str = "request"
) -> InvalidRequest | MessageTooLarge:
    """Every field error at once; size alone is :class:`MessageTooLarge` (callers tell them
    apart: 413 is not fixed by editing a field)."""
    errors = field_errors(exc, raw)
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5]) + (
        " …" if len(errors) > 5 else ""
    )
    if all(e["type"] == "too_large" for e in exc.errors(include_url=False)):
        return MessageTooLarge(f"The {what} exceeds a size limit: {summary}", errors)
    count = len(errors)
    return InvalidRequest(
        f"The {what} has {count} invalid field{'s' if count != 1 else ''}: {summary}", errors
    )


def field_errors(exc: ValidationError, raw: Any = None) -> list[FieldError]:
    """Turn pydantic's errors into ``{field, message}`` pairs with the caller's own field names."""
    errors = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        ctx = error.get("ctx") or {}
        if "field" in ctx:
            loc.append(ctx["field"])
        if "key" in ctx:
            loc.append(str(ctx["key"]))
        message = _FRIENDLY.get(error["type"], error["msg"])
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        errors.append(FieldError(format_location(loc, raw) or "(body)", message))
    return errors


def format_location(loc: Sequence[str | int], raw: Any = None) -> str:
    """``("to", 2, "address")`` → ``to[2].address``; a bare-string recipient is ``to[2]``."""
    path = ""
    node = raw
    for index, part in enumerate(loc):
        if part == "address" and index == len(loc) - 1 and isinstance(node, str):
            break  # the caller wrote "to": ["x"], so point at to[2], not at a key they never wrote
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
        node = _child(node, part)
    return path


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(part, str) and isinstance(node, dict):
        return node.get(part)
    return None
