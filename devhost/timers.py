"""Timer triggers as the Functions host runs them (WebJobs ``TimerListener`` and ``CronSchedule``).

Schedules are NCRONTAB, the format of the .NET library the host uses: six fields
``{second} {minute} {hour} {day} {month} {day-of-week}`` (seconds FIRST), or five without the
seconds, or a TimeSpan such as ``00:05:00`` (a constant interval). The date arithmetic is croniter's
(a maintained library); what this module adds is the translation, because the two dialects differ:

* croniter's optional seconds field is the LAST of six (``{minute} ... {day-of-week} {second}``);
* NCRONTAB requires day-of-month AND day-of-week to match when both are restricted, where Vixie
  cron (croniter's default, ``day_or=True``) takes either;
* NCRONTAB knows ``*``, numbers, ``a-b``, ``/step``, lists and month/day names (any prefix of the
  English name: ``Mon``, ``Monday``), ``N/step`` meaning ``N-max/step``; day-of-week is 0-6
  (Sunday 0). croniter accepts more (``L``, ``W``, ``#``, ``?``, ``H``, ``@daily``, 7 for Sunday, a
  year field) that the host rejects, so a schedule that the dev host ran would fail in Azure.

Each NCRONTAB field is therefore parsed here with NCRONTAB's grammar and bounds and handed to
croniter as an explicit list of values, in croniter's field order, with ``day_or=False``.

Running follows ``TimerListener``: ``run_on_startup`` invokes once at start; after each invocation
the next occurrence is computed from the later of the invocation time and the occurrence that
was due (so a slow run is followed at once by one catch-up run, never by a burst); one invocation
of a timer function at a time; a failed invocation is logged and the schedule goes on. Times are
UTC, the host's time zone in Azure, unless the app setting ``WEBSITE_TIME_ZONE`` names an IANA
zone. ``past_due`` is always false: the dev host keeps no schedule status between runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.functions.timer import TimerRequest
from croniter import croniter  # type: ignore[import-untyped]  # ships no type hints

from devhost.hostjson import parse_timespan
from devhost.listener import Listener

if TYPE_CHECKING:
    from devhost.app_loader import TimerFunction
    from devhost.invoke import Invoker

log = logging.getLogger("devhost.timer")

#: ``TimerInfo.DateTimeFormat`` of the host, for the "next occurrences" start-up line
_DISPLAY_FORMAT = "%m/%d/%Y %H:%M:%S"
_OCCURRENCES_SHOWN = 5


class ScheduleError(ValueError):
    """The schedule is neither a valid NCRONTAB expression nor a TimeSpan (the host rejects it)."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    def values(self, text: str) -> list[int]:
        """The set of values ``text`` selects, parsed as NCRONTAB's ``CrontabFieldImpl`` does."""
        if not text:
            raise ScheduleError(f"the {self.name} field is empty")
        selected: set[int] = set()
        for item in text.split(","):
            selected.update(self._item(item))
        return sorted(selected)

    def _item(self, item: str) -> range:
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"'{item}' in the {self.name} field: the step must be positive")
            step = int(step_text)
        if base == "*":
            first, last = self.low, self.high
        elif "-" in base[1:]:
            head, _, tail = base.partition("-")
            first, last = self._value(head), self._value(tail)
        else:
            first = self._value(base)
            last = self.high if slash else first  # NCRONTAB: "N/step" is "N-max/step"
        if first > last:
            raise ScheduleError(f"'{item}' in the {self.name} field: the range is reversed")
        return range(first, last + 1, step)

    def _value(self, text: str) -> int:
        if text.isdigit():
            value = int(text)
            if not self.low <= value <= self.high:
                raise ScheduleError(
                    f"'{text}' is out of range for the {self.name} field ({self.low}-{self.high})"
                )
            return value
        lowered = text.lower()
        if self.names and lowered.isalpha():
            for index, name in enumerate(self.names):
                if name.lower().startswith(lowered):  # any prefix of the name, like NCRONTAB
                    return self.low + index
        raise ScheduleError(f"'{text}' is not a valid value for the {self.name} field")


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day", 1, 31)
_MONTH = _Field(
    "month",
    1,
    12,
    (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
)
_DAY_OF_WEEK = _Field(
    "day-of-week",
    0,
    6,
    ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
)
_NCRONTAB_FIELDS = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _DAY_OF_WEEK)


def to_croniter(expression: str) -> str:
    """Translate an NCRONTAB expression (6 fields, seconds first; or 5 without) to croniter's
    field order ``minute hour day month day-of-week second`` with every field spelled out.

    >>> to_croniter("0 30 3 * * *")
    '30 3 * * * 0'
    """
    parts = expression.split()
    if len(parts) == 5:
        parts = ["0", *parts]  # the host parses five fields without seconds: second 0
    if len(parts) != 6:
        raise ScheduleError(
            f"'{expression}' has {len(parts)} fields; NCRONTAB has 6 "
            "({second} {minute} {hour} {day} {month} {day-of-week}) or 5 (without seconds)"
        )
    spelled = []
    for spec, text in zip(_NCRONTAB_FIELDS, parts, strict=True):
        values = spec.values(text)
        full = len(values) == spec.high - spec.low + 1
        spelled.append("*" if full else ",".join(map(str, values)))
    second, minute, hour, day, month, day_of_week = spelled
    return f"{minute} {hour} {day} {month} {day_of_week} {second}"


