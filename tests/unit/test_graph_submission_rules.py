"""The rules of draft mode's exactly once (mailgw/transports/graph_submission.py), without Graph:
every (draft state, stage, time since /send) pair, the checkpoint's marks, the pending retry and
the Sent Items filter. Against the stand-in: tests/graph/test_graph_submission.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailgw.models import SendRequest
from mailgw.transports.graph_message import STAMP_PROPERTY
from mailgw.transports.graph_submission import (
    PENDING,
    DraftState,
    Verdict,
    mark_not_submitted,
    mark_submitting,
    pending,
    recheck_seconds,
    sent_items_filter,
    submitted_at,
    verdict,
)

GRACE = timedelta(minutes=5)
NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
SOON, LATE = timedelta(seconds=30), timedelta(minutes=6)


@pytest.mark.parametrize(
    ("state", "stage", "since", "in_sent_items", "expected"),
    [
        # sent, however it shows: done
        ("sent", "submitting", SOON, False, "sent"),
        ("sent", "ready", None, False, "sent"),
        ("missing", "submitting", SOON, True, "sent"),
        ("missing", "submitting", LATE, True, "sent"),
        # /send may have been called, not long ago: Exchange may be sending it
        ("draft", "submitting", SOON, False, "pending"),
        ("missing", "submitting", SOON, False, "pending"),
        ("draft", "submitting", timedelta(0), False, "pending"),
        # ... and past the grace it did not: the draft is sent, a vanished one built again
        ("draft", "submitting", LATE, False, "send"),
        ("draft", "submitting", GRACE, False, "send"),
        ("missing", "submitting", LATE, False, "rebuild"),
        # /send never called: a complete draft is sent, anything else built again
        ("draft", "ready", None, False, "send"),
        ("draft", "created", None, False, "rebuild"),
        ("missing", "ready", None, False, "rebuild"),
        ("missing", "created", None, False, "rebuild"),
    ],
)
def test_verdict(
    state: DraftState,
    stage: str,
    since: timedelta | None,
    in_sent_items: bool,
    expected: Verdict,
) -> None:
    decided = verdict(state, stage, in_sent_items=in_sent_items, since_submit=since, grace=GRACE)
    assert decided == expected


def test_the_submission_mark_carries_its_time_and_is_undone_when_refused() -> None:
    checkpoint = {"draftId": "AAkALg", "stage": "ready"}
    assert submitted_at(checkpoint) is None
    mark_submitting(checkpoint, NOW)
    assert checkpoint["stage"] == "submitting"
    assert submitted_at(checkpoint) == NOW
    assert all(isinstance(v, str) for v in checkpoint.values())  # a table property's strings
    mark_not_submitted(checkpoint)
    assert checkpoint == {"draftId": "AAkALg", "stage": "ready"}
    assert submitted_at(checkpoint) is None


def test_the_pending_retry_uses_no_attempt_and_comes_back_soon() -> None:
    error = pending("draft", SOON, GRACE)
    assert (error.code, error.transient, error.pending, error.ambiguous) == (
        PENDING,
        True,
        True,
        True,
    )
    assert error.throttled is False
    assert error.retry_after == 15.0
    assert "MAILGW_GRAPH_SUBMIT_GRACE_SECONDS" in error.hint
    assert "still reads as a draft" in error.message
    assert "not found" in pending("missing", SOON, GRACE).message


@pytest.mark.parametrize(("grace", "seconds"), [(300, 15.0), (120, 12.0), (20, 2.0), (2, 1.0)])
def test_rechecks_are_a_tenth_of_the_grace_within_1_to_15_s(grace: int, seconds: float) -> None:
    assert recheck_seconds(timedelta(seconds=grace)) == seconds


def _request(**fields: object) -> SendRequest:
    document = {"from": "noreply@contoso.com", "to": ["a@example.com"], "subject": "s"}
    return SendRequest.model_validate({**document, "text": "t", **fields})


def test_a_json_draft_is_found_by_its_stamp_and_a_mime_one_by_its_message_id() -> None:
    assert sent_items_filter("m1", _request()) == (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP_PROPERTY}' and ep/value eq 'm1')"
    )
    assert sent_items_filter("m1", _request(html="<p>h</p>")) == (
        "internetMessageId eq '<m1@contoso.com>'"
    )
    # a quote in an id cannot end the literal
    assert "ep/value eq 'o''brien'" in sent_items_filter("o'brien", _request())
