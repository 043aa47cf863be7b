"""Intake: validate → authorise the sender → enqueue. Nothing reaches the queue unless all pass.

Host-agnostic: the HTTP adapter hands over the raw body and headers and renders what comes back
(a :class:`SubmitResult`, or a raised :class:`mailgw.errors.GatewayError`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Unpack

from mailgw import telemetry
from mailgw.errors import IdempotencyKeyExhausted, IdempotencyKeyReused, QueueUnavailable
from mailgw.events import Events
from mailgw.ids import keyed_message_id, new_message_id
from mailgw.mime import Submission, check_senders, with_header
from mailgw.models import (
    Envelope,
    MessageStatus,
    MimePayload,
    SendRequest,
    SubmitResult,
    TemplateRef,
)
from mailgw.policy import SenderPolicy
from mailgw.queue import MailQueue, SentMessage
from mailgw.settings import Settings
from mailgw.state import machine
from mailgw.state.record import MessageRecord
from mailgw.store import StateStore
from mailgw.templates import TemplateStore, apply_template
from mailgw.transports import check_fits, check_mime_fits
from mailgw.transports.render import message_id_for
from mailgw.validation import RequestParts, check_sender, read_request, validate_request

log = logging.getLogger("mailgw.intake")

STATUS_PATH = "/api/v1/messages/{id}"
#: A stand-in message id as long as a real one, to measure a message before it has its id.
SIZING_ID = "00000000-0000-7000-8000-000000000000"
#: How long a duplicate waits for the first request with its key to confirm its message.
CONFIRM_WAIT = timedelta(seconds=2)


def request_hash(document: Any) -> str:
    """The body's fingerprint for idempotency: canonical JSON, so whitespace and key order in a
    retried request do not matter, but any value does."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Intake:
    """validate → authorise → enqueue → record the state.

    Without a key: one awaited write, the enqueue; the state record is written right after, in the
    background (delivery creates it if that write is lost), so the caller waits for one round
    trip, not two. With an ``Idempotency-Key`` the message id is derived from the key, and the
    message and its record are written at once; inserting the record is the atomic "first request
    wins". The winner confirms (in the background) that its message is queued. A duplicate takes
    back what it enqueued and answers as the first request did (422 for a different body), except
    when the first request never confirmed (it crashed between its writes): then the duplicate's
    identical copy, with the same id, stands in for the message, and delivery's de-duplication by
    id keeps it to one send.
    """

    settings: Settings
    queue: MailQueue
    store: StateStore
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    events: Events = field(default_factory=Events)
    #: where ``template`` names are looked up (None: no template store is configured)
    templates: TemplateStore | None = None

    def __post_init__(self) -> None:
        self.policy = SenderPolicy(self.settings.allowed_senders)
        self._pending: set[asyncio.Task[None]] = set()

    async def submit(self, body: bytes, **parts: Unpack[RequestParts]) -> SubmitResult:
        """One message; ``parts``: the request's headers and its owner."""
        key, document = read_request(body, parts, self.settings.max_request_bytes)
        owner = parts.get("owner")
        accepted = await self.prepare(document, self.clock(), parts.get("traceparent"), owner)
        if key is None:
            return await self.accept(accepted)
        return await self._submit_keyed(key, accepted, request_hash(document))

    async def submit_mime(
        self,
        submission: Submission,
        *,
        allowed: SenderPolicy | None = None,
        traceparent: str | None = None,
    ) -> SubmitResult:
        """A raw MIME message (SMTP intake): its senders checked against the gateway's policy
        (and ``allowed``, the client's own), then queued as submitted. The same client sending
        the same Message-ID again within the idempotency window gets the same id back and no
        second message. A message without a Message-ID gets one naming its gateway id."""
        policies = [self.policy] if allowed is None else [self.policy, allowed]
        check_senders(policies, submission)
        check_mime_fits(self.settings, len(submission.data))
        now = self.clock()
        summary = submission.summary()
        if submission.message_id is None:
            message_id = new_message_id()
            stamp = message_id_for(message_id, submission.mail_from)
            data = with_header(submission.data, "Message-ID", stamp)
            accepted = _Accepted.smtp(self.settings, summary, now, traceparent, submission, data)
            return await self.accept(accepted, message_id)
        accepted = _Accepted.smtp(
            self.settings, summary, now, traceparent, submission, submission.data
        )
        scope = f"smtp\x00{submission.client or ''}"
        # Keyed by (client, Message-ID): a client retrying after a lost 250 gets its id. The
        # fingerprint is the message itself, so that another message reusing the Message-ID (a
        # device whose counter restarted) is refused, never silently dropped as a duplicate.
        fingerprint = request_hash(
            {
                "client": submission.client,
                "id": submission.message_id,
                "from": submission.mail_from,
                "to": sorted(submission.rcpt_to),
                "data": hashlib.sha256(submission.data).hexdigest(),
            }
        )
        return await self._submit_keyed(submission.message_id, accepted, fingerprint, scope)

    async def prepare(
        self, document: Any, now: datetime, traceparent: str | None, owner: str | None
    ) -> _Accepted:
        """One send request checked by every rule (its template rendered), ready to accept."""
        request = validate_request(document, self.settings, now=now, templates=True)
        check_sender(self.policy, request.sender.address)
        request, template = await apply_template(request, self.templates, self.settings, now=now)
        check_fits(self.settings, SIZING_ID, request)
        return _Accepted(self.settings, request, now, traceparent, owner, template)

    async def accept(
        self,
        accepted: _Accepted,
        message_id: str | None = None,
        fingerprint: str | None = None,
        later: list[MessageRecord] | None = None,
    ) -> SubmitResult:
        """Enqueue a prepared message; its record follows in the background (or, given
        ``later``, is added there for the caller to write once its whole answer is out:
        :meth:`record_later`). With a ``fingerprint`` (an item of a keyed batch, whose
        ``message_id`` derives from the key) the record is written beside the enqueue before
        this returns: such an id gets no grace period from a status lookup, and delivery tells a
        copy from another body by it."""
        message_id = message_id or new_message_id()
        if fingerprint is None:
            await self._enqueue(accepted.envelope(message_id), accepted.delay)
            telemetry.message_accepted(accepted.source, accepted.request.sender.address)
            record = accepted.record(message_id)
            if later is not None:
                later.append(record)
            else:
                self._in_background(self._record(record))
            return accepted.result(message_id)
        sent, created = await asyncio.gather(
            self._enqueue(accepted.envelope(message_id, fingerprint), accepted.delay),
            self.store.create(accepted.record(message_id, fingerprint)),
            return_exceptions=True,
        )
        if isinstance(sent, BaseException):
            if created is True:
                await self.store.delete(message_id)
            raise sent
        if isinstance(created, BaseException):  # queued, so accepted: delivery records it
            log.warning("state record for %s not written (%s)", message_id, created)
        telemetry.message_accepted(accepted.source, accepted.request.sender.address)
        return accepted.result(message_id)

    async def _submit_keyed(
        self, key: str, accepted: _Accepted, fingerprint: str, scope: str | None = None
    ) -> SubmitResult:
        for generation in range(1, 100):
            message_id = keyed_message_id(key, generation, scope=scope or accepted.owner)
            envelope = accepted.envelope(message_id, fingerprint)
            record = accepted.record(message_id, fingerprint)
            sent, created = await asyncio.gather(
                self._enqueue(envelope, accepted.delay),
                self.store.create(record),
                return_exceptions=True,
            )
            if isinstance(sent, BaseException):
                if created is True:
                    await self.store.delete(message_id)
                raise sent
            if isinstance(created, BaseException):
                await self.queue.delete(sent)
                raise _unavailable() from created
            if created:
                telemetry.message_accepted(accepted.source, accepted.request.sender.address)
                self._in_background(self._confirm(record))
                return accepted.result(message_id)
            # The key was used before. Answer as its first request did; keep nothing of ours,
            # unless that request never confirmed its message was queued (it crashed between the
            # two writes): then our copy, identical and with the same id, is that message.
            existing = await self._settled(message_id)
            if existing is None or (existing.key_expires_at or accepted.now) <= accepted.now:
                await self.queue.delete(sent)
                continue  # that use has expired: the key makes a new message (next generation)
            if existing.request_hash != fingerprint:
                await self.queue.delete(sent)
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used with a different request body; use a new key "
                    "for a new message."
                )
            if _unconfirmed(existing):
                log.warning(
                    "message %s: its first request never confirmed; keeping this copy", message_id
                )
                self._in_background(self._confirm(existing))
            else:
                await self.queue.delete(sent)
            return SubmitResult.model_validate(existing.response)
        raise IdempotencyKeyExhausted("Use a new Idempotency-Key.")

    def record_later(self, records: list[MessageRecord]) -> None:
        """Write accepted messages' records in the background (see :meth:`accept`)."""
        for record in records:
            self._in_background(self._record(record))

    async def _settled(self, message_id: str) -> MessageRecord | None:
        """The key's record once its first request is done with it: a concurrent first request
        confirms within milliseconds; one still unconfirmed after ``CONFIRM_WAIT`` crashed."""
        deadline = self.clock() + CONFIRM_WAIT
        while True:
            record = await self.store.get(message_id)
            if record is None or not _unconfirmed(record) or self.clock() >= deadline:
                return record
            await asyncio.sleep(0.05)

    async def _confirm(self, record: MessageRecord) -> None:
        """Report the acceptance, then confirm: until it is confirmed, delivery reports it too
        (the first request may have died in between)."""
        await self.events.accepted(record)
        try:
            # ``record`` is as written (with its ETag) or as read: if it changed since, the ETag
            # check fails and the store reads the latest version
            await self.store.transition(record.id, machine.confirmed, known=record)
        except Exception as exc:  # a later duplicate then keeps its copy: safe, just redundant
            log.warning("message %s: confirmation not written (%s)", record.id, exc)

    async def _enqueue(self, envelope: Envelope, delay: timedelta | None) -> SentMessage:
        try:
            return await self.queue.enqueue(envelope, delay=delay)
        except Exception as exc:
            raise _unavailable() from exc

    async def _record(self, record: MessageRecord) -> None:
        """Report the acceptance, then write the record: if this process dies in between, delivery
        finds no record, makes it, and reports the acceptance itself (same event id)."""
        await self.events.accepted(record)
        try:
            await self.store.create(record)
        except Exception as exc:  # the message is queued, so accepted: delivery records it
            log.warning(
                "state record for %s not written (%s); delivery will create it", record.id, exc
            )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the background state writes (tests, and a clean shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))


