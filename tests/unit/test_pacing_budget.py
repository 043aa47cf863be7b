"""The pacing rules on plain numbers (a fake clock): window arithmetic and chunk accounting."""

from __future__ import annotations

import json

import pytest

from mailgw.pacing.budget import (
    Budget,
    Denial,
    Grant,
    Unused,
    Want,
    Window,
    blocked,
    frees_enough,
    prune,
    quota_ends,
    settle,
    usage,
    used,
)
from mailgw.pacing.limits import LimitsError, MailboxLimits, PacingLimits, parse_overrides
from mailgw.settings import Settings, SettingsError

DAY = 24 * 3600
WINDOW = Window()  # 24 h in 15-minute buckets, 60 s leases
T0 = 1_800_000_000.0  # a bucket boundary (divisible by 900)


def ask(
    budget: Budget,
    holder: str = "a",
    *,
    now: float = T0,
    limits: MailboxLimits | None = None,
    unused: Unused | None = None,
    **want: int,
) -> tuple[Budget, Grant | Denial | None]:
    return settle(
        budget,
        holder,
        now=now,
        limits=limits or MailboxLimits(daily_recipients=100),
        window=WINDOW,
        unused=unused or Unused(),
        want=Want(**want),
    )


def test_a_grant_charges_its_whole_chunk_at_once() -> None:
    budget, grant = ask(Budget(), need=2, recipients=10, slots=4)
    assert isinstance(grant, Grant)
    assert (grant.recipients, grant.slots, grant.messages) == (10, 4, None)
    assert used(budget, T0, WINDOW) == 10
    assert grant.until == T0 + WINDOW.lease_seconds


