"""Every HTTP route of the gateway, declared once: the adapters (``functions/http_api.py``) take
their route, method and auth level from here, and the OpenAPI document (``functions/openapi.py``)
is generated from the same table and the pydantic models it names. A test holds the function
app's registered routes equal to this table, so no route goes undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from functions.problems import ProblemDetails
from mailgw import errors
from mailgw.auth import ROLE_READ, ROLE_READ_ALL, ROLE_REPLAY, ROLE_SEND
from mailgw.batch import BatchRequest
from mailgw.errors import GatewayError
from mailgw.models import SendRequest, SubmitResult
from mailgw.pacing.usage import MailboxUsage
from mailgw.state.record import MessageState

AuthLevel = Literal["anonymous", "function", "admin"]


class BatchAnswer(BaseModel):
    """The 207 body of a batch: one result per item, in order: the item's 202 body, or the
    problem that refused it (its ``status`` a number, where a 202 body's is a word)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    results: list[SubmitResult | ProblemDetails]


class HealthReport(BaseModel):
    """The health probe's answer: the queue is reachable, and how deep it and its poison are."""

    status: Literal["ok"]
    queue: str
    transport: str
    depth: dict[str, int]


#: What every route that parses a send request (or a batch of them) may refuse.
_REQUEST_ERRORS: tuple[type[errors.GatewayError], ...] = (
    errors.InvalidRequest,
    errors.EmptyBody,
    errors.InvalidJson,
    errors.InvalidIdempotencyKey,
    errors.TemplateNotFound,
    errors.MessageTooLarge,
    errors.UnsupportedMediaType,
    errors.IdempotencyKeyReused,
    errors.IdempotencyKeyExhausted,
    errors.QueueUnavailable,
    errors.TemplatesUnavailable,
)
#: Entra ID mode's answers on every route but the anonymous ones.
_AUTH_ERRORS: tuple[type[errors.GatewayError], ...] = (
    errors.Unauthenticated,
    errors.Forbidden,
    errors.AuthUnavailable,
)


@dataclass(frozen=True)
class Route:
    """One function: where it answers, who may call it, what it takes and what it answers."""

    name: str
    method: Literal["GET", "POST", "DELETE"]
    route: str  # relative to the host's /api prefix, as the Functions host takes it
    summary: str
    description: str
    auth: AuthLevel
    roles: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    status: int = 200
    answer: type[BaseModel] | None = None
    errors: tuple[type[GatewayError], ...] = ()
    idempotency_key: bool = False
    location: bool = False
    tags: tuple[str, ...] = ("messages",)

    @property
    def path(self) -> str:
        return f"/api/{self.route}"

    def problems(self) -> tuple[type[GatewayError], ...]:
        return self.errors + (_AUTH_ERRORS if self.auth != "anonymous" else ())


SUBMIT = Route(
    "submit_message",
    "POST",
    "v1/messages",
    "Send a message",
    "Validates the send request (or renders its template), applies the sender policy and queues "
    'it. With `"sandbox": true` everything runs but the transport.',
    "function",
    (ROLE_SEND,),
    body=SendRequest,
    status=202,
    answer=SubmitResult,
    errors=(*_REQUEST_ERRORS, errors.SenderNotAllowed),
    idempotency_key=True,
    location=True,
)
BATCH = Route(
    "submit_batch",
    "POST",
    "v1/messages:batch",
    "Send up to 500 messages",
    "Each item is checked and queued on its own, as by `POST /api/v1/messages`; the answer has "
    "one result per item, in order. An `Idempotency-Key` covers the whole batch. When the queue "
    "refused every item, the answer is the batch's 503.",
    "function",
    (ROLE_SEND,),
    body=BatchRequest,
    status=207,
    answer=BatchAnswer,
    errors=_REQUEST_ERRORS,
    idempotency_key=True,
)
STATUS = Route(
    "message_status",
    "GET",
    "v1/messages/{id}",
    "A message's state",
    "The state of a message the caller may see (in Entra ID mode: its own app's, or any with "
    "`Messages.ReadAll`).",
    "function",
    (ROLE_READ, ROLE_SEND, ROLE_READ_ALL),
    answer=MessageState,
    errors=(errors.MessageNotFound,),
)
CANCEL = Route(
    "cancel_message",
    "DELETE",
    "v1/messages/{id}",
    "Cancel a message",
    "Cancels a `scheduled` or `queued` message that no attempt has started: it is never sent, "
    "even when its queued copy is picked up later. Canceling it again answers its state. 409 "
    "once an attempt has started (or it is sent, failed). In Entra ID mode an app cancels its "
    "own messages only (`Messages.Send`).",
    "function",
    (ROLE_SEND,),
    answer=MessageState,
    errors=(errors.MessageNotFound, errors.NotCancelable),
)
REPLAY = Route(
    "replay_message",
    "POST",
    "v1/messages/{id}/replay",
    "Send a failed message again",
    "Admin key, or the Entra ID role `Messages.Replay`.",
    "admin",
    (ROLE_REPLAY,),
    status=202,
    answer=MessageState,
    errors=(errors.MessageNotFound, errors.NotReplayable),
    location=True,
)
USAGE = Route(
    "mailbox_usage",
    "GET",
    "v1/mailboxes/{address}/usage",
    "A sender mailbox's sending budgets and their use",
    "Recipients in the rolling 24 hours, messages this minute, concurrent requests, and whether "
    "Exchange's quota holds the mailbox (docs/operations.md, Budgets and pacing). Admin key, or "
    "the Entra ID role `Messages.ReadAll`.",
    "admin",
    (ROLE_READ_ALL,),
    answer=MailboxUsage,
    errors=(errors.InvalidMailbox,),
    tags=("mailboxes",),
)
HEALTH = Route(
    "health",
    "GET",
    "v1/health",
    "Is the queue reachable?",
    "Anonymous in every authentication mode.",
    "anonymous",
    answer=HealthReport,
    errors=(errors.StorageUnreachable,),
    tags=("service",),
)
OPENAPI = Route(
    "openapi",
    "GET",
    "v1/openapi.json",
    "This API's OpenAPI 3.1 document",
    "Anonymous in every authentication mode; the same document as docs/openapi.json.",
    "anonymous",
    tags=("service",),
)

ROUTES: tuple[Route, ...] = (SUBMIT, BATCH, STATUS, CANCEL, REPLAY, USAGE, HEALTH, OPENAPI)


def route_of(name: str) -> Route:
    return next(route for route in ROUTES if route.name == name)


def schema_models() -> list[tuple[type[BaseModel], Any]]:
    """The models the document describes, each in the direction it travels."""
    found: list[tuple[type[BaseModel], Any]] = [(ProblemDetails, "serialization")]
    for route in ROUTES:
        if route.body is not None:
            found.append((route.body, "validation"))
        if route.answer is not None:
            found.append((route.answer, "serialization"))
    return list(dict.fromkeys(found))
