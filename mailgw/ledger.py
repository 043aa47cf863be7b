"""The message state machine: pure transitions over a :class:`MessageRecord`.

    scheduled → queued → sending → sent
                  ↑        ↓  ↘
                retrying ←─┘   failed ──replay──→ queued

Each function takes the current record (or None) and returns the next one, or None for "no change";
:meth:`StateStore.transition` applies it under optimistic concurrency. Keeping the rules here, apart
from storage and from the delivery flow, makes them small enough to test exhaustively.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgw.models import Envelope, ErrorInfo, MessageStatus, SendRequest
from mailgw.store import MessageRecord, StateStore, Transition

#: A "sending" record older than this belongs to a worker that is gone (functionTimeout is 10 min).
SENDING_STALE_AFTER = timedelta(minutes=15)
FINAL = (MessageStatus.sent, MessageStatus.failed)


def new_record_for(
    store: StateStore, envelope: Envelope, request: SendRequest | None = None
) -> MessageRecord:
    """A record for a message that has none yet (a producer's, or its intake write failed)."""
    record = store.new_record(
        envelope.id,
        MessageStatus.queued,
        source=envelope.source,
        send_at=request.send_at if request else None,
        sender=request.sender.address if request else None,
        metadata=request.metadata if request else {},
    )
    record.created_at = min(record.created_at, envelope.created_at)
    return record


def is_stale_replay(record: MessageRecord, envelope: Envelope) -> bool:
    """A failed message's old queue copies must not resend it; only a newer replay may."""
    return record.status is MessageStatus.failed and envelope.replay <= record.replays


@dataclass
class StartSending:
    """queued/scheduled/retrying (or a crashed ``sending``) → sending under a new lease."""

    store: StateStore
    envelope: Envelope
    request: SendRequest
    lease: str
    now: datetime
    redelivered: bool

    def resumable(self, record: MessageRecord) -> bool:
        """``sending`` left behind by a worker that crashed: its queue message came back
        (``redelivered``), or the record is older than any live attempt could be."""
        return self.redelivered or self.now - record.updated_at > SENDING_STALE_AFTER

    def __call__(self, current: MessageRecord | None) -> MessageRecord | None:
        record = current or new_record_for(self.store, self.envelope, self.request)
        if record.status is MessageStatus.sent or is_stale_replay(record, self.envelope):
            return None
        if record.status is MessageStatus.sending:
            if not self.resumable(record):
                return None  # another worker is sending it right now
            record.record("resumed", self.now, "crashed attempt")
        record.status = MessageStatus.sending
        record.attempts += 1
        record.lease = self.lease
        record.replays = max(record.replays, self.envelope.replay)
        record.record("sending", self.now)
        return record


def mark_sent(lease: str, now: datetime, detail: str) -> Transition:
    def change(current: MessageRecord | None) -> MessageRecord | None:
        if current is None or current.status is MessageStatus.sent:
            return None
        current.status = MessageStatus.sent
        current.checkpoint = None
        current.lease = None
        current.record("sent", now, detail or None)
        return current

    return change


def mark_retrying(error: ErrorInfo, now: datetime, *, ambiguous: bool) -> Transition:
    def change(current: MessageRecord | None) -> MessageRecord | None:
        if current is None or current.status in FINAL:
            return None
        current.status = MessageStatus.retrying
        current.last_error = error
        current.ambiguous = current.ambiguous or ambiguous
        current.lease = None
        current.record("retry", now, error.code)
        return current

    return change


def mark_failed(
    store: StateStore, envelope: Envelope, error: ErrorInfo, now: datetime
) -> Transition:
    """→ failed, creating the record if the message never had one (an invalid producer message)."""

    def change(current: MessageRecord | None) -> MessageRecord | None:
        record = current or new_record_for(store, envelope)
        if record.status is MessageStatus.sent:
            return None  # it went out; a late failure report changes nothing
        if record.status is MessageStatus.failed and record.last_error == error:
            return None
        record.status = MessageStatus.failed
        record.last_error = error
        record.lease = None
        record.record("failed", now, error.code)
        return record

    return change


def save_checkpoint(lease: str, checkpoint: dict[str, str]) -> Transition:
    def change(current: MessageRecord | None) -> MessageRecord | None:
        if current is None or current.lease != lease:
            return None
        current.checkpoint = dict(checkpoint)
        return current

    return change
