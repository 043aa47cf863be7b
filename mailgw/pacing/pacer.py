"""Pacing for one instance: admit a message to its sender's budget, or say until when it waits.

Each instance holds, per sender mailbox, an *allowance*: the chunk of recipients, messages and
concurrency slots its lease in the budget table (:mod:`.table`) granted. Messages spend it locally;
only an empty or expiring allowance costs a storage request (a refill, which also gives back what
was left), and an idle mailbox's allowance is given back after ``linger_seconds``. A limit that is
reached is remembered until it lifts, so a burst far over budget costs no request per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from mailgw.pacing.budget import (
    REASONS,
    Budget,
    Denial,
    Grant,
    Unused,
    Want,
    Window,
    blocked,
    quota_ends,
    settle,
    usage,
)
from mailgw.pacing.limits import MailboxLimits, PacingLimits
from mailgw.pacing.table import TENANT_KEY, BudgetTable, row_key
from mailgw.pacing.usage import MailboxUsage

log = logging.getLogger("mailgw.pacing")

#: a lease is refilled this long before it ends, so a send seldom runs on an expired lease
RENEW_MARGIN = 5.0
#: how long a message waits here for a concurrency slot before it is deferred through the queue
SLOT_WAIT_SECONDS = 10.0
#: how soon a message deferred for a concurrency slot is tried again
SLOT_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Deferral:
    """Over budget: the message waits until ``until`` (the earliest time it may fit)."""

    until: datetime
    limit: str

    @property
    def reason(self) -> str:
        return REASONS.get(self.limit, self.limit)


@dataclass
class _Allowance:
    recipients: int = 0
    messages: int | None = 0  # None: no per-minute limit
    minute_ends: float = 0.0
    slots: int = 0
    in_use: int = 0
    #: sends asking for this budget right now (the slots to ask for: no more than are wanted)
    waiting: int = 0
    until: float = 0.0
    #: a limit that holds until its time (not concurrency: that changes any moment)
    denied: Denial | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    linger: asyncio.Task[None] | None = None
    asked_slots_at: float = 0.0

    def unused(self, now: float) -> Unused:
        messages = self.messages if self.messages and now < self.minute_ends else 0
        return Unused(self.recipients, messages)

    def covers(self, need: int, now: float) -> bool:
        """Enough recipients and messages, on a live lease (slots are counted apart)."""
        if now >= self.until - RENEW_MARGIN or self.recipients < need:
            return False
        return self.messages is None or (self.messages >= 1 and now < self.minute_ends)

    def take(self, need: int) -> None:
        self.recipients -= need
        if self.messages is not None:
            self.messages -= 1

    def grant(self, grant: Grant) -> None:
        self.recipients, self.messages, self.slots = grant.recipients, grant.messages, grant.slots
        self.minute_ends, self.until, self.denied = grant.minute_ends, grant.until, None

    def emptied(self) -> None:
        self.recipients, self.messages, self.slots, self.until = 0, 0, self.in_use, 0.0


class Permit:
    """Leave to send one message now; :meth:`release` when the send is over (slot freed)."""

    def __init__(self, pacer: Pacer | None, key: str, recipients: int, tenant: int = 0):
        self._pacer, self._key, self.recipients = pacer, key, recipients
        #: the recipients also taken from the tenant's budget (0: no tenant budget)
        self.tenant = tenant

    def release(self, *, unsent: bool = False) -> None:
        """``unsent``: the message never reached the transport; its recipients are not spent,
        in the mailbox's budget nor in the tenant's."""
        if self._pacer is not None:
            self._pacer._release(self._key, self.recipients if unsent else 0)
            if unsent and self.tenant:
                self._pacer._give_local(TENANT_KEY, self.tenant)
            self._pacer = None


@dataclass
class Pacer:
    table: BudgetTable
    limits: PacingLimits
    window: Window = field(default_factory=Window)
    clock: Callable[[], float] = time.time
    #: recipients per lease, at most (a tenth of the daily limit when that is smaller)
    chunk_recipients: int = 100
    chunk_messages: int = 10
    linger_seconds: float = 2.0
    slot_wait_seconds: float = SLOT_WAIT_SECONDS
    holder: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self) -> None:
        self._allowances: dict[str, _Allowance] = {}

    # --- admission ------------------------------------------------------------------------------

    async def admit(self, mailbox: str, recipients: int) -> Permit | Deferral:
        key = row_key(mailbox)
        limits = self.limits.for_mailbox(mailbox)
        need = max(min(recipients, limits.daily_recipients), 1)
        tenant = self.limits.tenant_daily_recipients
        tenant_need = 0
        if tenant is not None:
            tenant_need = max(min(recipients, tenant), 1)
            tenant_limits = MailboxLimits(daily_recipients=tenant, per_minute=None, concurrency=0)
            refused = await self._reserve(TENANT_KEY, tenant_limits, tenant_need, slots=False)
            if refused is not None:  # the tenant's daily recipients, said as such
                return Deferral(
                    refused.until, "tenant" if refused.limit == "daily" else refused.limit
                )
        try:
            refused = await self._reserve(key, limits, need, slots=True)
        except BaseException:
            self._give_local(TENANT_KEY, tenant_need)  # taken for a message that will not go
            raise
        if refused is not None:
            self._give_local(TENANT_KEY, tenant_need)
            return refused
        return Permit(self, key, need, tenant_need)

    async def _reserve(
        self, key: str, limits: MailboxLimits, need: int, *, slots: bool
    ) -> Deferral | None:
        """Take ``need`` recipients (and a slot) from the local allowance, refilling it from the
        table as needed; None when taken, else until when to wait."""
        allowance = self._allowances.setdefault(key, _Allowance())
        allowance.waiting += 1
        try:
            return await self._reserve_for(allowance, key, limits, need, slots=slots)
        finally:
            allowance.waiting -= 1

    async def _reserve_for(
        self, allowance: _Allowance, key: str, limits: MailboxLimits, need: int, *, slots: bool
    ) -> Deferral | None:
        give_up_at = time.monotonic() + self.slot_wait_seconds
        while True:
            now = self.clock()
            denied = allowance.denied
            if denied is not None and denied.until > now:
                if denied.limit != "concurrency":
                    return self._deferral(denied)
                # every slot is another instance's: look again when one of ours ends, or soon
                if time.monotonic() > give_up_at:
                    return self._deferral(Denial(now + SLOT_RETRY_SECONDS, "concurrency"))
                await self._wait_release(allowance)
                continue
            if self._take(allowance, need, now, slots=slots):
                return None
            if allowance.covers(need, now) and not self._may_grow(allowance, limits, now):
                # every slot this instance may have is busy here: wait for one of ours to end
                if time.monotonic() > give_up_at:
                    return self._deferral(Denial(now + SLOT_RETRY_SECONDS, "concurrency"))
                await self._wait_release(allowance)
                continue
            async with allowance.lock:
                now = self.clock()
                if allowance.denied is not None and allowance.denied.until > now:
                    continue  # a refill meanwhile was refused: see above
                if allowance.covers(need, now) and (
                    allowance.in_use < allowance.slots
                    or not slots
                    or not self._may_grow(allowance, limits, now)
                ):
                    continue  # another coroutine refilled it meanwhile
                answer = await self._refill(key, allowance, limits, need, slots=slots)
            if isinstance(answer, Denial):
                if answer.limit == "concurrency":  # asked again in a second at the most
                    answer = Denial(self.clock() + 1.0, "concurrency")
                allowance.denied = answer

    @staticmethod
    def _take(allowance: _Allowance, need: int, now: float, *, slots: bool) -> bool:
        if not allowance.covers(need, now) or (slots and allowance.in_use >= allowance.slots):
            return False
        allowance.take(need)
        if slots:
            allowance.in_use += 1
            Pacer._stop_linger(allowance)
        return True

    @staticmethod
    def _may_grow(allowance: _Allowance, limits: MailboxLimits, now: float) -> bool:
        """Whether to ask the table for more slots (at most once a second)."""
        return allowance.slots < limits.concurrency and now - allowance.asked_slots_at > 1

    async def _refill(
        self, key: str, allowance: _Allowance, limits: MailboxLimits, need: int, *, slots: bool
    ) -> Grant | Denial | None:
        now = self.clock()
        unused = allowance.unused(now)
        # what is given back is no longer this instance's to spend, even while the write runs
        allowance.recipients = 0
        if allowance.messages is not None:
            allowance.messages = 0
        chunk = max(min(self.chunk_recipients, limits.daily_recipients // 10), 1)
        per_minute = limits.per_minute or self.chunk_messages
        want = Want(
            need=need,
            recipients=chunk,
            messages=max(min(self.chunk_messages, per_minute // 3), 1),
            # the slots in use and those asked for now: an instance holds no idle slot another
            # could use, and one that dies holds only what it was using until its lease ends
            slots=min(limits.concurrency, allowance.in_use + max(allowance.waiting, 1))
            if slots
            else 0,
            in_use=allowance.in_use,
        )
        allowance.asked_slots_at = now
        answer = await self._settle(key, now, limits, unused, want)
        if isinstance(answer, Grant):
            allowance.grant(answer)
        else:
            allowance.emptied()
        return answer

    async def _settle(
        self, key: str, now: float, limits: MailboxLimits, unused: Unused, want: Want
    ) -> Grant | Denial | None:
        """One bookkeeping write (:func:`settle`) on the budget ``key``."""

        def change(budget: Budget) -> tuple[Budget, Grant | Denial | None]:
            return settle(
                budget,
                self.holder,
                now=now,
                limits=limits,
                window=self.window,
                unused=unused,
                want=want,
            )

        return await self.table.update(key, change)

    async def _wait_release(self, allowance: _Allowance) -> None:
        """Until one of this instance's sends for the mailbox ends, or a second (another
        instance may have given slots back)."""
        allowance.released.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await allowance.released.wait()

    def _deferral(self, denial: Denial) -> Deferral:
        until = max(denial.until, self.clock())
        return Deferral(datetime.fromtimestamp(math.ceil(until), UTC), denial.limit)

    # --- release --------------------------------------------------------------------------------

    def _give_local(self, key: str, recipients: int) -> None:
        allowance = self._allowances.get(key)
        if allowance is not None and recipients:
            allowance.recipients += recipients

    def _release(self, key: str, unsent: int) -> None:
        allowance = self._allowances.get(key)
        if allowance is None:
            return
        allowance.in_use = max(allowance.in_use - 1, 0)
        allowance.recipients += unsent
        allowance.released.set()
        if allowance.in_use == 0 and self.linger_seconds >= 0:
            self._stop_linger(allowance)
            allowance.linger = asyncio.get_running_loop().create_task(self._linger(key))

    @staticmethod
    def _stop_linger(allowance: _Allowance) -> None:
        if allowance.linger is not None and not allowance.linger.done():
            allowance.linger.cancel()
        allowance.linger = None

    async def _linger(self, key: str) -> None:
        await asyncio.sleep(self.linger_seconds)
        # once started, the give-back finishes even if a new send (or close) cancels the wait:
        # half done, the allowance would be emptied here and still held in the table
        await asyncio.shield(self.give_back(key))

    async def give_back(self, key: str) -> None:
        """Return an idle allowance to the table (slots free for other instances at once)."""
        allowance = self._allowances.get(key)
        if allowance is None or allowance.in_use:
            return  # (the table may hold a lease this instance no longer counts: always ask)
        async with allowance.lock:
            if allowance.in_use:
                return  # a send took a slot while this waited for the lock: not idle after all
            now = self.clock()
            unused = allowance.unused(now)
            allowance.emptied()
            try:  # a release asks for nothing: the limits do not matter
                await self._settle(key, now, self.limits.default, unused, Want())
            except Exception as error:  # the lease expires by itself; its charge stays
                log.warning("could not give back the pacing lease of %s: %s", key, error)
        if key == TENANT_KEY:
            return
        if self.limits.tenant_daily_recipients is not None and not any(
            a.in_use for k, a in self._allowances.items() if k != TENANT_KEY
        ):
            await self.give_back(TENANT_KEY)

    async def close(self) -> None:
        """Give back every allowance (a worker shutting down)."""
        for key, allowance in list(self._allowances.items()):
            self._stop_linger(allowance)
            await self.give_back(key)

    # --- Exchange's word, and reports ------------------------------------------------------------

    async def exhausted(
        self, mailbox: str, quota: str, code: str, retry_after: float | None = None
    ) -> Deferral:
        """Exchange refused for its sending ``quota`` (``daily`` or ``minute``, answer ``code``):
        the mailbox sends nothing more until the window ends (or Exchange's ``Retry-After``), on
        every instance: Exchange knows best."""
        key = row_key(mailbox)
        now = self.clock()

        def change(budget: Budget) -> tuple[Budget, float]:
            ends = quota_ends(budget, now, self.window, quota)
            until = now + retry_after if retry_after else ends
            return blocked(budget, until=until, reason=code), until

        until = await self.table.update(key, change)
        allowance = self._allowances.setdefault(key, _Allowance())
        allowance.recipients, allowance.messages = 0, 0
        allowance.denied = Denial(until, "exchange")
        return self._deferral(allowance.denied)

    async def usage(self, mailbox: str) -> MailboxUsage:
        """The mailbox's budgets and their use (and the tenant's, when it is paced)."""
        now = self.clock()
        limits = self.limits.for_mailbox(mailbox)
        budget, _ = await self.table.read(row_key(mailbox))
        shown = usage(budget, now=now, limits=limits, window=self.window)
        until = shown.pop("blockedUntil")
        body: dict[str, Any] = {
            "mailbox": mailbox.strip().lower(),
            **shown,
            "blockedUntil": datetime.fromtimestamp(until, UTC) if until is not None else None,
        }
        tenant = self.limits.tenant_daily_recipients
        if tenant is not None:
            tenant_budget, _ = await self.table.read(TENANT_KEY)
            tenant_limits = MailboxLimits(daily_recipients=tenant, per_minute=None, concurrency=0)
            whole = usage(tenant_budget, now=now, limits=tenant_limits, window=self.window)
            body["tenantDailyRecipients"] = whole["dailyRecipients"]
        return MailboxUsage.model_validate(body)

    async def mailboxes(self) -> list[str]:
        """Every mailbox that has a budget row (it sent, or was refused, recently)."""
        return sorted(unquote(key) for key in await self.table.keys() if key != TENANT_KEY)