def _unavailable() -> QueueUnavailable:
    return QueueUnavailable("The message could not be queued and was not accepted; retry later.")


def _unconfirmed(record: MessageRecord) -> bool:
    waiting = (MessageStatus.queued, MessageStatus.scheduled)
    return not record.confirmed and record.status in waiting


@dataclass
class _Accepted:
    """One accepted request, rendered as what intake writes for a given message id."""

    settings: Settings
    request: SendRequest
    now: datetime
    traceparent: str | None
    owner: str | None = None
    template: TemplateRef | None = None
    #: a raw MIME message (SMTP intake): queued instead of the request, which summarises it
    mime: MimePayload | None = None
    source: str = "api"

    @classmethod
    def smtp(
        cls,
        settings: Settings,
        summary: SendRequest,
        now: datetime,
        traceparent: str | None,
        submission: Submission,
        data: bytes,
    ) -> _Accepted:
        """A MIME message from the SMTP intake, queued as ``data`` (its bytes as submitted)."""
        payload = submission.payload().model_copy(
            update={"data": base64.b64encode(data).decode("ascii")}
        )
        return cls(settings, summary, now, traceparent, mime=payload, source="smtp")

    @property
    def delay(self) -> timedelta | None:
        send_at = self.request.send_at
        return send_at - self.now if send_at and send_at > self.now else None

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.scheduled if self.delay else MessageStatus.queued

    def result(self, message_id: str) -> SubmitResult:
        return SubmitResult(
            id=message_id, status=self.status, status_url=STATUS_PATH.format(id=message_id)
        )

    def envelope(self, message_id: str, fingerprint: str | None = None) -> Envelope:
        return Envelope(
            id=message_id,
            created_at=self.now,
            traceparent=self.traceparent,
            request=None if self.mime else self.request.to_json(),
            mime=self.mime,
            source="smtp" if self.source == "smtp" else "api",
            request_hash=fingerprint,
            owner=self.owner,
        )

    def record(self, message_id: str, fingerprint: str | None = None) -> MessageRecord:
        """The message's record; with an Idempotency-Key (``fingerprint``), it also keeps the
        first response for as long as the key holds."""
        keyed = fingerprint is not None
        return machine.accepted(
            message_id,
            self.status,
            self.request,
            now=self.now,
            retention=self.settings.retention,
            fingerprint=fingerprint,
            response=self.result(message_id).model_dump(mode="json", by_alias=True)
            if keyed
            else None,
            key_expires_at=self.now + self.settings.idempotency_window if keyed else None,
            owner=self.owner,
            template=self.template,
            source=self.source,
        )
