"""The HTTP face of the gateway's errors: one table from each domain error to problem+json.

RFC 9457 problem details. ``type`` values are stable URNs (``urn:mailgw:problem:<slug>``, listed in
docs/problems.md); clients may switch on them. The core raises :mod:`mailgw.errors` and knows
nothing of HTTP; this table is the only place where an error gets a status code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mailgw import errors

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str
    slug: str

    @property
    def uri(self) -> str:
        return f"urn:mailgw:problem:{self.slug}"


#: Domain error → its problem type. Looked up along the error's class hierarchy.
PROBLEM_TYPES: dict[type[errors.GatewayError], ProblemType] = {
    errors.InvalidRequest: ProblemType(400, "Invalid send request", "validation"),
    errors.EmptyBody: ProblemType(400, "Empty body", "empty-body"),
    errors.InvalidMailbox: ProblemType(400, "Invalid mailbox address", "invalid-mailbox"),
    errors.InvalidJson: ProblemType(400, "Invalid JSON", "invalid-json"),
    errors.InvalidIdempotencyKey: ProblemType(
        400, "Invalid Idempotency-Key", "invalid-idempotency-key"
    ),
    errors.Unauthenticated: ProblemType(401, "Unauthorized", "unauthorized"),
    errors.Forbidden: ProblemType(403, "Forbidden", "forbidden"),
    errors.SenderNotAllowed: ProblemType(403, "Sender not allowed", "sender-not-allowed"),
    errors.MessageNotFound: ProblemType(404, "Message not found", "not-found"),
    errors.TemplateNotFound: ProblemType(400, "Unknown template", "template-not-found"),
    errors.NotReplayable: ProblemType(409, "Not replayable", "not-replayable"),
    errors.NotCancelable: ProblemType(409, "Not cancelable", "not-cancelable"),
    errors.IdempotencyKeyExhausted: ProblemType(409, "Idempotency-Key exhausted", "conflict"),
    errors.MessageTooLarge: ProblemType(413, "Message too large", "too-large"),
    errors.UnsupportedMediaType: ProblemType(
        415, "Unsupported media type", "unsupported-media-type"
    ),
    errors.IdempotencyKeyReused: ProblemType(
        422, "Idempotency-Key reused", "idempotency-key-reused"
    ),
    errors.QueueUnavailable: ProblemType(503, "Queue unavailable", "queue-unavailable"),
    errors.TemplatesUnavailable: ProblemType(503, "Templates unavailable", "templates-unavailable"),
    errors.StorageUnreachable: ProblemType(503, "Queue unreachable", "unhealthy"),
    errors.AuthUnavailable: ProblemType(503, "Token validation unavailable", "auth-unavailable"),
}
INTERNAL = ProblemType(500, "Internal error", "internal")
INTERNAL_DETAIL = "The gateway failed unexpectedly; the request was not accepted. Retry later."


class FieldProblem(BaseModel):
    """One broken rule, at a place in the caller's own JSON (``to[2].address``)."""

    field: str
    message: str


class ProblemDetails(BaseModel):
    """An ``application/problem+json`` body (RFC 9457) as the gateway writes it."""

    model_config = ConfigDict(extra="allow")

    #: ``urn:mailgw:problem:<slug>`` (docs/problems.md) for the gateway's own problems
    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None


@dataclass(frozen=True)
class Problem:
    """One problem response: its type, this occurrence's detail, and the headers it needs."""

    kind: ProblemType
    detail: str
    errors: tuple[errors.FieldError, ...] = ()
    headers: dict[str, str] | None = None

    @property
    def status(self) -> int:
        return self.kind.status

    @property
    def type(self) -> str:
        return self.kind.uri

    @property
    def slug(self) -> str:
        return self.kind.slug

    def to_json(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.kind.uri,
            "title": self.kind.title,
            "status": self.kind.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


def problem_type(error: errors.GatewayError) -> ProblemType:
    for cls in type(error).__mro__:
        kind = PROBLEM_TYPES.get(cls)
        if kind is not None:
            return kind
    return INTERNAL


def problem_for(error: errors.GatewayError) -> Problem:
    """The problem a domain error is, with ``Retry-After`` and ``WWW-Authenticate`` as it says."""
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    challenge = getattr(error, "challenge", None)
    if challenge:
        headers["WWW-Authenticate"] = challenge
    return Problem(problem_type(error), error.detail, error.errors, headers)


def internal_problem() -> Problem:
    return Problem(INTERNAL, INTERNAL_DETAIL)
