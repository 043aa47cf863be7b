"""Outcome events as pure functions of a message's record (mailgw/state/events.py).

Every transition of the state machine is run here, each event checked against the committed JSON
Schema, its id against every other transition's, and its data for what it must never carry.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from event_support import assert_valid_event
from unit_helpers import NOW, valid_request

from mailgw.models import Envelope, ErrorInfo, MessageStatus, SendRequest
from mailgw.state import MessageRecord, machine
from mailgw.state.events import (
    EventKind,
    acceptance_kinds,
    event_id,
    kinds_on_start,
    latest_kinds,
    message_event,
)

SOURCE = "https://func-mailgw-x.azurewebsites.net"
RETENTION = timedelta(days=30)
TRANSIENT = ErrorInfo(code="graph/ServiceUnavailable", message="busy", hint="")
DENIED = ErrorInfo(code="graph/ErrorSendAsDenied", message="no Send As", hint="grant Send As")
SECRET_BITS = ("a@example.com", "b@example.com", "Your receipt", "plain body")


def request(**overrides: Any) -> SendRequest:
    body = valid_request(metadata={"orderId": "42"}, **overrides)
    return SendRequest.model_validate(body, context={"now": NOW})


def accepted(**overrides: Any) -> MessageRecord:
    req = request(**overrides)
    status = MessageStatus.scheduled if req.send_at else MessageStatus.queued
    return machine.accepted("m-1", status, req, now=NOW, retention=RETENTION, owner="app-1")


def event(record: MessageRecord, kind: EventKind) -> dict[str, Any]:
    made = message_event(record, kind, source=SOURCE, transport="graph")
    assert made is not None, (record.status, kind)
    assert_valid_event(made)
    return made


def start(record: MessageRecord | None, at: timedelta = timedelta(seconds=1)) -> MessageRecord:
    envelope = Envelope(id="m-1", created_at=NOW, request=request().to_json())
    moved = machine.start_sending(
        record,
        envelope=envelope,
        request=request(),
        lease=uuid.uuid4().hex,
        now=NOW + at,
        redelivered=False,
        retention=RETENTION,
    )
    assert moved is not None
    return moved


def retry(record: MessageRecord, at: timedelta = timedelta(seconds=2)) -> MessageRecord:
    moved = machine.retrying(
        record,
        error=TRANSIENT,
        now=NOW + at,
        ambiguous=False,
        next_attempt_at=NOW + at + timedelta(seconds=30),
    )
    assert moved is not None
    return moved


def fail(record: MessageRecord) -> MessageRecord:
    envelope = Envelope(id="m-1", created_at=NOW, request=request().to_json())
    moved = machine.failed(
        record, envelope=envelope, error=DENIED, now=NOW + timedelta(seconds=3), retention=RETENTION
    )
    assert moved is not None
    return moved


def sent(record: MessageRecord) -> MessageRecord:
    moved = machine.sent(record, now=NOW + timedelta(seconds=4), detail="202")
    assert moved is not None
    return moved


def test_an_accepted_message_reports_accepted_with_the_callers_metadata() -> None:
    made = event(accepted(), EventKind.accepted)
    assert made["specversion"] == "1.0"
    assert made["type"] == "mailgw.message.accepted"
    assert made["subject"] == "messages/m-1"
    assert made["source"] == SOURCE
    assert made["time"] == "2026-06-01T12:00:00Z"
    data = made["data"]
    assert data == {
        "id": "m-1",
        "status": "queued",
        "attempt": 0,
        "replay": 0,
        "transport": "graph",
        "metadata": {"orderId": "42"},
        "owner": "app-1",
    }


def test_a_scheduled_message_reports_accepted_then_scheduled_with_its_send_at() -> None:
    record = accepted(sendAt="2026-06-02T08:00:00Z")
    assert acceptance_kinds(record) == [EventKind.accepted, EventKind.scheduled]
    for kind in acceptance_kinds(record):
        made = event(record, kind)
        assert made["data"]["status"] == "scheduled"
        assert made["data"]["sendAt"] == "2026-06-02T08:00:00Z"
    assert acceptance_kinds(accepted()) == [EventKind.accepted]
    assert message_event(accepted(), EventKind.scheduled, source=SOURCE, transport="graph") is None


def test_every_path_reports_its_transitions_with_distinct_stable_ids() -> None:
    """accepted → retrying → retrying → failed → replayed → retrying → sent: seven events, seven
    ids; building any of them again from the same record gives the same event."""
    record = accepted()
    path = [(record, EventKind.accepted)]
    record = retry(start(record))
    path.append((record, EventKind.retrying))
    record = retry(start(record, timedelta(seconds=5)), timedelta(seconds=6))
    path.append((record, EventKind.retrying))
    record = fail(start(record))
    path.append((record, EventKind.failed))
    again = machine.replayed(record, number=1, now=NOW + timedelta(minutes=5))
    assert again is not None
    record = again
    path.append((record, EventKind.replayed))
    record = retry(start(record))
    path.append((record, EventKind.retrying))
    record = sent(start(record))
    path.append((record, EventKind.sent))

    events = [event(r, kind) for r, kind in path]
    assert [e["type"].rsplit(".", 1)[1] for e in events] == [k for _, k in path]
    assert len({e["id"] for e in events}) == len(events)
    assert [event(r, kind) for r, kind in path] == events  # stable: a republish is identical
    retrying, failed, replayed, final = events[1]["data"], events[3]["data"], events[4], events[-1]
    assert retrying["lastError"]["code"] == "graph/ServiceUnavailable"
    assert retrying["nextAttemptAt"] == "2026-06-01T12:00:32Z"
    assert retrying["attempt"] == 1 and events[2]["data"]["attempt"] == 2
    assert failed["lastError"] == DENIED.model_dump()
    assert (failed["status"], failed["replay"]) == ("failed", 0)
    assert (replayed["data"]["status"], replayed["data"]["replay"]) == ("queued", 1)
    assert replayed["time"] == "2026-06-01T12:05:00Z"
    assert (final["data"]["status"], final["data"]["replay"]) == ("sent", 1)
    assert "lastError" not in final["data"]


def test_ids_are_uuid5_of_the_transition_and_differ_per_message() -> None:
    assert event_id("m-1", "sent") == event_id("m-1", "sent")
    assert event_id("m-1", "sent") != event_id("m-2", "sent")
    assert uuid.UUID(event_id("m-1", "failed:0")).version == 5


def test_an_event_whose_transition_did_not_happen_is_not_made() -> None:
    record = accepted()
    for kind in (EventKind.sent, EventKind.retrying, EventKind.failed, EventKind.replayed):
        assert message_event(record, kind, source=SOURCE, transport="graph") is None
    done = sent(start(record))
    # a late retrying() on a sent message changes nothing, so reports nothing
    assert machine.retrying(done, error=TRANSIENT, now=NOW, ambiguous=False) is None
    assert message_event(done, EventKind.retrying, source=SOURCE, transport="graph") is None


def test_events_never_carry_addresses_subjects_or_bodies() -> None:
    record = sent(start(accepted(html="<p>secret html</p>")))
    text = json.dumps([event(record, k) for k in (EventKind.accepted, EventKind.sent)])
    for secret in (*SECRET_BITS, "noreply@contoso.com", "secret html"):
        assert secret not in text


def test_a_partial_or_ambiguous_send_says_so() -> None:
    record = start(accepted())
    ambiguous = machine.retrying(record, error=TRANSIENT, now=NOW, ambiguous=True)
    assert ambiguous is not None
    assert event(ambiguous, EventKind.retrying)["data"]["ambiguous"] is True
    done = machine.sent(start(ambiguous), now=NOW, detail="", refused=2)
    assert done is not None
    data = event(done, EventKind.sent)["data"]
    assert (data["ambiguous"], data["refusedRecipients"]) == (True, 2)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: accepted(), [EventKind.accepted]),
        (
            lambda: accepted(sendAt="2026-06-02T08:00:00Z"),
            [EventKind.accepted, EventKind.scheduled],
        ),
        (lambda: start(accepted()), [EventKind.accepted]),
        (lambda: retry(start(accepted())), [EventKind.retrying]),
        (lambda: start(retry(start(accepted()))), []),
        (lambda: sent(start(accepted())), [EventKind.sent]),
        (lambda: fail(start(accepted())), [EventKind.failed]),
        (
            lambda: machine.replayed(fail(start(accepted())), number=1, now=NOW),
            [EventKind.replayed],
        ),
    ],
)
def test_latest_kinds_are_the_events_of_the_last_notable_transition(
    make: Any, expected: list[EventKind]
) -> None:
    assert latest_kinds(make()) == expected


def test_starting_an_attempt_republishes_only_what_may_be_lost() -> None:
    queued = accepted()
    assert kinds_on_start(queued, redelivered=False) == (queued, [])  # the common path: nothing
    assert kinds_on_start(None, redelivered=False) == (None, [EventKind.accepted])
    unconfirmed = queued.model_copy(update={"confirmed": False})
    assert kinds_on_start(unconfirmed, redelivered=False) == (unconfirmed, [EventKind.accepted])
    retrying = retry(start(queued))
    assert kinds_on_start(retrying, redelivered=False) == (retrying, [])
    assert kinds_on_start(retrying, redelivered=True) == (retrying, [EventKind.retrying])
    replayed = machine.replayed(fail(start(queued)), number=1, now=NOW)
    assert replayed is not None
    assert kinds_on_start(replayed, redelivered=False) == (replayed, [EventKind.replayed])


def test_a_record_delivery_creates_reports_its_acceptance_from_its_own_fields() -> None:
    """A producer's message: delivery makes the record as it starts sending."""
    made = event(start(None), EventKind.accepted)
    assert made["data"]["status"] == "queued"
    assert made["data"]["attempt"] == 0
    assert made["id"] == event(accepted(), EventKind.accepted)["id"]  # the same transition


