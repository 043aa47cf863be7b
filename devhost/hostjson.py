"""host.json as the Functions host reads it: the file, then ``AzureFunctionsJobHost__*`` overrides.

The host binds host.json through .NET configuration, so an app setting such as
``AzureFunctionsJobHost__extensions__queues__maxDequeueCount=3`` replaces the file's value.
Tests and operators use that to tune one run without editing the file, so the dev host honours
it the same way.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from mailgw.local_settings import read_json_object

OVERRIDE_PREFIX = "AzureFunctionsJobHost__"

MAX_BATCH_SIZE = 32  # the Storage service returns at most 32 messages per call
MIN_POLLING_INTERVAL = timedelta(milliseconds=100)  # the host's QueuePollingIntervals.Minimum

_TIMESPAN = re.compile(
    r"^\s*(?P<sign>-)?(?:(?P<days>\d+)\.)?(?P<hours>\d+):(?P<minutes>\d+)"
    r"(?::(?P<seconds>\d+)(?:\.(?P<fraction>\d{1,7}))?)?\s*$"
)
_DAYS_ONLY = re.compile(r"^\s*(?P<sign>-)?(?P<days>\d+)\s*$")


def parse_timespan(value: str | int | float) -> timedelta:
    """Parse a .NET ``TimeSpan`` the way ``TimeSpan.Parse`` does with the invariant culture.

    Accepts ``[-][d.]hh:mm[:ss[.fffffff]]``. A bare integer means *days*, exactly as in .NET,
    which is why ``"maxPollingInterval": 2000`` is two thousand days, not two seconds.
    """
    text = str(value)
    days_only = _DAYS_ONLY.match(text)
    if days_only:
        days = int(days_only["days"])
        return -timedelta(days=days) if days_only["sign"] else timedelta(days=days)
    match = _TIMESPAN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a TimeSpan (expected hh:mm:ss or hh:mm:ss.fff)")
    hours, minutes = int(match["hours"]), int(match["minutes"])
    seconds = int(match["seconds"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} is not a TimeSpan: a component is out of range")
    ticks = int((match["fraction"] or "0").ljust(7, "0"))  # 1 tick = 100 ns
    span = timedelta(
        days=int(match["days"] or 0),
        hours=hours,
        minutes=minutes,
        seconds=seconds,
        microseconds=ticks / 10,
    )
    return -span if match["sign"] else span


def _find_key(mapping: Mapping[str, Any], key: str) -> str | None:
    """The existing key that matches ``key`` case-insensitively (configuration keys are)."""
    if key in mapping:
        return key
    lowered = key.lower()
    return next((k for k in mapping if k.lower() == lowered), None)


def get_ci(mapping: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    """Look up a nested key case-insensitively, as .NET configuration binding does."""
    node: Any = mapping
    for key in path:
        if not isinstance(node, Mapping):
            return default
        found = _find_key(node, key)
        if found is None:
            return default
        node = node[found]
    return node


def _coerce(raw: str, current: Any, env_name: str) -> Any:
    """Give an override the JSON type the value already has, or infer one for a new key."""
    lowered = raw.strip().lower()
    if isinstance(current, bool) or (current is None and lowered in ("true", "false")):
        if lowered not in ("true", "false"):
            raise ValueError(f"{env_name}={raw!r}: expected true or false")
        return lowered == "true"
    if isinstance(current, int) or (current is None and re.fullmatch(r"-?\d+", lowered)):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{env_name}={raw!r}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{env_name}={raw!r}: expected a number") from None
    if isinstance(current, (dict, list)):
        raise ValueError(f"{env_name}: cannot replace a whole section with a value")
    return raw


def apply_overrides(config: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of ``config`` with every ``AzureFunctionsJobHost__a__b=value`` applied.

    Path segments match existing keys case-insensitively (the file's spelling is kept); missing
    sections are created, as configuration binding would.
    """
    result: dict[str, Any] = copy.deepcopy(dict(config))
    prefix = OVERRIDE_PREFIX.lower()
    for env_name in sorted(environ):
        if not env_name.lower().startswith(prefix):
            continue
        path = [segment for segment in env_name[len(prefix) :].split("__") if segment]
        if not path:
            continue
        node: dict[str, Any] = result
        for segment in path[:-1]:
            key = _find_key(node, segment) or segment
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        key = _find_key(node, path[-1]) or path[-1]
        node[key] = _coerce(environ[env_name], node.get(key), env_name)
    return result


@dataclass(frozen=True)
class HttpOptions:
    """``extensions.http``: only the route prefix matters to the dev host."""

    route_prefix: str = "api"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HttpOptions:
        prefix = get_ci(config, "extensions", "http", "routePrefix", default="api")
        return cls(route_prefix=str(prefix).strip("/"))


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` with the defaults and limits of the Storage Queues extension (v5)."""

    max_polling_interval: timedelta = timedelta(minutes=1)
    visibility_timeout: timedelta = timedelta(0)
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    message_encoding: Literal["base64", "none"] = "base64"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QueueOptions:
        section = get_ci(config, "extensions", "queues", default={}) or {}
        if not isinstance(section, Mapping):
            raise ValueError("host.json: extensions.queues must be an object")

        def setting(name: str, default: Any) -> Any:
            value = get_ci(section, name)
            return default if value is None else value

        batch_size = int(setting("batchSize", 16))
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"host.json: queues.batchSize must be 1..{MAX_BATCH_SIZE}")
        threshold = int(setting("newBatchThreshold", batch_size // 2))
        if threshold < 0:
            raise ValueError("host.json: queues.newBatchThreshold must not be negative")
        max_dequeue = int(setting("maxDequeueCount", 5))
        if max_dequeue < 1:
            raise ValueError("host.json: queues.maxDequeueCount must be at least 1")
        polling = parse_timespan(setting("maxPollingInterval", "00:01:00"))
        if polling < MIN_POLLING_INTERVAL:
            raise ValueError("host.json: queues.maxPollingInterval must be at least 00:00:00.1")
        visibility = parse_timespan(setting("visibilityTimeout", "00:00:00"))
        if visibility < timedelta(0) or visibility > timedelta(days=7):
            raise ValueError("host.json: queues.visibilityTimeout must be between 0 and 7 days")
        encoding = str(setting("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError("host.json: queues.messageEncoding must be base64 or none")
        return cls(
            max_polling_interval=polling,
            visibility_timeout=visibility,
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_dequeue_count=max_dequeue,
            message_encoding="base64" if encoding == "base64" else "none",
        )


@dataclass(frozen=True)
class HostConfig:
    """The effective host.json (file plus overrides) and the typed sections the dev host uses."""

    raw: Mapping[str, Any]
    http: HttpOptions
    queues: QueueOptions

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HostConfig:
        return cls(
            raw=config,
            http=HttpOptions.from_config(config),
            queues=QueueOptions.from_config(config),
        )

    @classmethod
    def load(cls, app_dir: Path, environ: Mapping[str, str]) -> HostConfig:
        """Read ``<app_dir>/host.json`` (an absent file means all defaults) and apply overrides."""
        path = app_dir / "host.json"
        config: dict[str, Any] = {}
        if path.exists():
            config = read_json_object(path, ValueError)
        return cls.from_config(apply_overrides(config, environ))
