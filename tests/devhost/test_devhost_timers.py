"""Timer triggers: NCRONTAB → croniter translation in-process, then a real dev host running
``apps/timer_app`` (no storage needed: the app has no queue triggers)."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from devhost_support import APPS, DevHostProcess, StartDevHost

from devhost.app_loader import TimerFunction, load_app
from devhost.timers import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    parse_schedule,
    to_croniter,
    uses_monitor,
)
from support import wait_until

START = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Thursday


def upcoming(expression: str, count: int = 3, start: datetime = START) -> list[str]:
    schedule = parse_schedule(expression)
    found, moment = [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment.strftime("%Y-%m-%d %H:%M:%S"))
    return found


# --- the schedule translation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ncrontab", "croniter_form"),
    [
        ("0 30 3 * * *", "30 3 * * * 0"),  # seconds move from first to last
        ("* * * * * *", "* * * * * *"),
        ("*/15 * * * * *", "* * * * * 0,15,30,45"),
        ("5/20 * * * * *", "* * * * * 5,25,45"),  # NCRONTAB: N/step is N-max/step
        ("0 0 9 * * Mon-Fri", "0 9 * * 1,2,3,4,5 0"),
        ("0 0 9 * * monday,WED", "0 9 * * 1,3 0"),
        ("0 0 0 1 Jan,Jul *", "0 0 1 1,7 * 0"),
        ("0 0 0 1 Ma *", "0 0 1 3 * 0"),  # any prefix of the name: March comes before May
        ("*/5 * * * *", "0,5,10,15,20,25,30,35,40,45,50,55 * * * * 0"),  # 5 fields: no seconds
        ("0 0 */6 * * *", "0 0,6,12,18 * * * 0"),
    ],
)
def test_ncrontab_is_translated_to_croniter_order(ncrontab: str, croniter_form: str) -> None:
    assert to_croniter(ncrontab) == croniter_form


def test_next_occurrences_follow_ncrontab() -> None:
    assert upcoming("0 30 3 * * *") == [
        "2026-01-01 03:30:00",
        "2026-01-02 03:30:00",
        "2026-01-03 03:30:00",
    ]
    assert upcoming("* * * * * *") == [
        "2026-01-01 00:00:01",
        "2026-01-01 00:00:02",
        "2026-01-01 00:00:03",
    ]
    assert upcoming("0 */5 * * * *", 2) == ["2026-01-01 00:05:00", "2026-01-01 00:10:00"]
    assert upcoming("0 0 9 * * Mon-Fri", 2) == ["2026-01-01 09:00:00", "2026-01-02 09:00:00"]
    assert upcoming("0 0 9 * * Sat", 1) == ["2026-01-03 09:00:00"]


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    """NCRONTAB ANDs the two day fields (Vixie cron would OR them): Friday the 13th only."""
    assert upcoming("0 0 0 13 * Fri", 3) == [
        "2026-02-13 00:00:00",
        "2026-03-13 00:00:00",
        "2026-11-13 00:00:00",
    ]


def test_the_time_zone_is_the_schedules() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = parse_schedule("0 30 3 * * *", berlin)
    assert schedule.next_after(START) == datetime(2026, 1, 1, 3, 30, tzinfo=berlin)
    assert schedule.next_after(START).astimezone(UTC).hour == 2


def test_a_timespan_is_a_constant_interval() -> None:
    schedule = parse_schedule("00:00:05")
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(START) == START + timedelta(seconds=5)
    assert schedule.describe() == "Constant: 0:00:05"


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 0 L * *",  # croniter extensions the host rejects
        "0 0 0 ? * *",
        "0 0 0 * * 5#3",
        "@daily",
        "H * * * * *",
        "0 0 0 * * 7",  # NCRONTAB's day-of-week is 0-6
        "60 * * * * *",
        "0 0 24 * * *",
        "0 0 0 0 * *",
        "0 0 0 * 13 *",
        "0 0 0 * * Funday",
        "0 0 10-5 * * *",
        "*/0 * * * * *",
        "0 0 0 1 1 * 2027",  # no year field
        "* * * *",
        "",
    ],
)
def test_what_the_host_rejects_is_rejected(expression: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(expression)


def test_the_monitor_is_off_for_frequent_schedules() -> None:
    assert not uses_monitor(parse_schedule("* * * * * *"), None)
    assert not uses_monitor(parse_schedule("*/30 * * * * *"), True)
    assert not uses_monitor(parse_schedule("00:00:10"), None)
    assert uses_monitor(parse_schedule("0 30 3 * * *"), None)
    assert not uses_monitor(parse_schedule("0 30 3 * * *"), False)
    assert CronSchedule("0 30 3 * * *").describe() == "Cron: '0 30 3 * * *'"


# --- indexing ------------------------------------------------------------------------------------


SETTINGS = {"YEARLY_SCHEDULE": "0 0 0 1 1 *", "AzureWebJobs.disabled_timer.Disabled": "true"}


@pytest.mark.usefixtures("isolated_import")
def test_timers_are_indexed_from_the_apps_metadata() -> None:
    loaded = load_app(APPS / "timer_app", SETTINGS)
    timers = {t.name: t for t in loaded.timers}
    assert set(timers) == {"every_second", "on_startup", "fails_every_second"}
    assert timers["on_startup"].schedule_text == "0 0 0 1 1 *"  # %YEARLY_SCHEDULE% resolved
    assert timers["on_startup"].run_on_startup and not timers["every_second"].run_on_startup
    assert timers["on_startup"].use_monitor and not timers["every_second"].use_monitor
    assert not timers["on_startup"].is_async
    assert all(isinstance(t, TimerFunction) for t in loaded.runnable if t.name in timers)
    skipped = {s.name: s.reason for s in loaded.skipped}
    assert "disabled" in skipped["disabled_timer"]


@pytest.mark.usefixtures("isolated_import")
def test_devhost_timers_off_skips_every_timer() -> None:
    loaded = load_app(APPS / "timer_app", {**SETTINGS, "DEVHOST_TIMERS": "off"})
    assert loaded.timers == []
    skipped = {s.name: s.reason for s in loaded.skipped}
    assert skipped["every_second"] == "timer triggers are off (DEVHOST_TIMERS=off)"
    assert [f.name for f in loaded.http] == ["ping"]


@pytest.mark.usefixtures("isolated_import")
def test_an_invalid_schedule_skips_only_that_function() -> None:
    loaded = load_app(APPS / "timer_app", {**SETTINGS, "YEARLY_SCHEDULE": "0 0 0 L * *"})
    skipped = {s.name: s.reason for s in loaded.skipped}
    assert "indexing failed" in skipped["on_startup"]
    assert "every_second" in {t.name for t in loaded.timers}


# --- a running dev host --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(start_devhost: StartDevHost) -> DevHostProcess:
    return start_devhost("timer_app")


@pytest.fixture(scope="module")
def timers_off_host(start_devhost: StartDevHost) -> DevHostProcess:
    return start_devhost("timer_app", DEVHOST_TIMERS="off")


def _runs(host: DevHostProcess, function: str, count: int) -> list[dict[str, Any]]:
    return wait_until(
        lambda: len(found := host.records(function)) >= count and found,
        timeout=20,
        what=f"{count} invocations of {function}",
    )


def _fired(host: DevHostProcess, function: str) -> list[datetime]:
    """When the host fired ``function``'s timer, from its log, in order."""
    pattern = rf"Executing 'Functions\.{function}' \(Reason='Timer fired at ([^']+)'"
    return [datetime.fromisoformat(found) for found in re.findall(pattern, host.log())]


