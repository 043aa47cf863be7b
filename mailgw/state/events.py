"""Outcome events: what a message's record says happened to it, as CloudEvents 1.0 (JSON).

Each event reports one transition of the state machine (:mod:`.machine`) and is a pure function of
the record as that transition left it. Its ``id`` is derived from the transition alone (the message
id and, where a transition can happen more than once, the attempt or replay it belongs to), so an
event published twice, by a retry or by a worker that replaced a crashed one, carries the same id
and consumers de-duplicate on it. Nothing here reads a clock or touches a sink: the publisher
(:mod:`mailgw.events`) decides when; this module decides what.

Event data never holds addresses, subjects or bodies: only the message id, its status, attempts,
the transport, the caller's own ``metadata`` and the last error ``{code, message, hint}``.
docs/events.md and docs/events.schema.json are the contract.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mailgw.models import MessageStatus
from mailgw.state.record import MessageRecord

SPEC_VERSION = "1.0"
TYPE_PREFIX = "mailgw.message."
SUBJECT_PREFIX = "messages/"
#: The namespace of event ids (uuid5): the same transition always gets the same id.
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mailgw:events")


class EventKind(StrEnum):
    """The ``type`` of an event is ``mailgw.message.<kind>``."""

    accepted = "accepted"
    scheduled = "scheduled"
    sent = "sent"
    retrying = "retrying"
    deferred = "deferred"
    failed = "failed"
    replayed = "replayed"
    canceled = "canceled"

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.value


#: The status a record has right after the transition each kind reports (accepted: see below).
_STATUS_AFTER = {
    EventKind.sent: MessageStatus.sent,
    EventKind.retrying: MessageStatus.retrying,
    EventKind.failed: MessageStatus.failed,
    EventKind.replayed: MessageStatus.queued,
    EventKind.canceled: MessageStatus.canceled,
    EventKind.deferred: MessageStatus.scheduled,
}
#: The history step each kind's transition writes (its time is the event's ``time``).
_STEP = {
    EventKind.sent: "sent",
    EventKind.retrying: "retry",
    EventKind.failed: "failed",
    EventKind.replayed: "replayed",
    EventKind.canceled: "canceled",
    EventKind.deferred: "deferred",
}


def scheduled_at_acceptance(record: MessageRecord) -> bool:
    """Whether the message was accepted to wait for its ``sendAt`` (intake's ``scheduled``)."""
    return record.send_at is not None and record.send_at > record.created_at


def acceptance_kinds(record: MessageRecord) -> list[EventKind]:
    """What accepting a message reports: ``accepted``, then ``scheduled`` when it waits for its
    ``sendAt``. The HTTP intake, a producer's message (its record made by delivery) and any other
    intake use this one rule."""
    if scheduled_at_acceptance(record):
        return [EventKind.accepted, EventKind.scheduled]
    return [EventKind.accepted]


def event_id(message_id: str, discriminator: str) -> str:
    """The id of the event ``<message id>:<discriminator>`` (a UUID, stable forever)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{message_id}:{discriminator}"))


def _discriminator(record: MessageRecord, kind: EventKind) -> str:
    """What makes this transition unique among the message's transitions of the same kind."""
    if kind is EventKind.retrying:
        return f"retrying:{record.attempts}"
    if kind is EventKind.failed:
        return f"failed:{record.replays}"
    if kind is EventKind.replayed:
        return f"replayed:{record.replays}"
    if kind is EventKind.deferred and record.next_attempt_at is not None:
        return f"deferred:{_rfc3339(record.next_attempt_at)}"
    return kind.value


def reports(record: MessageRecord, kind: EventKind) -> bool:
    """Whether ``record`` is in the state that a ``kind`` transition leaves: a caller that asks
    for an event its transition did not cause (it changed nothing) gets none."""
    if kind in (EventKind.accepted, EventKind.scheduled):
        return kind is EventKind.accepted or scheduled_at_acceptance(record)
    expected = _STATUS_AFTER.get(kind)
    if expected is None:
        return False
    if kind is EventKind.deferred:
        return record.paced
    if kind is EventKind.replayed:
        return record.status is expected and record.replays > 0
    return record.status is expected


def _time(record: MessageRecord, kind: EventKind) -> datetime:
    if kind in (EventKind.accepted, EventKind.scheduled):
        return record.created_at
    step = _STEP.get(kind)
    for item in reversed(record.history):
        if item.outcome == step:
            return item.at
    return record.updated_at


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _data(record: MessageRecord, kind: EventKind, transport: str) -> dict[str, Any]:
    accepting = kind in (EventKind.accepted, EventKind.scheduled)
    status = _STATUS_AFTER.get(kind)
    if status is None:
        scheduled = scheduled_at_acceptance(record)
        status = MessageStatus.scheduled if scheduled else MessageStatus.queued
    data: dict[str, Any] = {
        "id": record.id,
        "status": status.value,
        "attempt": 0 if accepting else record.attempts,
        "replay": 0 if accepting else record.replays,
        "transport": transport,
        "metadata": dict(record.metadata),
    }
    if record.owner:
        data["owner"] = record.owner
    if record.sandbox:  # every event of a sandbox message says so: nothing was mailed
        data["sandbox"] = True
    if accepting and record.send_at is not None:
        data["sendAt"] = _rfc3339(record.send_at)
    if kind in (EventKind.retrying, EventKind.failed) and record.last_error is not None:
        data["lastError"] = record.last_error.model_dump(mode="json")
    if kind in (EventKind.retrying, EventKind.deferred) and record.next_attempt_at is not None:
        data["nextAttemptAt"] = _rfc3339(record.next_attempt_at)
    if kind is EventKind.deferred and record.reason is not None:
        data["reason"] = record.reason
    if kind is EventKind.sent and record.refused_recipients:
        data["refusedRecipients"] = record.refused_recipients
    if kind in (EventKind.sent, EventKind.retrying) and record.ambiguous:
        data["ambiguous"] = True
    return data


def message_event(
    record: MessageRecord, kind: EventKind, *, source: str, transport: str
) -> dict[str, Any] | None:
    """The CloudEvent (structured JSON) for ``kind`` on ``record``, or None when the record is
    not in the state that transition leaves. ``source`` names the gateway (its URL); together
    with ``id`` it identifies the event."""
    if not reports(record, kind):
        return None
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(record.id, _discriminator(record, kind)),
        "source": source,
        "type": kind.type,
        "subject": SUBJECT_PREFIX + record.id,
        "time": _rfc3339(_time(record, kind)),
        "datacontenttype": "application/json",
        "data": _data(record, kind, transport),
    }