@dataclass(frozen=True)
class CronSchedule:
    """An NCRONTAB schedule evaluated by croniter in the host's time zone."""

    expression: str
    zone: tzinfo = UTC
    translated: str = field(init=False)

    def __post_init__(self) -> None:
        translated = to_croniter(self.expression)
        if not croniter.is_valid(translated):
            raise ScheduleError(f"'{self.expression}' is not a valid schedule")
        object.__setattr__(self, "translated", translated)

    def next_after(self, moment: datetime) -> datetime:
        iterator = croniter(self.translated, moment.astimezone(self.zone), day_or=False)
        found: datetime = iterator.get_next(datetime)
        return found

    def describe(self) -> str:
        return f"Cron: '{self.expression}'"


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule (``ConstantSchedule``): every ``interval`` from the previous run."""

    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval

    def describe(self) -> str:
        return f"Constant: {self.interval}"


def parse_schedule(text: str, zone: tzinfo = UTC) -> CronSchedule | IntervalSchedule:
    """The host's ``TimerSchedule.Create``: a cron expression first, else a TimeSpan."""
    try:
        return CronSchedule(text.strip(), zone)
    except ScheduleError as cron_error:
        try:
            interval = parse_timespan(text)
        except ValueError:
            raise ScheduleError(
                f"'{text}' is neither an NCRONTAB expression ({cron_error}) nor a TimeSpan"
            ) from None
        if interval <= timedelta(0):
            raise ScheduleError(f"the TimeSpan schedule '{text}' must be positive") from None
        return IntervalSchedule(interval)


def schedule_zone(environ: Mapping[str, str]) -> tzinfo:
    """The time zone schedules are evaluated in: UTC, as in Azure, unless the app setting
    ``WEBSITE_TIME_ZONE`` names an IANA zone (a developer's own ``TZ`` does not count)."""
    value = (environ.get("WEBSITE_TIME_ZONE") or "").strip()
    if value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("WEBSITE_TIME_ZONE=%r is not an IANA time zone; timers use UTC", value)
    return UTC


def uses_monitor(schedule: CronSchedule | IntervalSchedule, requested: bool | None) -> bool:
    """``use_monitor`` as the host settles it: off for schedules that fire more than once a
    minute, else as the function asks (default on). Only decides whether the function sees a
    ``schedule_status``: the dev host keeps no status between runs."""
    if isinstance(schedule, IntervalSchedule):
        frequent = schedule.interval < timedelta(minutes=1)
    else:
        start = datetime.now(UTC)
        frequent = schedule.next_after(schedule.next_after(start)) < start + timedelta(minutes=1)
    return False if frequent else requested is not False


def _status_time(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "0001-01-01T00:00:00"


def _display(moment: datetime) -> str:
    """``MM/dd/yyyy HH:mm:ssK`` as the host prints its next occurrences."""
    offset = moment.utcoffset() or timedelta(0)
    if not offset:
        return moment.strftime(_DISPLAY_FORMAT) + "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = int(abs(offset).total_seconds()) // 60
    return moment.strftime(_DISPLAY_FORMAT) + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class TimerListener(Listener):
    """Runs one timer function on its schedule until ``stop()``."""

    def __init__(
        self,
        spec: TimerFunction,
        invoker: Invoker,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(f"timer {spec.name}")
        self.spec, self._invoker, self._clock = spec, invoker, clock
        self.schedule = spec.schedule
        self._last: datetime | None = None
        self._next: datetime | None = None

    def now(self) -> datetime:
        zone = self.schedule.zone if isinstance(self.schedule, CronSchedule) else UTC
        return self._clock().astimezone(zone)

    def next_occurrences(self, count: int = _OCCURRENCES_SHOWN) -> list[datetime]:
        found, moment = [], self.now()
        for _ in range(count):
            moment = self.schedule.next_after(moment)
            found.append(moment)
        return found

    async def _loop(self) -> None:
        """Fire on the schedule until ``stop()``; a running invocation goes on then."""
        if self.spec.run_on_startup:
            log.info(
                "Function '%s' is configured to run on startup. Executing now.",
                self.spec.name,
            )
            await self._fire(self.now())
        if self._stopping.is_set():
            return
        upcoming = "\n".join(_display(moment) for moment in self.next_occurrences())
        log.info(
            "The next %d occurrences of the '%s' schedule (%s) will be:\n%s",
            _OCCURRENCES_SHOWN,
            self.spec.name,
            self.schedule.describe(),
            upcoming,
        )
        self._next = self.schedule.next_after(self.now())
        while not self._stopping.is_set():
            delay = (self._next - self.now()).total_seconds()
            if delay > 0:
                await self._sleep(delay)
                continue  # re-check: woken by stop(), or the wall clock moved
            fired = self.now()
            await self._fire(fired)
            # TimerListener: a trigger that fired a little early counts as the due occurrence.
            self._next = self.schedule.next_after(max(fired, self._next))

    async def _fire(self, fired: datetime) -> None:
        """Invoke the function and wait for it (one at a time), unless the host is stopping."""
        status: dict[str, Any] = {}
        if self.spec.use_monitor:
            status = {
                "Last": _status_time(self._last),
                "Next": _status_time(self._next or self.schedule.next_after(fired)),
                "LastUpdated": _status_time(self._last),
            }
        request = TimerRequest(
            past_due=False, schedule_status=status, schedule={"AdjustForDST": True}
        )
        await self._first_of({self._invoke_in_flight(self._invoke(request, fired))})
        self._last = fired

    async def _invoke(self, request: TimerRequest, fired: datetime) -> None:
        with suppress(Exception):  # logged by the invoker; the schedule goes on, as in Azure
            await self._invoker.invoke(
                self.spec, request, reason=f"Timer fired at {fired.isoformat()}"
            )
