"""What the gateway knows about one message: its record, as stored and as the API shows it.

The record stands apart from the store that persists it (as powertools' idempotency ``DataRecord``
does from its persistence layer) and from the transitions that change it (:mod:`.machine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mailgw.models import ErrorInfo, MessageStatus, PayloadRef, TemplateRef

#: Steps kept in a record's history; older ones fall off (a table property has a size limit).
MAX_HISTORY = 50


@dataclass(frozen=True)
class Viewer:
    """Who is asking about a message. Messages belong to the app that sent them (Entra ID mode):
    another app sees them only with ``sees_all`` (the Messages.ReadAll role). ``None`` as a viewer
    (Functions keys, the operator's CLI) sees every message."""

    app_id: str | None
    sees_all: bool = False


class Attempt(BaseModel):
    """One step in a message's life: an attempt's outcome, a replay, a failure."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    at: datetime
    outcome: str
    code: str | None = None


class MessageState(BaseModel):
    """A message's state as ``GET /api/v1/messages/{id}`` shows it (docs/contracts.md). The
    optional members at the end appear only when they say something."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    status: MessageStatus
    attempts: int
    created_at: datetime
    updated_at: datetime
    send_at: datetime | None
    last_error: ErrorInfo | None
    metadata: dict[str, str]
    history: list[Attempt]
    ambiguous: bool
    replays: int
    #: sent, but the server refused this many of its recipients (a count, never who)
    refused_recipients: int | None = None
    #: a sandbox message: everything ran but the transport
    sandbox: bool | None = None
    #: the stored template (and its version) the message was rendered from
    template: TemplateRef | None = None
    #: ``scheduled`` by pacing: which limit it waits for, and when it is tried again
    reason: str | None = None
    next_attempt_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", by_alias=True)
        for name in _OPTIONAL_STATE:
            if body[name] is None:
                del body[name]
        return body


_OPTIONAL_STATE = ("refusedRecipients", "sandbox", "template", "reason", "nextAttemptAt")


class MessageRecord(BaseModel):
    """What the gateway knows about a message (``GET /api/v1/messages/{id}`` shows most of it)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    status: MessageStatus
    attempts: int = 0
    created_at: datetime
    updated_at: datetime
    send_at: datetime | None = None
    sender: str | None = None
    last_error: ErrorInfo | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    history: list[Attempt] = Field(default_factory=list)
    ambiguous: bool = False
    #: sent, but the server refused this many of its recipients (a count, never who)
    refused_recipients: int = 0
    source: str = "api"
    replays: int = 0
    request_hash: str | None = None
    #: for a message made with an Idempotency-Key: the first response, and until when the key holds
    response: dict[str, Any] | None = None
    key_expires_at: datetime | None = None
    #: keyed messages: set once the intake knows its message is queued (see Intake)
    confirmed: bool = True
    payload_ref: PayloadRef | None = None
    #: a failure has been reported (the poison function logged it once): False while the report
    #: is still owed, so a redelivered copy knows to make it again
    reported: bool = False
    checkpoint: dict[str, str] | None = None
    #: the Entra ID app (``azp``) that sent it; None with Functions keys and for queue producers
    owner: str | None = None
    #: the attempt that holds the message while it is ``sending``
    lease: str | None = None
    #: ``retrying``, or ``scheduled`` by pacing: when the next attempt is due
    next_attempt_at: datetime | None = None
    #: ``scheduled`` by pacing (over a sending budget): the limit it waits for
    reason: str | None = None
    #: a sandbox message (``"sandbox": true``): never handed to the transport
    sandbox: bool = False
    #: the stored template it was rendered from, at intake
    template: TemplateRef | None = None
    expires_at: datetime
    etag: str | None = Field(default=None, exclude=True)

    def public(self, now: datetime) -> dict[str, Any]:
        """The state as the API shows it (:class:`MessageState`)."""
        return self.state(now).to_json()

    def state(self, now: datetime) -> MessageState:
        """``scheduled`` turns ``queued`` once ``sendAt`` (or, deferred by pacing, its
        ``nextAttemptAt``) passes."""
        status = self.status
        paced = self.paced
        due = self.next_attempt_at if paced else self.send_at
        if status is MessageStatus.scheduled and (due is None or due <= now):
            status, paced = MessageStatus.queued, False
        return MessageState(
            id=self.id,
            status=status,
            attempts=self.attempts,
            created_at=self.created_at,
            updated_at=self.updated_at,
            send_at=self.send_at,
            last_error=self.last_error,
            metadata=self.metadata,
            history=self.history,
            ambiguous=self.ambiguous,
            replays=self.replays,
            refused_recipients=self.refused_recipients or None,  # partially sent: how many
            sandbox=self.sandbox or None,
            template=self.template,
            reason=self.reason if paced else None,
            next_attempt_at=self.next_attempt_at if paced else None,
        )

    @property
    def paced(self) -> bool:
        """Deferred by pacing: waiting for a sending budget, not for its ``sendAt``."""
        return self.status is MessageStatus.scheduled and self.reason is not None

    def visible_to(self, viewer: Viewer | None) -> bool:
        """An app sees only its own messages, unless it may see all (:class:`Viewer`)."""
        return viewer is None or viewer.sees_all or self.owner == viewer.app_id

    def with_step(self, outcome: str, now: datetime, code: str | None = None) -> MessageRecord:
        """A copy with one more history step (the history is bounded by ``MAX_HISTORY``)."""
        step = Attempt(at=now, outcome=outcome, code=code)
        return self.model_copy(
            update={"history": [*self.history, step][-MAX_HISTORY:], "updated_at": now}
        )