def test_unused_recipients_go_back_to_the_bucket_they_were_charged_to() -> None:
    start = T0 + 890  # the end of a bucket
    budget, _ = ask(Budget(), now=start, need=1, recipients=10, slots=1)
    later = start + 50  # the next bucket
    released, answer = ask(budget, now=later, unused=Unused(recipients=7))  # a release
    assert answer is None
    assert used(released, later, WINDOW) == 3
    assert released.buckets == {int(T0 // 900): 3}
    assert "a" not in released.leases  # an idle holder's lease is gone: its slots are free
    # a lease that expired (its holder seemed dead) keeps its whole charge: it may have been spent
    late = start + WINDOW.lease_seconds + 1
    kept, _ = ask(budget, now=late, unused=Unused(recipients=7))
    assert used(kept, late, WINDOW) == 10


def test_the_window_rolls_bucket_by_bucket() -> None:
    budget = Budget(buckets={int(T0 // 900): 60, int(T0 // 900) + 4: 40})
    assert used(budget, T0 + DAY - 1, WINDOW) == 100
    # the first bucket ends at T0 + 900 and leaves the window 24 h after that, not before
    assert used(budget, T0 + 900 + DAY - 1, WINDOW) == 100
    assert used(budget, T0 + 900 + DAY, WINDOW) == 40
    assert frees_enough(budget, T0 + 10, WINDOW, 100, 1) == T0 + 900 + DAY
    assert frees_enough(budget, T0 + 10, WINDOW, 100, 61) == T0 + 5 * 900 + DAY


def test_over_the_daily_limit_is_denied_until_the_window_frees_enough() -> None:
    budget = Budget(buckets={int(T0 // 900): 100})
    budget, answer = ask(budget, now=T0 + 60, need=1, recipients=10)
    assert answer == Denial(T0 + 900 + DAY, "daily")
    assert answer.reason == "mailbox daily recipient limit"
    _, after = ask(budget, now=T0 + 900 + DAY, need=1, recipients=10)
    assert isinstance(after, Grant)


def test_a_grant_never_exceeds_what_is_left() -> None:
    budget = Budget(buckets={int(T0 // 900): 95})
    budget, grant = ask(budget, need=2, recipients=10)
    assert isinstance(grant, Grant) and grant.recipients == 5
    assert used(budget, T0, WINDOW) == 100


def test_another_holders_live_lease_means_look_again_when_it_ends() -> None:
    budget, _ = ask(Budget(), "a", need=1, recipients=100)
    _, answer = ask(budget, "b", now=T0 + 5, need=1, recipients=10)
    assert answer == Denial(T0 + WINDOW.lease_seconds, "daily")


def test_an_expired_lease_frees_its_slots_but_keeps_its_charge() -> None:
    limits = MailboxLimits(daily_recipients=100, concurrency=4)
    budget, _ = ask(Budget(), "dead", limits=limits, need=1, recipients=30, slots=4)
    _, refused = ask(budget, "b", now=T0 + 1, limits=limits, need=1, recipients=10, slots=4)
    assert isinstance(refused, Denial) and refused.limit == "concurrency"
    later = T0 + WINDOW.lease_seconds + 1
    budget, grant = ask(budget, "b", now=later, limits=limits, need=1, recipients=10, slots=4)
    assert isinstance(grant, Grant) and grant.slots == 4
    assert used(budget, later, WINDOW) == 40


def test_slots_are_shared_fairly_and_never_taken_from_a_holder_using_them() -> None:
    limits = MailboxLimits(daily_recipients=1000, concurrency=4)
    budget, first = ask(Budget(), "a", limits=limits, need=1, recipients=10, slots=4)
    assert isinstance(first, Grant) and first.slots == 4
    # b must wait, but is counted: a's next refill shrinks a to its fair share of 2
    budget, wait = ask(budget, "b", limits=limits, need=1, recipients=10, slots=4)
    assert isinstance(wait, Denial) and wait.limit == "concurrency"
    budget, shrunk = ask(budget, "a", limits=limits, need=1, recipients=10, slots=4, in_use=1)
    assert isinstance(shrunk, Grant) and shrunk.slots == 2
    budget, second = ask(budget, "b", limits=limits, need=1, recipients=10, slots=4)
    assert isinstance(second, Grant) and second.slots == 2
    assert sum(lease.slots for lease in budget.leases.values()) == 4
    # a holder using 3 keeps them even when its fair share is less
    many = Budget(leases={})
    many, _ = ask(many, "a", limits=limits, need=1, recipients=1, slots=4)
    many, _ = ask(many, "c", limits=limits, need=1, recipients=1, slots=4)
    many, kept = ask(many, "a", limits=limits, need=1, recipients=1, slots=4, in_use=3)
    assert isinstance(kept, Grant) and kept.slots == 3


def test_messages_per_minute_are_charged_to_the_calendar_minute() -> None:
    limits = MailboxLimits(daily_recipients=1000, per_minute=30)
    now = T0 + 10
    budget, grant = ask(Budget(), limits=limits, now=now, need=1, recipients=5, messages=25)
    assert isinstance(grant, Grant) and grant.messages == 25
    assert grant.minute_ends == T0 + 60
    budget, other = ask(budget, "b", limits=limits, now=now, need=1, recipients=5, messages=25)
    assert isinstance(other, Grant) and other.messages == 5
    budget, full = ask(budget, "c", limits=limits, now=now + 1, need=1, recipients=5, messages=1)
    assert full == Denial(T0 + 60, "minute")
    assert full.reason == "mailbox per-minute message limit"
    _, next_minute = ask(budget, "c", limits=limits, now=T0 + 60, need=1, messages=1)
    assert isinstance(next_minute, Grant)


def test_exchanges_block_holds_until_its_time() -> None:
    budget = blocked(Budget(), until=T0 + 3600, reason="graph/ErrorExceededMessageLimit")
    assert blocked(budget, until=T0 + 60, reason="x") == budget  # the later block stays
    _, answer = ask(budget, need=1, recipients=1)
    assert answer == Denial(T0 + 3600, "exchange")
    assert isinstance(ask(budget, now=T0 + 3600, need=1)[1], Grant)
    assert prune(budget, T0 + 3600, WINDOW).blocked_until is None


def test_exchanges_quota_ends_with_the_oldest_counted_recipients() -> None:
    now = T0 + 100
    assert quota_ends(Budget(), now, WINDOW, "minute") == T0 + 120
    assert quota_ends(Budget(), now, WINDOW, "daily") == now + DAY  # counted nothing: a window
    counted = Budget(buckets={int(T0 // 900) - 10: 5, int(T0 // 900): 5})
    assert quota_ends(counted, now, WINDOW, "daily") == T0 - 9 * 900 + DAY
    # never sooner than a bucket from now (the window frees a bucket at a time)
    assert (
        quota_ends(counted, T0 - 9 * 900 + DAY - 1, WINDOW, "daily") == T0 - 9 * 900 + DAY - 1 + 900
    )


def test_the_stored_form_round_trips() -> None:
    budget, _ = ask(
        Budget(), limits=MailboxLimits(per_minute=30), need=2, recipients=10, messages=5, slots=4
    )
    budget = blocked(budget, until=T0 + 60, reason="quota")
    assert Budget.from_json(json.loads(json.dumps(budget.to_json()))) == budget


def test_usage_reports_limits_use_and_reservations() -> None:
    limits = MailboxLimits(daily_recipients=100, per_minute=30)
    budget, _ = ask(Budget(), limits=limits, need=1, recipients=10, messages=5, slots=4)
    shown = usage(budget, now=T0 + 1, limits=limits, window=WINDOW)
    assert shown["dailyRecipients"] == {"limit": 100, "used": 10, "reserved": 10}
    assert shown["perMinute"] == {"limit": 30, "used": 5}
    assert shown["concurrency"] == {"limit": 4, "leased": 4}


# --- limits and settings ------------------------------------------------------------------------


def test_overrides_change_only_what_they_name() -> None:
    default = MailboxLimits(daily_recipients=10_000, per_minute=30)
    raw = json.dumps(
        {
            "HVE@Contoso.com": {"dailyRecipients": 100000, "perMinute": None},
            "b@x.org": {"concurrency": 2},
        }
    )
    overrides = parse_overrides(raw, default)
    assert overrides["hve@contoso.com"] == MailboxLimits(100_000, None, 4)
    assert overrides["b@x.org"] == MailboxLimits(10_000, 30, 2)
    limits = PacingLimits(default, overrides)
    assert limits.for_mailbox(" hve@CONTOSO.com") == overrides["hve@contoso.com"]
    assert limits.for_mailbox("other@contoso.com") == default


@pytest.mark.parametrize(
    "raw",
    [
        "[1]",
        "{not json",
        '{"nobody": {"dailyRecipients": 1}}',
        '{"a@b.c": {"dailyRecipient": 1}}',
        '{"a@b.c": {}}',
        '{"a@b.c": {"dailyRecipients": 0}}',
        '{"a@b.c": {"dailyRecipients": true}}',
        '{"a@b.c": {"concurrency": 5}}',
    ],
)
def test_bad_overrides_are_refused(raw: str) -> None:
    with pytest.raises(LimitsError):
        parse_overrides(raw, MailboxLimits())
    with pytest.raises(SettingsError, match="MAILGW_MAILBOX_LIMITS"):
        Settings.from_env({"MAILGW_MAILBOX_LIMITS": raw})


def test_pacing_settings() -> None:
    default = Settings.from_env({})
    assert default.pacing.default == MailboxLimits(10_000, None, 4)
    assert default.pacing.tenant_daily_recipients is None
    smtp = Settings.from_env(
        {"MAILGW_TRANSPORT": "smtp", "MAILGW_CREDENTIAL": "default", "MAILGW_SMTP_HOST": "h"}
    )
    assert smtp.pacing.default.per_minute == 30
    env = {
        "MAILGW_MAILBOX_DAILY_RECIPIENTS": "50",
        "MAILGW_MAILBOX_PER_MINUTE": "12",
        "MAILGW_TENANT_DAILY_RECIPIENTS": "90000",
        "MAILGW_MAILBOX_CONCURRENCY": "2",
    }
    paced = Settings.from_env(env).pacing
    assert paced.default == MailboxLimits(50, 12, 2)
    assert paced.tenant_daily_recipients == 90_000
    off = Settings.from_env({"MAILGW_TRANSPORT": "smtp", "MAILGW_MAILBOX_PER_MINUTE": "off"})
    assert off.pacing.default.per_minute is None
    for name in ("MAILGW_MAILBOX_DAILY_RECIPIENTS", "MAILGW_TENANT_DAILY_RECIPIENTS"):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: "-3"})
