"""Delivery of one queue message: parse, validate, authorise, send, then retry or dead-letter.

The queue trigger calls :meth:`Delivery.handle` once per message. Its contract with the host:
- return normally when the message is finished with (sent, rescheduled, or moved to poison by us);
- raise only for the unexpected (a crash), so the host's own retry and ``maxDequeueCount`` apply.
A message that can never succeed (invalid, sender not allowed, permanent error) is poisoned at once
with its reason, never retried pointlessly.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal

from mailgw import faults, telemetry
from mailgw.errors import (
    GatewayError,
    InvalidEnvelope,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    PayloadMissing,
    SenderNotAllowed,
)
from mailgw.events import Events
from mailgw.mime import Submission, check_senders, read_payload
from mailgw.models import Envelope, ErrorInfo, MessageStatus, SendRequest
from mailgw.pacing import Deferral, Pacer, Permit
from mailgw.policy import SenderPolicy
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.state import machine
from mailgw.state.events import EventKind
from mailgw.state.machine import is_stale_replay
from mailgw.state.record import MessageRecord
from mailgw.store import StateStore
from mailgw.transports.base import OutboundMessage, Transport
from mailgw.transports.errors import DeliveryError
from mailgw.transports.sandbox import SandboxTransport
from mailgw.validation import check_sender, validate_request

log = logging.getLogger("mailgw.delivery")

Action = Literal[
    "sent", "retry", "scheduled", "poisoned", "duplicate", "deferred", "adopted", "canceled"
]

#: An idempotent intake records the message just after enqueueing it; a keyed message seen before
#: its record waits this long for it before being treated as the orphan of a crashed intake.
CLAIM_GRACE = timedelta(seconds=30)
#: How long a copy of a message waits while another worker is sending that message.
BUSY_DELAY = timedelta(seconds=30)


@dataclass(frozen=True)
class Outcome:
    action: Action
    message_id: str
    error: ErrorInfo | None = None
    delay: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's ``Retry-After`` is honoured exactly."""

    max_attempts: int = 8
    max_age_seconds: float = 24 * 3600
    base_seconds: float = 30.0
    cap_seconds: float = 3600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return max(retry_after, 0.0)
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


#: Why a queued message can never be delivered, as recorded with it: the gateway's own error
#: → (code, the operator's hint). The message text is the error's detail.
FAILURES: dict[type[GatewayError], tuple[str, str]] = {
    InvalidMessage: (
        "mailgw/invalid-message",
        "queue producers must enqueue a send request: a JSON object, UTF-8, Base64-encoded "
        "(docs/send-request.schema.json)",
    ),
    InvalidEnvelope: (
        "mailgw/invalid-envelope",
        "only the gateway writes envelopes; producers enqueue bare send requests",
    ),
    InvalidRequest: (
        "mailgw/invalid-request",
        "fix the producer: the message breaks the send request rules "
        "(docs/send-request.schema.json, docs/problems.md)",
    ),
    MessageTooLarge: (
        "mailgw/too-large",
        "fix the producer: the message exceeds a size limit (MAILGW_MAX_ATTACHMENT_BYTES)",
    ),
    SenderNotAllowed: (
        "mailgw/sender-not-allowed",
        "add the mailbox to MAILGW_ALLOWED_SENDERS if this gateway may send as it",
    ),
    PayloadMissing: (
        "mailgw/payload-missing",
        "the claim-checked payload was deleted or altered; send the request again",
    ),
}


def due_at(envelope: Envelope, request: SendRequest) -> datetime:
    """When a message was due: a scheduled one from its sendAt, not from when it was accepted;
    one that waited for a sending budget from the end of its wait."""
    return max(
        envelope.created_at,
        request.send_at or envelope.created_at,
        envelope.paced_until or envelope.created_at,
    )


def recipients(request: SendRequest) -> int:
    """What a message spends of its sender's daily budget (Exchange counts every recipient)."""
    return len(request.to) + len(request.cc) + len(request.bcc)