def latest_kinds(record: MessageRecord) -> list[EventKind]:
    """The events of the last notable transition the record shows: what a worker republishes
    when it finds a message left by one that may have died between the write and the publish."""
    if record.status is MessageStatus.sent:
        return [EventKind.sent]
    if record.status is MessageStatus.failed:
        return [EventKind.failed]
    if record.status is MessageStatus.canceled:
        return [EventKind.canceled]
    if record.status is MessageStatus.retrying:
        return [EventKind.retrying]
    if record.status is MessageStatus.queued and record.replays > 0:
        return [EventKind.replayed]
    if record.paced:
        return [EventKind.deferred]
    if record.status in (MessageStatus.queued, MessageStatus.scheduled):
        return acceptance_kinds(record)
    # sending: before its first attempt ended, the only event it had was its acceptance
    earlier = {step.outcome for step in record.history}
    return acceptance_kinds(record) if record.replays == 0 and "retry" not in earlier else []


def kinds_on_start(
    before: MessageRecord | None, *, redelivered: bool
) -> tuple[MessageRecord | None, list[EventKind]]:
    """When delivery starts an attempt, which events of the state it leaves may never have been
    published, and the record they describe (None: the one delivery just wrote).

    - no record before: delivery made it (a producer's message, or its intake died before
      writing it), so its acceptance may never have been reported.
    - an unconfirmed record: a keyed intake that may have died before publishing ``accepted``.
    - the first attempt after a replay: the replay's publisher may have died after its write.
    - ``redelivered``: the queue message came back, so its last worker died somewhere after a write.
    Otherwise the writer of the state published its events, and nothing is repeated (the common
    path costs no publish)."""
    if before is None:
        return None, [EventKind.accepted]
    if not before.confirmed:
        return before, acceptance_kinds(before)
    if redelivered or (before.status is MessageStatus.queued and before.replays > 0):
        return before, latest_kinds(before)
    return before, []
