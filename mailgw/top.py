"""``mailgw top``: what the gateway is doing, live in a terminal, read from its storage.

It needs no Application Insights and no endpoint, only what the other operator commands need
(storage access), so it shows a local ``make run`` and a deployment in Azure alike:

- each queue's depth and the age of its oldest visible message (:mod:`mailgw.backlog`, the same
  reading the report_queues timer sends as metrics);
- messages accepted, sent and failed in the last 1, 5 and 15 minutes, and the busiest senders,
  from the state records changed in the last 15 minutes (a filtered scan of the state table, so it
  refreshes every few seconds, not continuously);
- the newest failures with the hint an operator acts on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mailgw.backlog import QueueReading, read_queues
from mailgw.cli import format_failed
from mailgw.models import MessageStatus
from mailgw.state.record import MessageRecord

if TYPE_CHECKING:
    from mailgw.services import Services

WINDOWS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15))
#: a queue's oldest message older than this is shown as a problem (the alert's default too)
LATE = timedelta(minutes=15)


@dataclass
class Activity:
    """What happened in one window: messages received, sent, failed, and sent per sender."""

    received: int = 0
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    senders: Counter[str] = field(default_factory=Counter)


@dataclass
class Snapshot:
    at: datetime
    queues: list[QueueReading]
    windows: dict[timedelta, Activity]
    failures: list[MessageRecord]


def last_step(record: MessageRecord, outcome: str) -> datetime | None:
    return next((s.at for s in reversed(record.history) if s.outcome == outcome), None)


def activity(records: list[MessageRecord], now: datetime) -> dict[timedelta, Activity]:
    """The records changed lately, counted per window by when each thing happened to them."""
    windows = {window: Activity() for window in WINDOWS}
    for record in records:
        sent, failed = last_step(record, "sent"), last_step(record, "failed")
        for window, counts in windows.items():
            since = now - window
            counts.received += record.created_at >= since
            if record.status is MessageStatus.sent and sent is not None and sent >= since:
                counts.sent += 1
                counts.senders[record.sender or "-"] += 1
            if record.status is MessageStatus.failed and failed is not None and failed >= since:
                counts.failed += 1
            counts.retrying += record.status is MessageStatus.retrying
    return windows


async def snapshot(services: Services, now: datetime | None = None, failures: int = 5) -> Snapshot:
    now = now or datetime.now(UTC)
    store = services.store
    queues, recent, failed = await asyncio.gather(
        read_queues(services.queue, now),
        store.records(limit=1_000_000, since=now - max(WINDOWS)),
        store.records(MessageStatus.failed, limit=failures),
    )
    return Snapshot(now, queues, activity(recent, now), failed)


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h {minutes:02d}m"
        if hours
        else (f"{minutes}m {secs:02d}s" if minutes else f"{secs}s")
    )


def render(shot: Snapshot, using: str, width: int = 100) -> RenderableType:
    """The view: a title line, the queues, the activity, the newest failures with their hints."""
    title = Text(f"mailgw top  {shot.at.strftime('%Y-%m-%d %H:%M:%S')} UTC", style="bold")
    queues = Table(title="Queues", title_justify="left", expand=False)
    queues.add_column("queue")
    queues.add_column("messages", justify="right")
    queues.add_column("oldest waiting", justify="right")
    for reading in shot.queues:
        poison = reading.queue.endswith("-poison") or reading.queue.endswith("-poison-poison")
        late = reading.oldest_age > LATE.total_seconds()
        style = "red" if (poison and reading.depth) or late else None
        depth = str(reading.depth) if reading.exists else "- (not created yet)"
        queues.add_row(reading.queue, depth, _age(reading.oldest_age), style=style)

    flow = Table(title="Messages", title_justify="left")
    flow.add_column("")
    for window in WINDOWS:
        flow.add_column(f"last {int(window.total_seconds() // 60)} min", justify="right")
    counts = [shot.windows[w] for w in WINDOWS]
    minute = counts[0]
    flow.add_row("received", *(str(c.received) for c in counts))
    flow.add_row("sent", *(str(c.sent) for c in counts))
    flow.add_row("failed", *(str(c.failed) for c in counts), style="red" if minute.failed else None)
    rates = [c.sent / (w.total_seconds() / 60) for c, w in zip(counts, WINDOWS, strict=True)]
    flow.add_row("sent per minute", *(f"{r:.1f}" for r in rates))
    flow.add_row("retrying now", str(counts[-1].retrying), "", "")

    senders = Table(title="Busiest senders, last 15 min", title_justify="left")
    senders.add_column("sender")
    senders.add_column("sent", justify="right")
    for sender, sent in counts[-1].senders.most_common(5):
        senders.add_row(sender, str(sent))

    parts: list[RenderableType] = [title, Text(using, style="dim"), queues, flow]
    if counts[-1].senders:
        parts.append(senders)
    if shot.failures:
        parts += [
            Text("Newest failures", style="italic"),
            Text(format_failed(shot.failures, width)),
        ]
    else:
        parts.append(Text("No failed messages.", style="green"))
    return Group(*parts)


async def top(services: Services, *, once: bool, interval: float) -> int:
    """``--once``: one snapshot, printed; otherwise refreshed every ``interval`` seconds until
    Ctrl-C."""
    settings = services.settings
    using = (
        f"storage {settings.storage().describe()}, queue {settings.queue}, "
        f"state table {settings.state_table}"
    )
    console = Console()
    if once:
        console.print(render(await snapshot(services), using, console.width))
        return 0
    with Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                view = render(await snapshot(services), using, console.width)
                live.update(view, refresh=True)
                await asyncio.sleep(interval)
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 0