def failure(error: GatewayError) -> ErrorInfo:
    """The failure a domain error is, for the message's state and the poison queue."""
    for cls in type(error).__mro__:
        known = FAILURES.get(cls)
        if known is not None:
            return ErrorInfo(code=known[0], message=error.detail, hint=known[1])
    raise error  # not a reason to fail a message: a crash, for the host to retry


@dataclass
class Delivery:
    """One message at a time; the state store makes it exactly once from the gateway's side:
    ``sending`` is recorded before the transport is called and ``sent`` after, so a redelivered
    message that was already sent is acknowledged without sending it again."""

    settings: Settings
    queue: MailQueue
    transport: Transport
    store: StateStore
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    rng: random.Random = field(default_factory=random.Random)
    events: Events = field(default_factory=Events)
    #: what a ``"sandbox": true`` message goes through instead of the transport
    sandbox: Transport = field(default_factory=SandboxTransport)
    #: the sending budgets shared by every instance (None: not paced)
    pacer: Pacer | None = None

    def __post_init__(self) -> None:
        self.policy = SenderPolicy(self.settings.allowed_senders)

    async def handle(
        self, body: bytes | str, *, queue_message_id: str, dequeue_count: int = 1
    ) -> Outcome:
        """``dequeue_count`` > 1 means this very queue message was handed out before and not
        finished: the worker crashed (or timed out), and a ``sending`` record is its leftover."""
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        try:
            envelope = await self.queue.read(text, queue_message_id, self.clock())
        except GatewayError as error:
            # Recorded under its own queue message id: an id it claims is not trusted.
            raw = Envelope(id=queue_message_id, created_at=self.clock(), raw=text, source="queue")
            with telemetry.delivering(raw, self.transport.name) as attempt:
                return attempt.ended(await self._poison(raw, failure(error)))
        with telemetry.delivering(envelope, self.transport.name) as attempt:
            return attempt.ended(await self._attempt(envelope, dequeue_count))

    async def _attempt(self, envelope: Envelope, dequeue_count: int) -> Outcome:
        if envelope.sig is None and dequeue_count > 1:
            return await self._adopt(envelope)
        gate, known = await self._admit(envelope)
        if gate is not None:
            return gate
        try:
            loaded = await self.queue.load_payload(envelope)
            request, mime = self._validate(loaded)
            if envelope.sig is None:  # a producer's bare send request, accepted now
                telemetry.message_accepted("queue", request.sender.address)
        except GatewayError as error:
            return await self._poison(envelope, failure(error))

        now = self.clock()
        if request.send_at and request.send_at > now + timedelta(seconds=1):
            # A producer's scheduled message seen early (or a delay longer than one hop): wait on.
            delay = request.send_at - now
            await self.queue.enqueue(envelope, delay=delay)
            return Outcome("scheduled", envelope.id, delay=delay.total_seconds())

        permit: Permit | None = None
        if self.pacer is not None and not request.sandbox:
            decision = await self.pacer.admit(request.sender.address, recipients(request))
            if isinstance(decision, Deferral):
                # only this very queue message coming back proves its earlier attempt died
                redelivered = dequeue_count > 1
                return await self._pace(envelope, request, known, decision, redelivered=redelivered)
            permit = decision
        handed = [False]  # whether the transport got the message: its recipients are spent
        try:
            return await self._send(envelope, request, mime, known, dequeue_count, handed)
        finally:
            if permit is not None:
                permit.release(unsent=not handed[0])

    async def _send(
        self,
        envelope: Envelope,
        request: SendRequest,
        mime: Submission | None,
        known: MessageRecord | None,
        dequeue_count: int,
        handed: list[bool],
    ) -> Outcome:
        now = self.clock()
        lease = uuid.uuid4().hex
        start = partial(
            machine.start_sending,
            envelope=envelope,
            request=request,
            lease=lease,
            now=now,
            redelivered=dequeue_count > 1 or envelope.adopted,
            retention=self.settings.retention,
        )
        record = await self.store.transition(envelope.id, start, known)
        if record is None or record.lease != lease:
            return await self._not_ours(envelope, record)
        await self.events.started(known, record, redelivered=dequeue_count > 1)
        if record.history[-2:-1] and record.history[-2].outcome == "resumed":
            log.warning(
                "message %s: resuming after a crashed attempt%s",
                envelope.id,
                "" if record.checkpoint else " (at-least-once: it may already have been sent)",
            )

        async def checkpoint(progress: dict[str, str]) -> None:
            saved = partial(machine.checkpoint_saved, lease=lease, checkpoint=progress)
            await self.store.transition(envelope.id, saved)

        message = OutboundMessage(
            id=envelope.id,
            request=request,
            attempt=envelope.attempt + 1,
            checkpoint=record.checkpoint,
            save_checkpoint=checkpoint,
            mime=mime,
        )
        faults.point("before_send")
        transport = self.sandbox if request.sandbox else self.transport
        handed[0] = True
        try:
            with telemetry.sending(message.id, transport.name):
                receipt = await transport.send(message)
        except DeliveryError as error:
            if error.quota is not None and self.pacer is not None:
                sender = request.sender.address
                quota, code, after = error.quota, error.code, error.retry_after
                wait = await self.pacer.exhausted(sender, quota, code, after)
                log.warning("mailbox %s is over Exchange's sending quota: %s", sender, error)
                return await self._pace(envelope, request, record, wait, lease=lease)
            return await self._failed(envelope, request, error)
        faults.point("after_send")
        done = partial(
            machine.sent, now=self.clock(), detail=receipt.detail, refused=receipt.refused
        )
        # `sent` is published while it is written: what it reports is already true (docs/events.md)
        write = self.store.transition(envelope.id, done, record)
        record = await self.events.alongside(write, done(record), EventKind.sent)
        latency = (self.clock() - due_at(envelope, request)).total_seconds()
        telemetry.message_sent(receipt.transport, request.sender.address, latency)
        faults.point("after_record")
        log.info("sent %s via %s %s", envelope.id, receipt.transport, receipt.detail)
        return Outcome("sent", envelope.id, detail=receipt.detail)

    async def _admit(self, envelope: Envelope) -> tuple[Outcome | None, MessageRecord | None]:
        """Should this copy of the message be processed at all? (None, its record) means yes."""
        record = await self.store.get(envelope.id)
        if envelope.request_hash is not None:
            if record is None and self.clock() - envelope.created_at < CLAIM_GRACE:
                why = "waiting for its record"
                return await self._defer(envelope, CLAIM_GRACE / 3, why, "awaiting-record"), record
            # No record after the grace period: the intake crashed before recording; deliver it.
            if record is not None and record.request_hash != envelope.request_hash:
                return Outcome("duplicate", envelope.id, detail="another body won its key"), record
        if record is not None and record.status is MessageStatus.sent:
            await self.events.republish(record)  # its worker may have died before publishing
            return Outcome("duplicate", envelope.id, detail="already sent"), record
        if record is not None and record.status is MessageStatus.canceled:
            await self.events.republish(record)  # its canceler may have died before publishing
            return Outcome("canceled", envelope.id, detail="canceled before sending"), record
        if record is not None and is_stale_replay(record, envelope.replay):
            await self.events.republish(record)
            if not record.reported and envelope.replay == record.replays:
                # This copy failed, but its report to the poison queue was lost: report it again.
                return await self._report(envelope, record), record
            stale = Outcome("duplicate", envelope.id, detail="failed; replay it to send again")
            return stale, record
        return None, record

    async def _adopt(self, envelope: Envelope) -> Outcome:
        """A producer's bare request that a worker already failed to finish (it comes back): it
        carries on as the gateway's own sealed envelope under the same id, so that if it keeps
        crashing, the host moves a message to the poison queue that still names that id (a
        moved bare request would get a new queue message id, and its record would be lost)."""
        await self.queue.enqueue(envelope.model_copy(update={"adopted": True}))
        log.warning("message %s came back unfinished: carried on as a sealed envelope", envelope.id)
        return Outcome("adopted", envelope.id, detail="carried on as a sealed envelope")

    async def _not_ours(self, envelope: Envelope, record: MessageRecord | None) -> Outcome:
        """Starting the attempt lost to another worker: done already, or being sent right now."""
        if record is not None and record.status is MessageStatus.sent:
            return Outcome("duplicate", envelope.id, detail="already sent")
        if record is not None and record.status is MessageStatus.canceled:
            return Outcome("canceled", envelope.id, detail="canceled before sending")
        if record is not None and is_stale_replay(record, envelope.replay):
            return Outcome("duplicate", envelope.id, detail="failed; replay it to send again")
        return await self._defer(envelope, BUSY_DELAY, "another worker is sending it", "busy")

    async def _defer(self, envelope: Envelope, delay: timedelta, why: str, reason: str) -> Outcome:
        # a later copy is no proof of a crash: only the copy _adopt made is (see _attempt)
        await self.queue.enqueue(envelope.model_copy(update={"adopted": False}), delay=delay)
        telemetry.message_deferred(reason)
        log.info("message %s deferred %ss: %s", envelope.id, delay.total_seconds(), why)
        return Outcome("deferred", envelope.id, delay=delay.total_seconds(), detail=why)

    async def _pace(
        self,
        envelope: Envelope,
        request: SendRequest,
        known: MessageRecord | None,
        deferral: Deferral,
        lease: str | None = None,
        *,
        redelivered: bool = False,
    ) -> Outcome:
        """Over a sending budget: ``scheduled`` with the reason and the time it is tried again,
        and back on the queue, invisible until then. Not a failed attempt, and its wait does not
        count towards MAILGW_MAX_AGE_SECONDS."""
        now = self.clock()
        wait = partial(
            machine.deferred,
            envelope=envelope,
            request=request,
            limit=deferral.limit,
            reason=deferral.reason,
            until=deferral.until,
            now=now,
            retention=self.settings.retention,
            lease=lease,
            redelivered=redelivered,
        )
        record, stored = await self.store.apply(envelope.id, wait, known)
        if not stored or record is None:
            return await self._not_ours(envelope, record)
        if known is None:  # the record is new: nobody reported the message's acceptance yet
            await self.events.accepted(record)
        await self.events.emit(record, EventKind.deferred)
        paced = envelope.model_copy(update={"paced_until": deferral.until, "adopted": False})
        delay = max(deferral.until - now, timedelta(0))
        await self.queue.enqueue(paced, delay=delay)
        telemetry.message_deferred("pacing")
        log.info("message %s deferred until %s: %s", envelope.id, deferral.until, deferral.reason)
        return Outcome("deferred", envelope.id, delay=delay.total_seconds(), detail=deferral.reason)

    def _validate(self, envelope: Envelope) -> tuple[SendRequest, Submission | None]:
        """The request (a MIME message's summary, and the message itself), checked again."""
        if envelope.mime is not None:
            mime = read_payload(envelope.mime, max_bytes=self.settings.max_request_bytes)
            check_senders([self.policy], mime)
            return mime.summary(), mime
        if envelope.request is None:
            raise InvalidMessage("the message carries no send request")
        request = validate_request(envelope.request, self.settings, what="queued message")
        check_sender(self.policy, request.sender.address)
        return request, None

    async def _failed(
        self, envelope: Envelope, request: SendRequest, error: DeliveryError
    ) -> Outcome:
        # Throttling (Graph asking us to wait) and a pending submission (Graph has the message
        # and has not finished sending it) are not failed attempts: they do not use up the
        # attempt budget, but a message may not wait forever (MAILGW_MAX_AGE_SECONDS).
        attempt = envelope.attempt if error.throttled or error.pending else envelope.attempt + 1
        envelope = envelope.model_copy(update={"ambiguous": envelope.ambiguous or error.ambiguous})
        if error.ambiguous:
            log.warning(
                "message %s: outcome unknown after %s (it may have been sent); retrying%s",
                envelope.id,
                error.code,
                "" if error.checkpoint else " - at-least-once: a duplicate is possible",
            )
        if not error.transient:
            return await self._poison(envelope, error.info())
        now = self.clock()
        delay = self.retry.delay(attempt, error.retry_after, self.rng)
        retrying = partial(
            machine.retrying,
            error=error.info(),
            now=now,
            ambiguous=error.ambiguous,
            checkpoint=error.checkpoint,
            next_attempt_at=now + timedelta(seconds=delay),
        )
        record = await self.store.transition(envelope.id, retrying)
        age = (self.clock() - due_at(envelope, request)).total_seconds()
        if age > self.retry.max_age_seconds:
            why = f"still failing after {age / 3600:.1f} h "
            why += f"(MAILGW_MAX_AGE_SECONDS={self.retry.max_age_seconds})"
            return await self._give_up(envelope, error, why)
        if attempt >= self.retry.max_attempts:
            return await self._give_up(envelope, error, f"gave up after {attempt} attempts")
        await self.events.emit(record, EventKind.retrying)
        retry = envelope.model_copy(
            update={
                "attempt": attempt,
                "throttled": envelope.throttled + int(error.throttled),
                "error": error.info(),
            }
        )
        await self.queue.enqueue(retry, delay=timedelta(seconds=delay))
        telemetry.message_retried(error.code, self.transport.name, throttled=error.throttled)
        log.warning("retry %s in %.1fs after %s", envelope.id, delay, error)
        return Outcome("retry", envelope.id, error=error.info(), delay=delay)

    async def _give_up(self, envelope: Envelope, error: DeliveryError, why: str) -> Outcome:
        """A transient failure that lasted too long (attempts or age): poisoned with its hint."""
        info = ErrorInfo(
            code=error.code,
            message=f"{why}: {error.message}",
            hint=error.hint or "the failure persisted; fix the cause, then replay the message",
        )
        return await self._poison(envelope, info)

    async def _poison(self, envelope: Envelope, info: ErrorInfo) -> Outcome:
        """failed, in this order: its payload kept, then the state ``failed`` (so a replay works
        the moment anyone can see it failed), then the report to the poison queue (the alert).
        If the report is lost, the redelivered copy finds the failure unreported and reports it
        again (:meth:`_admit`)."""
        current = await self.store.get(envelope.id)
        if machine.superseded(current, envelope):
            return Outcome("duplicate", envelope.id, detail="superseded: sent, or replayed since")
        already = current.payload_ref if current and current.replays == envelope.replay else None
        kept = already or await self.queue.store_payload(envelope)
        failed = partial(
            machine.failed,
            envelope=envelope,
            error=info,
            now=self.clock(),
            retention=self.settings.retention,
            payload=kept,
        )
        record = await self.store.transition(envelope.id, failed, current)
        if record is None or record.status is not MessageStatus.failed:
            return Outcome("duplicate", envelope.id, detail="already sent")
        await self.events.emit(record, EventKind.failed)
        return await self._report(envelope, record)

    async def _report(self, envelope: Envelope, record: MessageRecord) -> Outcome:
        info = record.last_error or ErrorInfo(code="mailgw/unknown", message="failed")
        dead = envelope.model_copy(update={"error": info})
        await self.queue.enqueue(dead, poison=True)
        log.error(
            "message %s moved to %s: %s (%s) hint: %s",
            envelope.id,
            self.queue.poison_queue_name,
            info.message,
            info.code,
            info.hint,
        )
        return Outcome("poisoned", envelope.id, error=info)