def test_the_schema_refuses_what_the_contract_excludes() -> None:
    good = event(accepted(), EventKind.accepted)
    for broken in (
        {**good, "type": "mailgw.message.delivered"},
        {**good, "subject": "m-1"},
        {**good, "data": {**good["data"], "to": ["a@example.com"]}},
        {**good, "data": {k: v for k, v in good["data"].items() if k != "metadata"}},
    ):
        with pytest.raises(AssertionError):
            assert_valid_event(broken)


def test_a_deferral_reports_its_reason_and_next_attempt() -> None:
    until = NOW + timedelta(hours=23)

    def defer(record: MessageRecord, at: datetime) -> MessageRecord:
        moved = machine.deferred(
            record,
            envelope=Envelope(id="m-1", created_at=NOW, request=request().to_json()),
            request=request(),
            limit="daily",
            reason="mailbox daily recipient limit",
            until=at,
            now=NOW + timedelta(seconds=1),
            retention=RETENTION,
        )
        assert moved is not None
        return moved

    waiting = defer(accepted(), until)
    made = event(waiting, EventKind.deferred)
    assert made["type"] == "mailgw.message.deferred"
    assert made["data"]["status"] == "scheduled"
    assert made["data"]["reason"] == "mailbox daily recipient limit"
    assert made["data"]["nextAttemptAt"] == until.isoformat().replace("+00:00", "Z")
    assert made["time"] == (NOW + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert latest_kinds(waiting) == [EventKind.deferred]
    # the same deferral has the same id; the next one another
    assert event(waiting, EventKind.deferred)["id"] == made["id"]
    again = defer(waiting, until + timedelta(hours=1))
    assert event(again, EventKind.deferred)["id"] != made["id"]
    # a record that is not deferred reports no deferral
    assert message_event(accepted(), EventKind.deferred, source=SOURCE, transport="g") is None
