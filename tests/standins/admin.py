"""The admin API every stand-in serves under ``/_standin/``, in one shape, and its client.

A test whose client runs in another process (the dev host, ``make run``, the benchmark) reads and
steers a stand-in through these endpoints; so will the dev host's mail viewer. Each stand-in says
what it records and how it takes faults and settings; the endpoints are the same everywhere::

    GET    /_standin/<recording>   -> 200 [item.to_json(), ...]   oldest first
    GET    /_standin/stats         -> 200 {...}                   counts and peaks
    POST   /_standin/faults        {fault} or [{fault}, ...]     -> 201 {"pending": n}
    DELETE /_standin/faults                                      -> 204
    POST   /_standin/reset         forget recordings and faults  -> 204
    POST   /_standin/config        {"knob": value, ...}          -> 200 stats

A malformed fault or setting is ``400 {"error": "..."}``. What each recording's items hold, and
which faults and settings a stand-in takes, is in that stand-in's module docstring. Items are
their record's fields under camelCase names (:func:`camel_json`); times are ``time`` (the
monotonic clock, comparable across the machine's processes) and ``wallTime`` (epoch seconds),
and where a person reads them, ISO 8601 in UTC (:func:`utc_iso`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from standins.waiting import poll_until

__all__ = ["Administered", "Recording", "RemoteAdmin", "admin_routes", "camel_json", "utc_iso"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def camel_json(record: Any, *, omit: Collection[str] = ()) -> dict[str, Any]:
    """A dataclass's fields under camelCase names (``wall_time`` -> ``wallTime``), nested
    dataclasses as dicts: the one shape of every recording's items."""
    return {
        _camel(f.name): _plain(getattr(record, f.name))
        for f in dataclasses.fields(record)
        if f.name not in omit
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value


def utc_iso(epoch: float, digits: int = 6) -> str:
    """``2026-05-04T09:30:12.123456Z``: UTC with ``digits`` fraction digits (none with 0)."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    fraction = f"{moment.microsecond:06d}{'0' * max(0, digits - 6)}"[:digits]
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + "Z"


class Recording(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class Administered(Protocol):
    """What a stand-in provides for its admin API (``StandInServer`` has neutral defaults)."""

    def recordings(self) -> Mapping[str, Sequence[Recording]]: ...
    def stats(self) -> dict[str, Any]: ...
    def add_fault_json(self, item: Mapping[str, Any]) -> object: ...
    def pending_fault_count(self) -> int: ...
    def clear_faults(self) -> None: ...
    def reset(self) -> None: ...
    def configure_json(self, config: Mapping[str, Any]) -> None: ...


def _error(exc: Exception) -> web.Response:
    return web.json_response({"error": str(exc)}, status=400)


def admin_routes(server: Administered) -> list[web.RouteDef]:
    """The ``/_standin/`` routes of ``server`` (add them before any catch-all route)."""

    async def recording(request: web.Request) -> web.Response:
        items = server.recordings().get(request.match_info["name"])
        if items is None:
            name = request.match_info["name"]
            return web.Response(status=404, text=f"unknown stand-in endpoint {name}\n")
        return web.json_response([item.to_json() for item in list(items)])

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(server.stats())

    async def add_faults(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            for item in body if isinstance(body, list) else [body]:
                server.add_fault_json(item)
        except (KeyError, ValueError, TypeError) as exc:
            return _error(exc)
        return web.json_response({"pending": server.pending_fault_count()}, status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        server.clear_faults()
        return web.Response(status=204)

    async def reset(request: web.Request) -> web.Response:
        server.reset()
        return web.Response(status=204)

    async def configure(request: web.Request) -> web.Response:
        try:
            server.configure_json(await request.json())
        except (KeyError, ValueError, TypeError) as exc:
            return _error(exc)
        return web.json_response(server.stats())

    return [
        web.get("/_standin/stats", stats),
        web.post("/_standin/faults", add_faults),
        web.delete("/_standin/faults", clear_faults),
        web.post("/_standin/reset", reset),
        web.post("/_standin/config", configure),
        web.get("/_standin/{name}", recording),
    ]


class RemoteAdmin:
    """Synchronous client of a stand-in's ``/_standin/...`` admin endpoints in another process."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, what: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_standin/{what}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            body = response.read()
        return json.loads(body) if body else None

    def records(self, name: str) -> list[dict[str, Any]]:
        """``GET /_standin/<name>``: one recording, oldest first."""
        items: list[dict[str, Any]] = self._call("GET", name)
        return items

    def wait_records(
        self, name: str, count: int = 1, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll ``name`` until it holds at least ``count`` items; return them all."""

        def enough() -> list[dict[str, Any]]:
            found = self.records(name)
            return found if len(found) >= count else []

        return poll_until(enough, timeout, f"{count} {name}")

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "stats")
        return found

    def add_faults(self, *faults: Mapping[str, Any]) -> None:
        self._call("POST", "faults", [dict(f) for f in faults])

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def reset(self) -> None:
        self._call("POST", "reset")

    def configure(self, **config: Any) -> dict[str, Any]:
        """``POST /_standin/config``; returns the stand-in's stats afterwards."""
        stats: dict[str, Any] = self._call("POST", "config", config)
        return stats
