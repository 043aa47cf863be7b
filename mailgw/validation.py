"""Reading a send request: the body as JSON, then the contract's rules, then the sender policy.

Intake (HTTP) and delivery (a queue producer's message) both read requests here, so both refuse
exactly the same input; each reports the refusal its own way (problem+json, or a failed message).
Field paths use the caller's own names (``to[2].address``, ``headers.X-Foo``), so a caller can find
the place in the JSON it sent.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict

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

_RECIPIENT_LISTS = ("to", "cc", "bcc", "replyTo")
#: The gateway's own words for pydantic's error types: what the field must be, with an example
#: where one helps. Anything not listed keeps pydantic's message.
_WORDING: dict[str, str] = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "datetime_type": 'must be a date and time with a time zone, e.g. "2026-12-01T08:00:00Z"',
    "datetime_parsing": 'must be a date and time with a time zone, e.g. "2026-12-01T08:00:00Z"',
    "datetime_from_date_parsing": (
        'must be a date and time with a time zone, e.g. "2026-12-01T08:00:00Z"'
    ),
    "timezone_aware": 'needs a time zone, e.g. "2026-12-01T08:00:00Z" or "+02:00"',
}
_ADDRESS_LIST = 'must be a list of addresses, e.g. ["a@example.com"]'
#: Examples per field, for the type errors a newcomer makes most.
_BY_FIELD: dict[tuple[str, str], str] = {
    **{(name, "list_type"): _ADDRESS_LIST for name in _RECIPIENT_LISTS},
    ("attachments", "list_type"): (
        'must be a list of attachments, e.g. [{"name": "r.pdf", "contentBase64": "..."}]'
    ),
    ("headers", "dict_type"): 'must be an object, e.g. {"X-Order-Id": "42"}',
    ("metadata", "dict_type"): 'must be an object of strings, e.g. {"orderId": "42"}',
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


class RequestParts(TypedDict, total=False):
    """What an API request carries besides its body, for ``Intake.submit`` and
    ``BatchIntake.submit`` alike: its headers, and ``owner``, the calling app (Entra ID mode),
    whose messages and keys are its own."""

    content_type: str | None
    traceparent: str | None
    idempotency_key: str | None
    owner: str | None


def read_request(body: bytes, parts: RequestParts, limit: int) -> tuple[str | None, Any]:
    """A request's ``Idempotency-Key`` (checked first) and its body as JSON."""
    key = check_idempotency_key(parts.get("idempotency_key"))
    return key, parse_json_body(body, parts.get("content_type"), limit)


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
    errors += [e for e in message_rules(raw) if e.field not in {f.field for f in errors}]
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
    """Turn pydantic's errors into ``{field, message}`` pairs with the caller's own field names,
    in the gateway's words, and a suggestion for a field name that is almost a known one."""
    errors = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        ctx = error.get("ctx") or {}
        if "field" in ctx:
            loc.append(ctx["field"])
        if "key" in ctx:
            loc.append(str(ctx["key"]))
        field = format_location(loc, raw) or "(body)"
        errors.append(FieldError(field, _message(error, loc)))
    return errors


def _message(error: Any, loc: list[Any]) -> str:
    kind = error["type"]
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        return "is not a known field" + _did_you_mean(name, loc)
    if kind in ("enum", "literal_error") and "expected" in (error.get("ctx") or {}):
        expected = str(error["ctx"]["expected"]).replace("'", "")
        return f"must be one of {expected.replace(' or ', ', ')}"
    known = _BY_FIELD.get((name, kind)) or _WORDING.get(kind)
    if known:
        return known
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _did_you_mean(name: str, loc: list[Any]) -> str:
    """``too`` → ``; did you mean "to"?``, for a top-level field (the usual typo)."""
    if len(loc) != 1:
        return ""
    close = difflib.get_close_matches(name, _request_fields(), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _request_fields() -> list[str]:
    return [field.alias or name for name, field in SendRequest.model_fields.items()]


def message_rules(raw: Any) -> list[FieldError]:
    """The rules about the message as a whole (recipients, a body), checked on the caller's
    document itself: pydantic runs them only once every field is valid, and a caller should
    learn every problem at once, not one retry at a time."""
    if not isinstance(raw, dict):
        return []
    errors = []
    lists = ("to", "cc", "bcc")
    given = any(isinstance(raw.get(k), list) and raw.get(k) for k in lists)
    malformed = any(k in raw and not isinstance(raw[k], list) for k in lists)  # said already
    if not given and not malformed:
        errors.append(FieldError("to", "at least one recipient in to, cc or bcc is required"))
    if not raw.get("text") and not raw.get("html") and not _renders_its_own_body(raw):
        errors.append(FieldError("text", "at least one of text or html is required"))
    return errors


def _renders_its_own_body(raw: dict[str, Any]) -> bool:
    """A request whose body comes from elsewhere (a template, where the model has one)."""
    return "template" in raw and "template" in _request_fields()


def format_location(loc: Sequence[str | int], raw: Any = None) -> str:
    """``("to", 2, "address")`` → ``to[2].address``; a bare-string recipient is ``to[2]``. A
    name made up by the caller is cut at 100 characters: it is echoed back, and recorded."""
    path = ""
    node = raw
    for index, part in enumerate(loc):
        if part == "address" and index == len(loc) - 1 and isinstance(node, str):
            break  # the caller wrote "to": ["x"], so point at to[2], not at a key they never wrote
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = str(part) if len(str(part)) <= 100 else str(part)[:99] + "…"
            path += f".{name}" if path else name
        node = _child(node, part)
    return path


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(part, str) and isinstance(node, dict):
        return node.get(part)
    return None
