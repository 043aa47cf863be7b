"""RFC 9457 problem details: every error the API returns, and the field paths callers see.

Problem ``type`` values are stable URNs (``docs/problems.md``); clients may switch on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

PROBLEM_CONTENT_TYPE = "application/problem+json"

_FRIENDLY = {
    "extra_forbidden": "is not a known field",
    "missing": "is required",
}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass
class Problem(Exception):
    """An error response. Raise it anywhere in the core; the HTTP adapter renders it."""

    status: int
    title: str
    detail: str
    slug: str
    errors: Sequence[FieldError] = field(default_factory=tuple)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return f"urn:mailgw:problem:{self.slug}"

    def to_json(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


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


def validation_problem(exc: ValidationError, raw: Any = None, *, what: str = "request") -> Problem:
    """400 with every field error; 413 when the only problem is size (callers tell them apart)."""
    errors = field_errors(exc, raw)
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5]) + (
        " …" if len(errors) > 5 else ""
    )
    if all(e["type"] == "too_large" for e in exc.errors(include_url=False)):
        return Problem(
            413,
            "Message too large",
            f"The {what} exceeds a size limit: {summary}",
            "too-large",
            errors,
        )
    count = len(errors)
    return Problem(
        400,
        "Invalid send request",
        f"The {what} has {count} invalid field{'s' if count != 1 else ''}: {summary}",
        "validation",
        errors,
    )
