"""One budget (a sender mailbox's, or the tenant's) as stored, and the pure rules that spend it.

Nothing here reads a clock or touches storage (:mod:`.table` does, under the entity's ETag), so the
window arithmetic and the chunk accounting are unit-tested with plain numbers.

- Recipients are counted per rolling window (24 h) in buckets (15 min): the window's use is the sum
  of the buckets that end after ``now - window``; a bucket is freed when it ends plus the window,
  never before the recipients in it were sent 24 h ago (bucketing only ever delays).
- Messages per minute are counted per calendar minute.
- An instance does not write per message: it *leases* a chunk (recipients, messages, concurrency
  slots) that is charged at once, spends it locally, and gives back what it did not use. A lease
  whose holder died expires: its slots come free, its charge stays (it may have been spent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from mailgw.pacing.limits import MailboxLimits

#: what a deferral's ``reason`` says, by the limit that caused it
REASONS = {
    "daily": "mailbox daily recipient limit",
    "minute": "mailbox per-minute message limit",
    "concurrency": "mailbox concurrency limit",
    "tenant": "tenant daily recipient limit",
    "exchange": "Exchange sending quota",
}


@dataclass(frozen=True)
class Window:
    """The rolling window and its bucket size, in seconds (tests shorten them)."""

    seconds: int = 24 * 3600
    bucket_seconds: int = 15 * 60
    #: how long a lease holds (it is renewed while its holder is busy)
    lease_seconds: int = 60

    def bucket(self, now: float) -> int:
        return math.floor(now / self.bucket_seconds)

    def frees_at(self, bucket: int) -> float:
        """When a bucket's recipients leave the window."""
        return (bucket + 1) * self.bucket_seconds + self.seconds

    def live(self, bucket: int, now: float) -> bool:
        return self.frees_at(bucket) > now


@dataclass(frozen=True)
class Lease:
    """What one holder has reserved and not (as far as the store knows) given back."""

    until: float
    slots: int = 0
    recipients: int = 0
    messages: int = 0
    #: the bucket and the minute its recipients and messages were charged to
    bucket: int = 0
    minute: int = 0


@dataclass(frozen=True)
class Budget:
    buckets: dict[int, int] = field(default_factory=dict)
    minutes: dict[int, int] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    #: Exchange said the quota is used up: nothing goes before this time
    blocked_until: float | None = None
    blocked_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "b": {str(k): v for k, v in self.buckets.items()},
            "m": {str(k): v for k, v in self.minutes.items()},
            "l": {
                name: [x.until, x.slots, x.recipients, x.messages, x.bucket, x.minute]
                for name, x in self.leases.items()
            },
            "x": [self.blocked_until, self.blocked_reason] if self.blocked_until else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Budget:
        blocked = data.get("x") or [None, None]
        return cls(
            buckets={int(k): int(v) for k, v in data.get("b", {}).items()},
            minutes={int(k): int(v) for k, v in data.get("m", {}).items()},
            leases={name: Lease(*values) for name, values in data.get("l", {}).items()},
            blocked_until=blocked[0],
            blocked_reason=blocked[1],
        )


@dataclass(frozen=True)
class Want:
    """What a holder asks for. ``need``: the recipients of the message at hand (it must fit);
    ``recipients``/``messages``: the chunk it would like; ``slots``: the concurrency it would like
    (0: this budget has no concurrency, the tenant's); ``in_use``: slots it is using now."""

    need: int = 0
    recipients: int = 0
    messages: int = 0
    slots: int = 0
    in_use: int = 0


@dataclass(frozen=True)
class Unused:
    """What a holder gives back of its lease: not spent, as counted locally."""

    recipients: int = 0
    messages: int = 0


@dataclass(frozen=True)
class Grant:
    recipients: int
    messages: int | None  # None: no per-minute limit
    slots: int
    until: float
    minute_ends: float


