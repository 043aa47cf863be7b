"""Pacing across instances, proven with three dev-host worker processes on one Azurite against the
Graph stand-in (4 concurrent requests per mailbox, a 429 beyond): the instances share each
mailbox's budgets through the state table, so a burst collects no throttling, and mail over the
daily budget waits (``scheduled``, with its reason and time) and goes out after the window.

The dev host shortens the 24-hour window to seconds (DEVHOST_PACING_WINDOW_SECONDS) so that the
whole story fits in well under a minute."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gateway_host import DevHost

from mailgw.storage import StorageConnection
from mailgw.store import StateStore
from standins.processes import StandInProcesses, start_standins
from support import wait_until

WINDOW = 20
SENDER = "noreply@contoso.com"


@pytest.fixture(scope="module")
def standins() -> Iterator[StandInProcesses]:
    with start_standins(latency_seconds=0.05) as processes:  # requests overlap, as in Exchange
        yield processes


def start_workers(
    start_devhost: Callable[..., DevHost], standins: StandInProcesses, **settings: str
) -> list[DevHost]:
    """Three instances of one Function App: one queue, one payload container, one state table."""
    suffix = uuid.uuid4().hex[:10]
    shared = {
        "MAILGW_QUEUE": f"pace-{suffix}",
        "MAILGW_PAYLOAD_CONTAINER": f"pace-{suffix}",
        "MAILGW_STATE_TABLE": f"pace{suffix}",
        "DEVHOST_TIMERS": "off",
        **standins.gateway_env(),
        **settings,
    }
    return [start_devhost(**shared) for _ in range(3)]


def burst(host: DevHost, count: int, subject: str) -> list[str]:
    """``count`` messages of one recipient each, in one batch request: all queued at once."""
    document = {"from": SENDER, "to": ["a@example.com"], "subject": subject, "text": "x"}
    response = host.post_json("/api/v1/messages:batch", {"messages": [document] * count})
    assert response.status == 207, response.body
    answer = response.json()
    assert answer["accepted"] == count, answer
    return [result["id"] for result in answer["results"]]


def sends(standins: StandInProcesses) -> list[dict[str, Any]]:
    return [r for r in standins.graph.requests() if r["operation"] == "sendMail"]


def states(host: DevHost, ids: list[str]) -> list[dict[str, Any]]:
    """The messages' states (as the API shows them), read from the state table in one scan: the
    workers stay free for the work under test."""

    async def scan() -> list[dict[str, Any]]:
        connection = StorageConnection.from_settings(env=host.env)
        store = StateStore(connection, host.env["MAILGW_STATE_TABLE"])
        try:
            found = {r.id: r for r in await store.records(limit=10_000)}
        finally:
            await store.close()
        now = datetime.now(UTC)
        return [found[i].public(now) if i in found else {} for i in ids]

    return asyncio.run(scan())


def count(shown: list[dict[str, Any]]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for state in shown:
        counted[state.get("status", "?")] = counted.get(state.get("status", "?"), 0) + 1
    return counted


def test_a_burst_across_three_instances_collects_no_throttling(
    start_devhost: Callable[..., DevHost], standins: StandInProcesses
) -> None:
    standins.graph.reset()
    workers = start_workers(start_devhost, standins)
    ids = burst(workers[0], 200, "burst")
    wait_until(
        lambda: len([r for r in sends(standins) if r["status"] == 202]) >= 200,
        timeout=45,
        interval=0.5,
        what="200 messages at the Graph stand-in",
    )
    answers = [r["status"] for r in sends(standins)]
    assert answers.count(429) == 0, "the instances together went over 4 concurrent requests"
    assert answers.count(202) == 200
    assert count(states(workers[1], ids)) == {"sent": 200}


@pytest.mark.soak  # about 90 s of waiting for windows: `make bench` runs it (pytest -m soak)
def test_over_the_daily_budget_mail_waits_for_the_window_then_goes_out(
    start_devhost: Callable[..., DevHost], standins: StandInProcesses
) -> None:
    standins.graph.reset()
    workers = start_workers(
        start_devhost,
        standins,
        MAILGW_MAILBOX_DAILY_RECIPIENTS="50",
        DEVHOST_PACING_WINDOW_SECONDS=str(WINDOW),
    )
    started = datetime.now(UTC)
    ids = burst(workers[0], 200, "budget")

    wait_until(
        lambda: len([r for r in sends(standins) if r["status"] == 202]) >= 50,
        timeout=WINDOW,
        interval=0.5,
        what="the first 50 at the Graph stand-in",
    )
    last: dict[str, int] = {}

    def settled() -> list[dict[str, Any]]:
        shown = states(workers[2], ids)
        last.update(count(shown))
        return shown if count(shown).get("scheduled", 0) == 150 else []

    try:
        first = wait_until(settled, timeout=WINDOW, interval=0.5, what="150 scheduled")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; last seen: {last}") from None
    by_status = {s: [x for x in first if x["status"] == s] for s in ("sent", "scheduled")}
    assert len(by_status["sent"]) == 50
    assert len(by_status["scheduled"]) == 150
    for waiting in by_status["scheduled"]:
        assert waiting["reason"] == "mailbox daily recipient limit"
        assert waiting["attempts"] == 0
        due = datetime.fromisoformat(waiting["nextAttemptAt"])
        # when the first recipients leave the window: the window after the burst began
        assert started + timedelta(seconds=WINDOW - 1) <= due
        assert due <= datetime.now(UTC) + timedelta(seconds=WINDOW + 2)

    wait_until(
        lambda: len([r for r in sends(standins) if r["status"] == 202]) >= 200,
        timeout=5 * WINDOW,
        interval=1.0,
        what="every message sent after the windows",
    )
    assert count(states(workers[1], ids)) == {"sent": 200}  # none failed
    done = [r for r in sends(standins) if r["status"] == 202]
    assert len(done) == 200
    assert not [r for r in sends(standins) if r["status"] != 202]  # no 429, nothing refused
    # never more than the budget inside one window (less the time a lease may hold a chunk)
    times = sorted(r["time"] for r in done)
    for index, at in enumerate(times):
        inside = [t for t in times[index:] if t < at + WINDOW - 3]
        assert len(inside) <= 50, f"{len(inside)} sent within {WINDOW - 3}s"