def test_a_timer_every_second_runs_every_second(host: DevHostProcess) -> None:
    runs = _runs(host, "every_second", 3)
    fired = wait_until(
        lambda: len(found := _fired(host, "every_second")) >= len(runs) and found,
        what="the log lines of those runs",
    )
    # one run per whole-second tick, however late a loaded machine fires it: no burst
    seconds = [int(moment.timestamp()) for moment in fired]
    assert all(a < b for a, b in itertools.pairwise(seconds)), fired
    # each run after its firing, and after the run before it: no overlap
    times = [run["time"] for run in runs]
    assert all(a < b for a, b in itertools.pairwise(times)), times
    assert all(f.timestamp() <= t for f, t in zip(fired, times, strict=False)), (fired, times)
    first = runs[0]
    assert first["is_timer_request"] and first["past_due"] is False
    assert first["schedule"] == {"AdjustForDST": True}
    assert first["schedule_status"] == {}  # the host keeps no status for sub-minute schedules
    assert "Executing 'Functions.every_second' (Reason='Timer fired at " in host.log()
    assert "Executed 'Functions.every_second' (Succeeded" in host.log()
    assert "The next 5 occurrences of the 'every_second' schedule (Cron: '* * * * * *')" in (
        host.log()
    )


def test_run_on_startup_invokes_at_start(host: DevHostProcess) -> None:
    runs = _runs(host, "on_startup", 1)
    assert runs[0]["past_due"] is False
    assert runs[0]["thread"].startswith("worker")  # a sync function runs in the thread pool
    assert runs[0]["schedule_status"]["Next"].startswith(f"{datetime.now(UTC).year + 1}-01-01T00")
    _runs(host, "every_second", 2)
    assert len(host.records("on_startup")) == 1  # once: its schedule is yearly


def test_a_failing_timer_keeps_its_schedule(host: DevHostProcess) -> None:
    _runs(host, "fails_every_second", 2)
    assert "Executed 'Functions.fails_every_second' (Failed" in host.log()
    assert "RuntimeError: fails on purpose" in host.log()


def test_a_disabled_timer_never_runs(host: DevHostProcess) -> None:
    functions = {f["name"]: f for f in host.get_json("/admin/functions")}
    assert functions["disabled_timer"]["running"] is False
    assert functions["every_second"] == {
        "name": "every_second",
        "trigger": "timerTrigger",
        "schedule": "* * * * * *",
        "runOnStartup": False,
        "running": True,
    }
    _runs(host, "every_second", 3)  # timers have been running for a few seconds by now
    assert host.records("disabled_timer") == []  # run_on_startup would have run it first thing


def test_devhost_timers_off(timers_off_host: DevHostProcess) -> None:
    functions = {f["name"]: f for f in timers_off_host.get_json("/admin/functions")}
    for name in ("every_second", "on_startup", "fails_every_second"):
        assert functions[name]["running"] is False
        assert "DEVHOST_TIMERS" in functions[name]["reason"]
    assert functions["ping"]["running"] is True
    assert "will not run: timer triggers are off" in timers_off_host.log()
    # Absence can only be shown over a window: two "every second" periods, plus the start.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        ran = [name for name in ("every_second", "on_startup") if timers_off_host.records(name)]
        assert not ran, f"{ran} ran although DEVHOST_TIMERS=off"
        time.sleep(0.1)
