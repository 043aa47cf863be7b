"""The message state machine: every transition of a :class:`MessageRecord`, as a pure function.

    scheduled → queued → sending → sent
        ↘        ↓ ↑        ↓  ↘
        canceled  retrying ←─┘   failed ──replay──→ queued

A message is canceled only while it waits for its first attempt: once any attempt started it
(``attempts`` > 0), the transport may have it, and it can no longer be called back.

A transition takes the current record (``None``: the message has none yet) and, as keywords, the
facts it needs: the time, the retention, a lease. It returns the next record, or ``None`` for "no
change", and never changes its input. Nothing here reads a clock or touches storage:
:meth:`mailgw.store.StateStore.transition` applies a transition under optimistic concurrency
(``functools.partial`` binds the facts), and the unit tests check every (status, transition) pair.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from mailgw.models import Envelope, ErrorInfo, MessageStatus, PayloadRef, SendRequest, TemplateRef
from mailgw.state.record import MessageRecord

#: A "sending" record older than this belongs to a worker that is gone (functionTimeout is 10 min).
SENDING_STALE_AFTER = timedelta(minutes=15)
FINAL = (MessageStatus.sent, MessageStatus.failed, MessageStatus.canceled)
#: What a cancellation may stop: a message no attempt has started yet.
CANCELABLE = (MessageStatus.scheduled, MessageStatus.queued)


def new_record(
    message_id: str, status: MessageStatus, *, now: datetime, retention: timedelta, **fields: Any
) -> MessageRecord:
    """A fresh record, kept for ``retention`` from ``now``."""
    return MessageRecord(
        id=message_id,
        status=status,
        created_at=now,
        updated_at=now,
        expires_at=now + retention,
        **fields,
    )


def accepted(
    message_id: str,
    status: MessageStatus,
    request: SendRequest,
    *,
    now: datetime,
    retention: timedelta,
    fingerprint: str | None = None,
    response: dict[str, Any] | None = None,
    key_expires_at: datetime | None = None,
    owner: str | None = None,
    template: TemplateRef | None = None,
    source: str = "api",
) -> MessageRecord:
    """The record intake writes for a message it accepted (``source``: api, or smtp). A keyed
    message (``fingerprint``) stays unconfirmed until intake knows its copy is queued
    (:func:`confirmed`). ``template``: the stored template it was rendered from."""
    return new_record(
        message_id,
        status,
        now=now,
        retention=retention,
        send_at=request.send_at,
        sender=request.sender.address,
        metadata=request.metadata,
        request_hash=fingerprint,
        source=source,
        owner=owner,
        response=response,
        key_expires_at=key_expires_at,
        confirmed=fingerprint is None,
        sandbox=request.sandbox,
        template=template,
    ).with_step(status.value, now)


def claimed_sender(envelope: Envelope) -> str | None:
    """The ``from`` a payload claims, even one that failed validation: operators look for the
    producer by it."""
    claimed = (envelope.request or {}).get("from")
    if isinstance(claimed, dict):
        claimed = claimed.get("address")
    if not isinstance(claimed, str):
        return None
    return claimed.strip()[:320] or None


def record_for(
    envelope: Envelope, request: SendRequest | None, *, now: datetime, retention: timedelta
) -> MessageRecord:
    """A record for a message that has none yet (a producer's, or its intake write was lost)."""
    record = new_record(
        envelope.id,
        MessageStatus.queued,
        now=now,
        retention=retention,
        source=envelope.source,
        owner=envelope.owner,
        send_at=request.send_at if request else None,
        sender=request.sender.address if request else claimed_sender(envelope),
        metadata=request.metadata if request else {},
        sandbox=request.sandbox if request else False,
    )
    return record.model_copy(update={"created_at": min(record.created_at, envelope.created_at)})


def is_stale_replay(record: MessageRecord, replay: int) -> bool:
    """A failed message's old queue copies must not resend it; only a newer replay may."""
    return record.status is MessageStatus.failed and replay <= record.replays


def confirmed(current: MessageRecord | None) -> MessageRecord | None:
    """A keyed message's intake knows its copy is queued."""
    if current is None or current.confirmed:
        return None
    return current.model_copy(update={"confirmed": True})


def _resumed(record: MessageRecord, *, redelivered: bool, now: datetime) -> MessageRecord | None:
    """A ``sending`` record another attempt left, taken over if that worker crashed (its queue
    message came back, ``redelivered``, or it is older than any live attempt could be), with the
    step that says so; None while that attempt may be alive."""
    if not (redelivered or now - record.updated_at > SENDING_STALE_AFTER):
        return None
    return record.with_step("resumed", now, "crashed attempt")


def start_sending(
    current: MessageRecord | None,
    *,
    envelope: Envelope,
    request: SendRequest,
    lease: str,
    now: datetime,
    redelivered: bool,
    retention: timedelta,
) -> MessageRecord | None:
    """queued/scheduled/retrying (or a crashed ``sending``) → sending under a new ``lease``.

    A ``sending`` record is resumed only when it was left by a worker that crashed: its queue
    message came back (``redelivered``), or it is older than any live attempt could be."""
    record = current or record_for(envelope, request, now=now, retention=retention)
    done = (MessageStatus.sent, MessageStatus.canceled)
    if record.status in done or is_stale_replay(record, envelope.replay):
        return None  # a canceled message stays unsent, however late its queued copy comes
    if record.status is MessageStatus.sending:
        resumed = _resumed(record, redelivered=redelivered, now=now)
        if resumed is None:
            return None  # another worker is sending it right now
        record = resumed
    return record.model_copy(
        update={
            "status": MessageStatus.sending,
            "attempts": record.attempts + 1,
            "lease": lease,
            "replays": max(record.replays, envelope.replay),
            "reason": None,
        }
    ).with_step("sending", now)


def sent(
    current: MessageRecord | None, *, now: datetime, detail: str, refused: int = 0
) -> MessageRecord | None:
    """→ sent: Exchange accepted the message (for all its recipients but ``refused``)."""
    if current is None or current.status is MessageStatus.sent:
        return None
    return current.model_copy(
        update={
            "status": MessageStatus.sent,
            "checkpoint": None,
            "lease": None,
            "refused_recipients": refused,
        }
    ).with_step("sent", now, detail or None)


def retrying(
    current: MessageRecord | None,
    *,
    error: ErrorInfo,
    now: datetime,
    ambiguous: bool,
    checkpoint: dict[str, str] | None = None,
    next_attempt_at: datetime | None = None,
) -> MessageRecord | None:
    """→ retrying after a transient failure (``ambiguous``: it may have gone out), keeping the
    transport's progress (``checkpoint``) for the next attempt: only the record holds it.
    ``next_attempt_at``: when the retry is due."""
    if current is None or current.status in FINAL:
        return None
    return current.model_copy(
        update={
            "status": MessageStatus.retrying,
            "last_error": error,
            "ambiguous": current.ambiguous or ambiguous,
            "lease": None,
            "checkpoint": dict(checkpoint) if checkpoint is not None else current.checkpoint,
            "next_attempt_at": next_attempt_at,
        }
    ).with_step("retry", now, error.code)


def deferred(
    current: MessageRecord | None,
    *,
    envelope: Envelope,
    request: SendRequest,
    limit: str,
    reason: str,
    until: datetime,
    now: datetime,
    retention: timedelta,
    lease: str | None = None,
    redelivered: bool = False,
) -> MessageRecord | None:
    """→ scheduled by pacing: the sender is over a budget (``limit``, said as ``reason``) and the
    message waits until ``until``. Not a failed attempt. A message that another live attempt
    holds (``sending`` under another lease than ``lease``) or that is done is left alone; one
    whose attempt crashed (``redelivered``, as for :func:`start_sending`) is taken back, its
    checkpoint kept: its copy goes back on the queue as a new one, which must find it waiting,
    not "being sent" by a worker that is gone."""
    record = current or record_for(envelope, request, now=now, retention=retention)
    if record.status in FINAL or is_stale_replay(record, envelope.replay):
        return None
    if record.status is MessageStatus.sending and record.lease != lease:
        resumed = _resumed(record, redelivered=redelivered, now=now)
        if resumed is None:
            return None
        record = resumed
    return record.model_copy(
        update={
            "status": MessageStatus.scheduled,
            "reason": reason,
            "next_attempt_at": until,
            "lease": None,
        }
    ).with_step("deferred", now, f"pacing/{limit}")


def superseded(current: MessageRecord | None, envelope: Envelope) -> bool:
    """A failure reported by this copy no longer applies: the message went out, a newer replay
    was started since, or the copy carries another body than the one that won its key."""
    if current is None:
        return False
    if current.status is MessageStatus.sent or current.replays > envelope.replay:
        return True
    return envelope.request_hash is not None and envelope.request_hash != current.request_hash


def failed(
    current: MessageRecord | None,
    *,
    envelope: Envelope,
    error: ErrorInfo,
    now: datetime,
    retention: timedelta,
    payload: PayloadRef | None = None,
) -> MessageRecord | None:
    """→ failed, creating the record if the message never had one (an invalid producer message).
    ``payload``: where its payload is kept for a replay."""
    if superseded(current, envelope):
        return None  # a late report of a copy that no longer speaks for the message
    record = current or record_for(envelope, None, now=now, retention=retention)
    if record.status is MessageStatus.canceled:
        return None  # called back before any attempt: a late failure report changes nothing
    changed = None
    if record.status is not MessageStatus.failed or record.last_error != error:
        changed = record.model_copy(
            update={
                "status": MessageStatus.failed,
                "last_error": error,
                "lease": None,
                "reported": False,
            }
        ).with_step("failed", now, error.code)
    if payload is not None and (changed or record).payload_ref != payload:
        changed = (changed or record).model_copy(update={"payload_ref": payload})
    return changed


def canceled(current: MessageRecord | None, *, now: datetime) -> MessageRecord | None:
    """scheduled/queued, before any attempt → canceled. Applied under the same optimistic
    concurrency as :func:`start_sending`, so one of the two wins on the latest record: either the
    attempt starts (and the cancellation finds ``sending``: too late) or the message is canceled
    (and the attempt finds ``canceled``: nothing to send)."""
    if current is None or current.status not in CANCELABLE or current.attempts > 0:
        return None
    return current.model_copy(update={"status": MessageStatus.canceled}).with_step("canceled", now)


def reported(current: MessageRecord | None) -> MessageRecord | None:
    """A failed message's failure has been reported (logged once, the alert counted it)."""
    if current is None or current.status is not MessageStatus.failed or current.reported:
        return None
    return current.model_copy(update={"reported": True})


def replayed(current: MessageRecord | None, *, number: int, now: datetime) -> MessageRecord | None:
    """failed → queued for replay ``number`` (a concurrent replay that got there first wins)."""
    if current is None or current.status is not MessageStatus.failed:
        return None
    if current.replays >= number:
        return None
    return current.model_copy(update={"status": MessageStatus.queued, "replays": number}).with_step(
        "replayed", now, f"replay {number}"
    )


def checkpoint_saved(
    current: MessageRecord | None, *, lease: str, checkpoint: dict[str, str]
) -> MessageRecord | None:
    """Transport progress (e.g. a draft's id), kept only by the attempt that holds the lease."""
    if current is None or current.lease != lease:
        return None
    return current.model_copy(update={"checkpoint": dict(checkpoint)})
