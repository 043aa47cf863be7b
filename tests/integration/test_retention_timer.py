"""The retention timer's wiring: function_app registers ``cleanup`` for 03:30 UTC every day, and
when that moment comes the dev host's timer listener runs it, which applies retention to the real
state table (``Operations.cleanup``).

The app runs in a fresh interpreter, as under the dev host (its settings are read at import); its
clock is shifted to a moment before 03:30, so the listener waits for the schedule's own due time
instead of the test asking the function to run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devhost.timers import parse_schedule
from mailgw.models import MessageStatus
from mailgw.settings import Settings
from mailgw.store import StateStore
from support import fresh_storage, new_record

ROOT = Path(__file__).resolve().parents[2]

RUN_THE_TIMER = r"""
import asyncio, json, logging, os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devhost.app_loader import load_app
from devhost.invoke import Invoker
from devhost.timers import TimerListener

class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

async def main():
    lines = Lines()
    logging.getLogger().addHandler(lines)
    logging.getLogger().setLevel(logging.INFO)
    [spec] = [t for t in load_app(Path.cwd(), dict(os.environ)).timers if t.name == "cleanup"]
    due = spec.schedule.next_after(datetime.now(UTC))
    shift = due - datetime.now(UTC) - timedelta(seconds=0.3)  # "now" is just before it is due
    listener = TimerListener(spec, Invoker(), clock=lambda: datetime.now(UTC) + shift)
    listener.start()
    while not any(line.startswith("Executed 'Functions.cleanup'") for line in lines.lines):
        await asyncio.sleep(0.05)
    await listener.stop()
    print(json.dumps({
        "schedule": spec.schedule_text,
        "runOnStartup": spec.run_on_startup,
        "due": due.isoformat(),
        "log": lines.lines,
    }))

asyncio.run(main())
"""


@pytest.fixture
def app_env(azurite: Any) -> dict[str, str]:
    """The app's settings: a state table and queue of its own on Azurite."""
    return {
        **fresh_storage(azurite, "ret"),
        "MAILGW_TRANSPORT": "outbox",
    }


def test_cleanup_is_scheduled_daily_at_03_30_utc() -> None:
    schedule = parse_schedule("0 30 3 * * *")
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    first = schedule.next_after(start)
    assert [first, schedule.next_after(first)] == [
        datetime(2026, 1, 2, 3, 30, tzinfo=UTC),
        datetime(2026, 1, 3, 3, 30, tzinfo=UTC),
    ]


async def test_the_dev_host_timer_runs_cleanup_at_03_30_on_the_real_store(
    app_env: dict[str, str],
) -> None:
    settings = Settings.from_env(app_env)
    month_ago = datetime.now(UTC) - timedelta(days=settings.retention_days + 1)
    old = StateStore(settings.storage(), settings.state_table, clock=lambda: month_ago)
    now = StateStore(settings.storage(), settings.state_table)
    try:
        assert await old.create(new_record("expired", MessageStatus.sent, now=month_ago))
        assert await now.create(new_record("kept", MessageStatus.sent))

        ran = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", RUN_THE_TIMER],
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **app_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        report = json.loads(ran.stdout.splitlines()[-1])

        assert (report["schedule"], report["runOnStartup"]) == ("0 30 3 * * *", False)
        due = datetime.fromisoformat(report["due"])
        assert (due.utcoffset(), due.hour, due.minute, due.second) == (timedelta(0), 3, 30, 0)
        fired = [line for line in report["log"] if line.startswith("Executing 'Functions.cleanup'")]
        assert len(fired) == 1 and f"Timer fired at {due.date()}T03:30:" in fired[0]
        assert "retention: deleted 1 expired records" in report["log"]
        assert any(
            line.startswith("Executed 'Functions.cleanup' (Succeeded") for line in report["log"]
        )
        assert await now.get("expired") is None
        assert await now.get("kept") is not None
    finally:
        await old.close()
        await now.close()