@dataclass(frozen=True)
class Denial:
    until: float
    limit: str  # a key of REASONS

    @property
    def reason(self) -> str:
        return REASONS.get(self.limit, self.limit)


def prune(budget: Budget, now: float, window: Window) -> Budget:
    """Forget what no longer counts: buckets out of the window, past minutes, expired leases
    (their charge stays in its bucket), a block that has ended."""
    minute = math.floor(now / 60)
    blocked = budget.blocked_until is not None and budget.blocked_until > now
    return Budget(
        buckets={b: n for b, n in budget.buckets.items() if window.live(b, now) and n > 0},
        minutes={m: n for m, n in budget.minutes.items() if m >= minute and n > 0},
        leases={k: v for k, v in budget.leases.items() if v.until > now},
        blocked_until=budget.blocked_until if blocked else None,
        blocked_reason=budget.blocked_reason if blocked else None,
    )


def used(budget: Budget, now: float, window: Window) -> int:
    """Recipients charged in the window (spent, or reserved by a live lease)."""
    return sum(n for b, n in budget.buckets.items() if window.live(b, now))


def frees_enough(budget: Budget, now: float, window: Window, limit: int, need: int) -> float:
    """The earliest time the window has room for ``need`` more recipients."""
    over = used(budget, now, window) + need - limit
    for bucket in sorted(b for b in budget.buckets if window.live(b, now)):
        if over <= 0:
            break
        over -= budget.buckets[bucket]
        if over <= 0:
            return window.frees_at(bucket)
    return now if over <= 0 else now + window.seconds


def give_back(budget: Budget, holder: str, unused: Unused) -> Budget:
    """Return what the holder's lease did not spend to the bucket and minute it was charged to."""
    lease = budget.leases.get(holder)
    if lease is None:
        return budget  # expired and pruned: its charge stays (it may have been spent)
    buckets, minutes = dict(budget.buckets), dict(budget.minutes)
    back = min(unused.recipients, lease.recipients)
    if back and lease.bucket in buckets:
        buckets[lease.bucket] = max(buckets[lease.bucket] - back, 0)
    back_messages = min(unused.messages, lease.messages)
    if back_messages and lease.minute in minutes:
        minutes[lease.minute] = max(minutes[lease.minute] - back_messages, 0)
    leases = dict(budget.leases)
    leases[holder] = replace(lease, recipients=0, messages=0)
    return replace(budget, buckets=buckets, minutes=minutes, leases=leases)


def settle(
    budget: Budget,
    holder: str,
    *,
    now: float,
    limits: MailboxLimits,
    window: Window,
    unused: Unused,
    want: Want,
) -> tuple[Budget, Grant | Denial | None]:
    """One bookkeeping write: the holder gives back ``unused``, then asks for ``want`` (nothing:
    a release, answered None). Denied, it keeps only the slots it is using."""
    budget = give_back(prune(budget, now, window), holder, unused)
    leases = dict(budget.leases)
    mine = leases.pop(holder, None)
    others = leases
    if want.need <= 0 and want.slots <= want.in_use and want.recipients <= 0:
        if want.in_use > 0 and mine is not None:
            leases[holder] = replace(mine, slots=want.in_use, until=now + window.lease_seconds)
        return replace(budget, leases=leases), None

    denial = _denial(budget, others, now=now, limits=limits, window=window, want=want)
    if denial is not None:
        if want.in_use > 0 or (want.slots > 0 and denial.limit == "concurrency"):
            # keep the slots in use; a holder waiting for a slot is counted for the fair share
            leases[holder] = Lease(until=now + window.lease_seconds, slots=want.in_use)
        return replace(budget, leases=leases), denial

    room = limits.daily_recipients - used(budget, now, window)
    recipients = min(max(want.recipients, want.need), room)
    bucket, minute = window.bucket(now), math.floor(now / 60)
    buckets = dict(budget.buckets)
    buckets[bucket] = buckets.get(bucket, 0) + recipients
    minutes = dict(budget.minutes)
    messages: int | None = None
    if limits.per_minute is not None:
        free = limits.per_minute - minutes.get(minute, 0)
        messages = max(min(max(want.messages, 1), free), 1)
        minutes[minute] = minutes.get(minute, 0) + messages
    slots = _slots(others, limits, want) if want.slots else 0
    until = now + window.lease_seconds
    leases[holder] = Lease(until, slots, recipients, messages or 0, bucket, minute)
    grant = Grant(recipients, messages, slots, until, (minute + 1) * 60.0)
    return Budget(buckets, minutes, leases, budget.blocked_until, budget.blocked_reason), grant


