"""The message state machine (mailgw/state/machine.py), exhaustively over every MessageStatus.

The transitions are pure functions of a record, so every (status, transition) pair is checked here
without storage and without a clock: the time and the retention are passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import NOW, valid_request

from mailgw.models import Envelope, ErrorInfo, MessageStatus, PayloadRef, SendRequest
from mailgw.state import MAX_HISTORY, MessageRecord, machine
from mailgw.state.machine import FINAL, SENDING_STALE_AFTER, is_stale_replay

ALL = list(MessageStatus)
STARTABLE = (MessageStatus.scheduled, MessageStatus.queued, MessageStatus.retrying)
NOT_SENT = [s for s in MessageStatus if s is not MessageStatus.sent]
#: A message in these never changes again on a delivery's account (sent, or called back).
SETTLED = (MessageStatus.sent, MessageStatus.canceled)
ERROR = ErrorInfo(code="ErrorSendAsDenied", message="no", hint="grant Send As")
OTHER_ERROR = ErrorInfo(code="Timeout", message="slow", hint="")


RETENTION = timedelta(days=30)
Transition = Callable[[MessageRecord | None], MessageRecord | None]
REQUEST = SendRequest.model_validate(
    valid_request(metadata={"orderId": "42"}, sendAt="2026-06-02T08:00:00Z"),
    context={"now": NOW},
)


def envelope(replay: int = 0, **fields: Any) -> Envelope:
    return Envelope(
        id="m-1",
        created_at=NOW - timedelta(minutes=1),
        request=REQUEST.to_json(),
        replay=replay,
        **fields,
    )


def record(status: MessageStatus, **fields: Any) -> MessageRecord:
    made = machine.new_record("m-1", status, now=NOW, retention=RETENTION, **fields)
    return made.with_step(status.value, NOW - timedelta(minutes=1))


def start(
    *,
    redelivered: bool = False,
    replay: int = 0,
    lease: str = "lease-new",
    now: Any = NOW,
) -> Transition:
    return partial(
        machine.start_sending,
        envelope=envelope(replay),
        request=REQUEST,
        lease=lease,
        now=now,
        redelivered=redelivered,
        retention=RETENTION,
    )


def mark_sent(now: Any, detail: str) -> Transition:
    return partial(machine.sent, now=now, detail=detail)


def mark_retrying(error: ErrorInfo, now: Any, *, ambiguous: bool) -> Transition:
    return partial(machine.retrying, error=error, now=now, ambiguous=ambiguous)


def mark_failed(env: Envelope, error: ErrorInfo, now: Any, **fields: Any) -> Transition:
    return partial(
        machine.failed, envelope=env, error=error, now=now, retention=RETENTION, **fields
    )


def save_checkpoint(lease: str, progress: dict[str, str]) -> Transition:
    return partial(machine.checkpoint_saved, lease=lease, checkpoint=progress)


def outcomes(rec: MessageRecord) -> list[str]:
    return [step.outcome for step in rec.history]


# --- record_for / start_sending on a message without a record ---------------------------------


def test_start_sending_without_a_record_creates_one_from_the_envelope() -> None:
    made = start()(None)
    assert made is not None
    assert made.status is MessageStatus.sending
    assert made.attempts == 1
    assert made.lease == "lease-new"
    assert made.sender == "noreply@contoso.com"
    assert made.metadata == {"orderId": "42"}
    assert made.send_at == REQUEST.send_at
    assert made.source == "api"
    # created_at is the envelope's, when that is older than the record (a lost intake write)
    assert made.created_at == NOW - timedelta(minutes=1)
    assert outcomes(made) == ["sending"]


def test_record_for_a_request_less_envelope_has_no_sender() -> None:
    bare = Envelope(id="raw-1", created_at=NOW, raw="garbage", source="queue")
    made = machine.record_for(bare, None, now=NOW, retention=RETENTION)
    assert (made.status, made.sender, made.metadata, made.source) == (
        MessageStatus.queued,
        None,
        {},
        "queue",
    )
    assert made.expires_at == NOW + RETENTION


# --- StartSending over every status ---------------------------------------------------------------


@pytest.mark.parametrize("status", STARTABLE)
def test_start_sending_takes_a_waiting_message(status: MessageStatus) -> None:
    current = record(status, attempts=2, checkpoint={"draftId": "d"})
    updated = start()(current)
    assert updated is not None
    assert updated.status is MessageStatus.sending
    assert updated.attempts == 3
    assert updated.lease == "lease-new"
    assert updated.checkpoint == {"draftId": "d"}  # progress of an earlier attempt is kept
    assert outcomes(updated) == [status.value, "sending"]


@pytest.mark.parametrize("redelivered", [False, True])
def test_start_sending_never_touches_a_sent_message(redelivered: bool) -> None:
    current = record(MessageStatus.sent, attempts=1)
    assert start(redelivered=redelivered)(current) is None
    assert start(redelivered=redelivered, replay=5)(current) is None
    stale_now = NOW + SENDING_STALE_AFTER * 3
    assert start(redelivered=redelivered, now=stale_now)(current) is None


def test_start_sending_leaves_a_message_another_live_worker_holds() -> None:
    current = record(MessageStatus.sending, attempts=1, lease="lease-other")
    current.updated_at = NOW - SENDING_STALE_AFTER + timedelta(seconds=1)
    assert start(redelivered=False)(current) is None


def test_start_sending_resumes_a_crashed_attempt_when_its_message_comes_back() -> None:
    current = record(MessageStatus.sending, attempts=1, lease="lease-old", checkpoint={"x": "1"})
    current.updated_at = NOW  # brand new: only the redelivery says its worker is gone
    updated = start(redelivered=True)(current)
    assert updated is not None
    assert updated.status is MessageStatus.sending
    assert updated.lease == "lease-new"
    assert updated.attempts == 2
    assert updated.checkpoint == {"x": "1"}
    assert outcomes(updated)[-2:] == ["resumed", "sending"]
    assert updated.history[-2].code == "crashed attempt"


def test_start_sending_resumes_a_stale_sending_record_without_redelivery() -> None:
    current = record(MessageStatus.sending, attempts=1, lease="lease-old")
    current.updated_at = NOW - SENDING_STALE_AFTER - timedelta(seconds=1)
    updated = start(redelivered=False)(current)
    assert updated is not None
    assert updated.lease == "lease-new"
    assert outcomes(updated)[-2:] == ["resumed", "sending"]


def test_stale_after_is_longer_than_a_function_may_run() -> None:
    assert timedelta(minutes=10) < SENDING_STALE_AFTER  # functionTimeout is 10 minutes


@pytest.mark.parametrize("replays", [0, 1, 3])
def test_old_copies_of_a_failed_message_do_not_start_it(replays: int) -> None:
    current = record(MessageStatus.failed, replays=replays, last_error=ERROR)
    for replay in range(replays + 1):
        assert start(replay=replay)(current) is None
        assert start(replay=replay, redelivered=True)(current) is None


def test_a_newer_replay_starts_a_failed_message_and_is_remembered() -> None:
    current = record(MessageStatus.failed, replays=1, last_error=ERROR, attempts=3)
    updated = start(replay=2)(current)
    assert updated is not None
    assert (updated.status, updated.replays, updated.attempts) == (MessageStatus.sending, 2, 4)


def test_a_replay_number_never_goes_down() -> None:
    current = record(MessageStatus.queued, replays=2)
    updated = start(replay=0)(current)
    assert updated is not None and updated.replays == 2


@pytest.mark.parametrize("status", ALL)
def test_start_sending_outcome_for_every_status(status: MessageStatus) -> None:
    """The whole table in one place: which statuses an ordinary first delivery may start."""
    current = record(status, lease="lease-other" if status is MessageStatus.sending else None)
    updated = start()(current.model_copy(deep=True))
    if status in STARTABLE:
        assert updated is not None and updated.status is MessageStatus.sending
    else:  # sending (held by a live worker), sent, failed (replay 0 is stale), canceled
        assert updated is None


# --- canceled ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL)
@pytest.mark.parametrize("attempts", [0, 1])
def test_cancel_for_every_status(status: MessageStatus, attempts: int) -> None:
    """Only a message waiting for its first attempt can be called back."""
    current = record(status, attempts=attempts)
    updated = machine.canceled(current.model_copy(deep=True), now=NOW)
    if status in machine.CANCELABLE and attempts == 0:
        assert updated is not None and updated.status is MessageStatus.canceled
        assert updated.history[-1].outcome == "canceled"
        assert current.status is status  # the input is untouched
    else:
        assert updated is None


def test_cancel_of_no_record_creates_nothing() -> None:
    assert machine.canceled(None, now=NOW) is None


@pytest.mark.parametrize("redelivered", [False, True])
@pytest.mark.parametrize("replay", [0, 1])
def test_a_canceled_message_never_starts_sending(redelivered: bool, replay: int) -> None:
    """However its queued copy comes (late, redelivered, a forged replay number)."""
    current = machine.canceled(record(MessageStatus.queued), now=NOW)
    assert current is not None
    assert start(redelivered=redelivered, replay=replay)(current) is None


@pytest.mark.parametrize(
    "transition",
    [
        lambda r: machine.retrying(r, error=ERROR, now=NOW, ambiguous=False),
        lambda r: machine.failed(r, envelope=envelope(), error=ERROR, now=NOW, retention=RETENTION),
        lambda r: machine.replayed(r, number=1, now=NOW),
        lambda r: machine.canceled(r, now=NOW),
    ],
    ids=["retrying", "failed", "replayed", "canceled-again"],
)
def test_nothing_moves_a_canceled_message(transition: Transition) -> None:
    current = machine.canceled(record(MessageStatus.scheduled), now=NOW)
    assert transition(current) is None


# --- is_stale_replay --------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL)
@pytest.mark.parametrize(("replays", "replay", "stale_if_failed"), [(0, 0, True), (1, 0, True),
                         (1, 1, True), (1, 2, False), (0, 1, False)])  # fmt: skip
def test_is_stale_replay(
    status: MessageStatus, replays: int, replay: int, stale_if_failed: bool
) -> None:
    current = record(status, replays=replays)
    expected = stale_if_failed and status is MessageStatus.failed
    assert is_stale_replay(current, replay) is expected


# --- mark_sent / mark_retrying / mark_failed never leave `sent` -----------------------------------


@pytest.mark.parametrize("status", NOT_SENT)
def test_mark_sent_from_every_other_status(status: MessageStatus) -> None:
    current = record(status, lease="lease-1", checkpoint={"draftId": "d"})
    updated = mark_sent(NOW, "sendMail")(current)
    assert updated is not None
    assert updated.status is MessageStatus.sent
    assert updated.lease is None
    assert updated.checkpoint is None
    assert updated.history[-1].outcome == "sent"
    assert updated.history[-1].code == "sendMail"
    assert updated.updated_at == NOW


def test_mark_sent_without_detail_records_no_code() -> None:
    updated = mark_sent(NOW, "")(record(MessageStatus.sending, lease="l"))
    assert updated is not None and updated.history[-1].code is None


@pytest.mark.parametrize(
    "transition",
    [
        mark_sent(NOW, "again"),
        mark_retrying(ERROR, NOW, ambiguous=True),
        mark_failed(envelope(), ERROR, NOW),
        mark_failed(envelope(replay=3), OTHER_ERROR, NOW),
        save_checkpoint("lease-1", {"draftId": "late"}),
    ],
    ids=["mark_sent", "mark_retrying", "mark_failed", "mark_failed_replay", "save_checkpoint"],
)
def test_nothing_leaves_sent(transition: Callable[[MessageRecord | None], Any]) -> None:
    current = record(MessageStatus.sent, lease=None)
    assert transition(current) is None
    assert current.status is MessageStatus.sent


@pytest.mark.parametrize(
    "transition",
    [
        mark_sent(NOW, "x"),
        mark_retrying(ERROR, NOW, ambiguous=False),
        save_checkpoint("l", {}),
    ],
    ids=["mark_sent", "mark_retrying", "save_checkpoint"],
)
def test_transitions_on_a_missing_record_create_nothing(
    transition: Callable[[MessageRecord | None], Any],
) -> None:
    assert transition(None) is None


@pytest.mark.parametrize("status", ALL)
def test_mark_retrying_for_every_status(status: MessageStatus) -> None:
    current = record(status, lease="lease-1")
    updated = mark_retrying(ERROR, NOW, ambiguous=False)(current)
    if status in FINAL:
        assert updated is None
        return
    assert updated is not None
    assert updated.status is MessageStatus.retrying
    assert updated.last_error == ERROR
    assert updated.lease is None
    assert updated.ambiguous is False
    assert (updated.history[-1].outcome, updated.history[-1].code) == ("retry", ERROR.code)


def test_ambiguity_is_sticky_across_retries() -> None:
    current = record(MessageStatus.sending)
    once = mark_retrying(OTHER_ERROR, NOW, ambiguous=True)(current)
    assert once is not None and once.ambiguous
    twice = mark_retrying(OTHER_ERROR, NOW, ambiguous=False)(once)
    assert twice is not None and twice.ambiguous


@pytest.mark.parametrize("status", [s for s in MessageStatus if s not in SETTLED])
def test_mark_failed_for_every_status_but_sent_or_canceled(status: MessageStatus) -> None:
    current = record(status, lease="lease-1", last_error=OTHER_ERROR)
    updated = mark_failed(envelope(), ERROR, NOW)(current)
    assert updated is not None
    assert updated.status is MessageStatus.failed
    assert updated.last_error == ERROR
    assert updated.lease is None
    assert (updated.history[-1].outcome, updated.history[-1].code) == ("failed", ERROR.code)


def test_mark_failed_creates_the_record_of_a_message_that_had_none() -> None:
    bare = Envelope(id="q-1", created_at=NOW - timedelta(hours=1), raw="x", source="queue")
    made = mark_failed(bare, ERROR, NOW)(None)
    assert made is not None
    assert (made.id, made.status, made.source, made.last_error) == (
        "q-1",
        MessageStatus.failed,
        "queue",
        ERROR,
    )
    assert made.created_at == NOW - timedelta(hours=1)
    assert outcomes(made) == ["failed"]


def test_mark_failed_twice_with_the_same_error_changes_nothing() -> None:
    current = record(MessageStatus.failed, last_error=ERROR)
    assert mark_failed(envelope(), ERROR, NOW)(current) is None
    again = mark_failed(envelope(), OTHER_ERROR, NOW)(current)
    assert again is not None and again.last_error == OTHER_ERROR


# --- save_checkpoint only under the matching lease ---------------------------------------------


@pytest.mark.parametrize("status", ALL)
def test_save_checkpoint_needs_the_lease(status: MessageStatus) -> None:
    progress = {"draftId": "AAMk", "stage": "created"}
    held = record(status, lease="lease-1")
    if status is MessageStatus.sent:
        held.lease = None  # mark_sent clears it; a late checkpoint finds no lease
        assert save_checkpoint("lease-1", progress)(held) is None
        return
    updated = save_checkpoint("lease-1", progress)(held)
    assert updated is not None and updated.checkpoint == progress
    progress["stage"] = "ready"
    assert updated.checkpoint["stage"] == "created"  # a copy, not the caller's dict
    assert save_checkpoint("lease-2", progress)(record(status, lease="lease-1")) is None
    assert save_checkpoint("lease-1", progress)(record(status, lease=None)) is None


def test_a_resumed_attempt_takes_over_the_checkpoint() -> None:
    current = record(MessageStatus.sending, lease="lease-old")
    resumed = start(redelivered=True, lease="lease-new")(current)
    assert resumed is not None
    assert save_checkpoint("lease-old", {"draftId": "x"})(resumed) is None
    assert save_checkpoint("lease-new", {"draftId": "y"})(resumed) is not None


# --- history is bounded ------------------------------------------------------------------------


def test_history_keeps_the_newest_50_steps() -> None:
    current = record(MessageStatus.queued)
    for n in range(MAX_HISTORY + 20):
        current = current.with_step("retry", NOW + timedelta(seconds=n), f"c{n}")
    assert MAX_HISTORY == 50
    assert len(current.history) == 50
    assert current.history[0].code == "c20"
    assert current.history[-1].code == f"c{MAX_HISTORY + 19}"
    updated = start()(current)
    assert updated is not None
    assert len(updated.history) == 50
    assert updated.history[-1].outcome == "sending"


# --- a random walk: once sent, always sent ------------------------------------------------------

STEPS = st.sampled_from(
    [
        "start",
        "start_redelivered",
        "start_stale",
        "start_replay",
        "sent",
        "retrying",
        "failed",
        "failed_other",
        "checkpoint",
    ]
)


def apply(step: str, current: MessageRecord, n: int) -> MessageRecord:
    now = NOW + timedelta(minutes=n)
    transitions: dict[str, Transition] = {
        "start": start(lease=f"l{n}", now=now),
        "start_redelivered": start(lease=f"l{n}", now=now, redelivered=True),
        "start_stale": start(lease=f"l{n}", now=now + SENDING_STALE_AFTER * 2),
        "start_replay": start(lease=f"l{n}", now=now, replay=current.replays + 1),
        "sent": mark_sent(now, "x"),
        "retrying": mark_retrying(OTHER_ERROR, now, ambiguous=n % 2 == 0),
        "failed": mark_failed(envelope(), ERROR, now),
        "failed_other": mark_failed(envelope(), OTHER_ERROR, now),
        "checkpoint": save_checkpoint(current.lease or "none", {"n": str(n)}),
    }
    before = current.model_dump()
    updated = transitions[step](current)
    assert current.model_dump() == before  # a transition never changes its input
    if updated is not None:
        updated.updated_at = now  # as StateStore.transition does
    return updated or current


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), st.lists(STEPS, max_size=30))
def test_random_walk_never_leaves_sent_and_keeps_invariants(
    initial: MessageStatus, steps: list[str]
) -> None:
    current = record(initial)
    seen_sent = initial is MessageStatus.sent
    attempts = current.attempts
    for n, step in enumerate(steps):
        current = apply(step, current, n)
        seen_sent = seen_sent or current.status is MessageStatus.sent
        if seen_sent:
            assert current.status is MessageStatus.sent
        assert current.attempts >= attempts
        attempts = current.attempts
        assert len(current.history) <= MAX_HISTORY
        assert current.status is MessageStatus.sending or current.lease is None


# --- failed with a kept payload (the poison queue's record), replayed, confirmed ---------------

REF = PayloadRef(container="mail-payloads", blob="m-1.json", sha256="0" * 64, size=10)


def test_failed_keeps_the_payload_where_a_replay_finds_it() -> None:
    current = record(MessageStatus.failed, last_error=ERROR)
    kept = mark_failed(envelope(), ERROR, NOW, payload=REF)(current)
    assert kept is not None and kept.payload_ref == REF
    assert outcomes(kept) == outcomes(current)  # the same failure: no new step
    assert mark_failed(envelope(), ERROR, NOW, payload=REF)(kept) is None


def test_failed_with_a_payload_never_touches_a_sent_message() -> None:
    assert mark_failed(envelope(), ERROR, NOW, payload=REF)(record(MessageStatus.sent)) is None


@pytest.mark.parametrize("status", ALL)
def test_replayed_only_from_failed_and_only_once_per_number(status: MessageStatus) -> None:
    current = record(status, replays=1, last_error=ERROR)
    updated = machine.replayed(current, number=2, now=NOW)
    if status is not MessageStatus.failed:
        assert updated is None
        return
    assert updated is not None
    assert (updated.status, updated.replays) == (MessageStatus.queued, 2)
    assert (updated.history[-1].outcome, updated.history[-1].code) == ("replayed", "replay 2")
    assert machine.replayed(current, number=1, now=NOW) is None  # an older number: too late


def test_confirmed_sets_the_flag_once() -> None:
    current = record(MessageStatus.queued, confirmed=False)
    updated = machine.confirmed(current)
    assert updated is not None and updated.confirmed and not current.confirmed
    assert machine.confirmed(updated) is None
    assert machine.confirmed(None) is None


def test_accepted_records_a_keyed_message_unconfirmed_with_its_answer() -> None:
    made = machine.accepted(
        "m-9",
        MessageStatus.scheduled,
        REQUEST,
        now=NOW,
        retention=RETENTION,
        fingerprint="f" * 64,
        response={"id": "m-9"},
        key_expires_at=NOW + timedelta(hours=24),
    )
    assert (made.status, made.confirmed, made.request_hash) == (
        MessageStatus.scheduled,
        False,
        "f" * 64,
    )
    assert (made.sender, made.send_at, made.expires_at) == (
        "noreply@contoso.com",
        REQUEST.send_at,
        NOW + RETENTION,
    )
    assert outcomes(made) == ["scheduled"]
    plain = machine.accepted("m-8", MessageStatus.queued, REQUEST, now=NOW, retention=RETENTION)
    assert plain.confirmed and plain.request_hash is None


# --- deferred (pacing) ----------------------------------------------------------------------------

UNTIL = NOW + timedelta(hours=23)


def defer(lease: str | None = None, redelivered: bool = False) -> Transition:
    return partial(
        machine.deferred,
        envelope=envelope(),
        request=REQUEST,
        limit="daily",
        reason="mailbox daily recipient limit",
        until=UNTIL,
        now=NOW,
        retention=RETENTION,
        lease=lease,
        redelivered=redelivered,
    )


@pytest.mark.parametrize(
    "status", [MessageStatus.queued, MessageStatus.scheduled, MessageStatus.retrying]
)
def test_deferred_schedules_a_waiting_message_without_an_attempt(status: MessageStatus) -> None:
    updated = defer()(record(status, attempts=1))
    assert updated is not None
    assert updated.status is MessageStatus.scheduled
    assert (updated.reason, updated.next_attempt_at) == ("mailbox daily recipient limit", UNTIL)
    assert updated.attempts == 1
    assert updated.history[-1].outcome == "deferred"
    assert updated.history[-1].code == "pacing/daily"
    state = updated.public(NOW)
    assert state["status"] == "scheduled"
    assert state["reason"] == "mailbox daily recipient limit"
    assert updated.public(UNTIL)["status"] == "queued"
    # the next attempt clears the reason
    started = start()(updated)
    assert started is not None and started.reason is None and not started.paced


def test_deferred_creates_the_record_of_a_producers_message() -> None:
    made = defer()(None)
    assert made is not None and made.paced and made.sender == "noreply@contoso.com"


@pytest.mark.parametrize("status", list(machine.FINAL))
def test_deferred_leaves_a_finished_message_alone(status: MessageStatus) -> None:
    assert defer()(record(status)) is None


def test_deferred_touches_a_sending_message_only_under_its_own_lease() -> None:
    sending = record(MessageStatus.sending, lease="mine")
    assert defer(lease="other")(sending) is None
    assert defer()(sending) is None
    mine = defer(lease="mine")(sending)
    assert mine is not None and mine.paced and mine.lease is None


def test_deferred_takes_back_a_message_whose_attempt_crashed_keeping_its_checkpoint() -> None:
    """Its redelivered copy is over budget (the dead worker's slots are still leased): the copy
    goes back on the queue as a new one, which must find the message waiting, not "being sent"
    by a worker that is gone (it would wait on it for ever)."""
    crashed = record(MessageStatus.sending, lease="dead", checkpoint={"draftId": "AAMk"})
    assert defer(redelivered=False)(crashed) is None  # maybe a live attempt: left alone
    taken = defer(redelivered=True)(crashed)
    assert taken is not None and taken.status is MessageStatus.scheduled
    assert taken.checkpoint == {"draftId": "AAMk"} and taken.lease is None
    assert [step.outcome for step in taken.history[-2:]] == ["resumed", "deferred"]
    resumed = start()(taken)
    assert resumed is not None and resumed.status is MessageStatus.sending
    assert resumed.checkpoint == {"draftId": "AAMk"}
