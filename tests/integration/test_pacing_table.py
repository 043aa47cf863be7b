"""Budgets in Table storage on Azurite: the ETag race, chunked bookkeeping, limits across pacers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from mailgw.pacing import BudgetTable, Deferral, MailboxLimits, Pacer, PacingLimits, Permit
from mailgw.pacing.budget import Budget, Grant, Unused, Want, Window, settle, used
from mailgw.pacing.table import row_key

T0 = 1_800_000_000.0


@pytest.fixture
async def tables(azurite: Any) -> AsyncIterator[Callable[[], BudgetTable]]:
    """Budget tables on one fresh table, each with its own client: one per "instance"."""
    name = f"pacing{uuid.uuid4().hex[:12]}"
    clients: list[TableClient] = []

    def open_table() -> BudgetTable:
        client = TableClient.from_connection_string(azurite.connection_string, name)
        clients.append(client)
        return BudgetTable(lambda: client)

    yield open_table
    for client in clients:
        await client.close()


def reserve(holder: str, recipients: int) -> Callable[[Budget], tuple[Budget, Any]]:
    def change(budget: Budget) -> tuple[Budget, Any]:
        return settle(
            budget,
            holder,
            now=T0,
            limits=MailboxLimits(daily_recipients=1000),
            window=Window(),
            unused=Unused(),
            want=Want(need=1, recipients=recipients),
        )

    return change


async def test_two_reservers_racing_on_one_etag_both_count(
    tables: Callable[[], BudgetTable],
) -> None:
    first, second = tables(), tables()
    key = row_key("race@contoso.com")
    await first.update(key, reserve("setup", 1))  # the row exists
    # both instances now know the same version, ETag and all
    first._known[key] = await first.read(key)
    second._known[key] = await second.read(key)
    first.requests = second.requests = 0
    a, b = await asyncio.gather(
        first.update(key, reserve("a", 10)), second.update(key, reserve("b", 20))
    )
    assert isinstance(a, Grant) and isinstance(b, Grant)
    requests = sorted([first.requests, second.requests])
    budget, _ = await first.read(key)
    assert used(budget, T0, Window()) == 31  # neither reservation was lost
    assert set(budget.leases) >= {"a", "b"}
    # the loser's write failed on the ETag, it read the winner's version and wrote again
    assert requests == [1, 3]


async def test_a_busy_mailbox_costs_well_under_one_storage_request_per_message(
    tables: Callable[[], BudgetTable],
) -> None:
    table = tables()
    pacer = Pacer(table, PacingLimits(), linger_seconds=60)
    for _ in range(300):
        permit = await pacer.admit("busy@contoso.com", 2)
        assert isinstance(permit, Permit)
        permit.release()
    assert table.requests <= 10  # 300 messages, 600 recipients: chunks of 100
    await pacer.close()
    budget, _ = await table.read(row_key("busy@contoso.com"))
    assert used(budget, budget_time(), Window()) == 600  # what was not spent went back
    assert budget.leases == {}


def budget_time() -> float:
    return time.time()


async def test_three_pacers_share_a_daily_budget_exactly(
    tables: Callable[[], BudgetTable],
) -> None:
    limits = PacingLimits(MailboxLimits(daily_recipients=50))
    pacers = [Pacer(tables(), limits, linger_seconds=0.05) for _ in range(3)]
    sent = 0
    deferred: list[Deferral] = []

    async def worker(pacer: Pacer, count: int) -> None:
        nonlocal sent
        for _ in range(count):
            answer = await pacer.admit("daily@contoso.com", 1)
            if isinstance(answer, Permit):
                sent += 1
                await asyncio.sleep(0)  # the send
                answer.release()
            else:
                deferred.append(answer)

    await asyncio.gather(*(worker(pacer, 40) for pacer in pacers))
    for pacer in pacers:
        await pacer.close()
    # while another pacer holds part of the budget, a message is told to look again soon;
    # once all is given back, exactly the budget went out and the rest waits for the window
    late = [Pacer(tables(), limits) for _ in range(2)]
    for pacer in late:
        while isinstance(answer := await pacer.admit("daily@contoso.com", 1), Permit):
            sent += 1
            answer.release()
        assert answer.reason == "mailbox daily recipient limit"
        assert answer.until.timestamp() > budget_time() + 23 * 3600
    assert sent == 50
    assert all(d.limit == "daily" for d in deferred)


async def test_concurrency_is_limited_across_pacers(tables: Callable[[], BudgetTable]) -> None:
    limits = PacingLimits(MailboxLimits(concurrency=4))
    pacers = [Pacer(tables(), limits, linger_seconds=0.05) for _ in range(3)]
    in_flight = peak = sent = 0

    async def send(pacer: Pacer) -> None:
        nonlocal in_flight, peak, sent
        while True:
            answer = await pacer.admit("wide@contoso.com", 1)
            if isinstance(answer, Permit):
                break
            assert answer.limit == "concurrency"
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)  # the request to Graph
        in_flight -= 1
        sent += 1
        answer.release()

    await asyncio.gather(*(send(pacers[i % 3]) for i in range(60)))
    assert sent == 60
    assert peak <= 4
    for pacer in pacers:
        await pacer.close()


async def test_concurrent_sends_on_three_pacers_never_overspend(
    tables: Callable[[], BudgetTable],
) -> None:
    """Many messages at once on each instance: a refill in flight must not let the recipients it
    gives back be spent meanwhile (they would be counted twice)."""
    limits = PacingLimits(MailboxLimits(daily_recipients=50))
    pacers = [Pacer(tables(), limits, linger_seconds=0.05) for _ in range(3)]
    sent = 0

    async def send(pacer: Pacer) -> None:
        nonlocal sent
        answer = await pacer.admit("crowd@contoso.com", 1)
        if isinstance(answer, Permit):
            sent += 1
            await asyncio.sleep(0.02)  # the request to Graph
            answer.release()
        else:
            assert answer.limit == "daily"

    await asyncio.gather(*(send(pacers[i % 3]) for i in range(200)))
    assert sent == 50
    assert sum(pacer.table.requests for pacer in pacers) < 100  # well under one per message
    for pacer in pacers:
        await pacer.close()
    budget, _ = await tables().read(row_key("crowd@contoso.com"))
    assert budget.leases == {}  # every slot given back, none left to expire


async def test_a_message_that_never_went_gives_back_the_tenants_recipients_too(
    tables: Callable[[], BudgetTable],
) -> None:
    """A permit released unsent (the copy lost to another worker, say) spent nothing: neither
    the mailbox's budget nor the tenant's keeps it."""
    limits = PacingLimits(MailboxLimits(daily_recipients=100), tenant_daily_recipients=3)
    pacer = Pacer(tables(), limits, linger_seconds=0.05)
    for _ in range(10):  # ten copies that never reached the transport
        permit = await pacer.admit("a@contoso.com", 1)
        assert isinstance(permit, Permit), permit
        permit.release(unsent=True)
    sent = 0
    while isinstance(answer := await pacer.admit("b@contoso.com", 1), Permit):
        sent += 1
        answer.release()
    await pacer.close()
    assert sent == 3  # the whole tenant budget, untouched by the unsent ones
    assert answer.reason == "tenant daily recipient limit"