def _denial(
    budget: Budget,
    others: dict[str, Lease],
    *,
    now: float,
    limits: MailboxLimits,
    window: Window,
    want: Want,
) -> Denial | None:
    if budget.blocked_until is not None and budget.blocked_until > now:
        return Denial(budget.blocked_until, "exchange")
    need = min(want.need, limits.daily_recipients)
    if used(budget, now, window) + need > limits.daily_recipients:
        held = [lease.until for lease in others.values() if lease.recipients > 0]
        later = frees_enough(budget, now, window, limits.daily_recipients, need)
        # a live lease may give back what it holds: look again when it ends, if that is sooner
        return Denial(min([later, *held]), "daily")
    minute = math.floor(now / 60)
    if limits.per_minute is not None and budget.minutes.get(minute, 0) >= limits.per_minute:
        return Denial((minute + 1) * 60.0, "minute")
    if want.slots and want.in_use == 0 and _slots(others, limits, want) < 1:
        return Denial(min(lease.until for lease in others.values()), "concurrency")
    return None


def _slots(others: dict[str, Lease], limits: MailboxLimits, want: Want) -> int:
    """Slots for this holder: its fair share of the mailbox's concurrency among the holders that
    want some (never less than it is using), within what the others leave free."""
    free = limits.concurrency - sum(lease.slots for lease in others.values())
    holders = 1 + len(others)  # an idle holder gives its lease back: every live one is busy
    fair = max(math.ceil(limits.concurrency / holders), 1)
    return max(min(max(min(want.slots, fair), want.in_use), free), 0)


def quota_ends(budget: Budget, now: float, window: Window, quota: str) -> float:
    """When Exchange's quota refusal lifts, as best the gateway can tell: the next minute for a
    rate reply; for the daily quota, when the oldest recipients it counted leave the window (at
    least a bucket from now), or a whole window from now if it counted none (Exchange saw mail
    the gateway did not send)."""
    if quota == "minute":
        return (math.floor(now / 60) + 1) * 60.0
    live = [window.frees_at(b) for b, n in budget.buckets.items() if n and window.live(b, now)]
    if not live:
        return now + window.seconds
    return max(min(live), now + window.bucket_seconds)


def blocked(budget: Budget, *, until: float, reason: str) -> Budget:
    """Exchange refused for quota: nothing more until ``until`` (the latest block wins)."""
    if budget.blocked_until is not None and budget.blocked_until >= until:
        return budget
    return replace(budget, blocked_until=until, blocked_reason=reason)


def usage(budget: Budget, *, now: float, limits: MailboxLimits, window: Window) -> dict[str, Any]:
    """What ``GET /api/v1/mailboxes/{address}/usage`` shows of one budget."""
    budget = prune(budget, now, window)
    minute = math.floor(now / 60)
    return {
        "dailyRecipients": {
            "limit": limits.daily_recipients,
            "used": used(budget, now, window),
            "reserved": sum(lease.recipients for lease in budget.leases.values()),
        },
        "perMinute": {
            "limit": limits.per_minute,
            "used": budget.minutes.get(minute, 0),
        },
        "concurrency": {
            "limit": limits.concurrency,
            "leased": sum(lease.slots for lease in budget.leases.values()),
        },
        "blockedUntil": budget.blocked_until,
        "blockedReason": budget.blocked_reason,
    }
