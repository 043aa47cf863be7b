"""Stand-in for an Event Grid custom topic whose input schema is CloudEvents 1.0.

What ``azure.eventgrid.aio.EventGridPublisherClient`` (Event Grid Basic) sends, and what the topic
checks before it takes the batch::

    POST /api/events?api-version=2018-01-01
    Authorization: Bearer <token for https://eventgrid.azure.net>     (a topic with local auth off)
    Content-Type: application/cloudevents-batch+json; charset=utf-8
    [ {"specversion": "1.0", "id", "source", "type", ...}, ... ]      (at most 1 MB)
    -> 200 (empty body)

Refusals are Event Grid's shape, ``{"error": {"code", "message"}}``: 401 without a valid token
for the Event Grid audience (tokens of :mod:`standins.identity`), 415 for another content type,
400 for a body that is not a batch of CloudEvents 1.0, 413 over 1 MB. Scripted faults
(``{"status": 429|503|..., "n": 1, "retryAfter": "5"}``) answer the next requests instead.

Recordings (admin API, :mod:`standins.admin`): ``events`` (every event taken, in order, with its
batch number) and ``requests`` (every publish request, answered or not).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from standins import LOOPBACK, StandInServer, json_response
from standins.admin import camel_json
from standins.faults import ScriptedFault
from standins.identity import DEFAULT_SIGNING_KEY, InvalidToken, verify_token

__all__ = ["BATCH_CONTENT_TYPE", "EVENTGRID_AUDIENCE", "EventGridStandIn"]

EVENTGRID_AUDIENCE = "https://eventgrid.azure.net"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
MAX_BATCH_BYTES = 1024 * 1024
_REQUIRED = ("specversion", "id", "source", "type")


@dataclass(frozen=True)
class TakenEvent:
    event: dict[str, Any]
    batch: int
    time: float

    def to_json(self) -> dict[str, Any]:
        return camel_json(self)


@dataclass
class PublishRequest:
    content_type: str
    events: int
    time: float
    status: int = 0
    error: str = ""
    audience: str = ""

    def to_json(self) -> dict[str, Any]:
        return camel_json(self)


@dataclass(kw_only=True)
class _Fault(ScriptedFault):
    status: int
    retry_after: str | None = None


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] = {}):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers)

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return json_response(body, self.status, self.headers)


@dataclass
class _Counters:
    batches: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class EventGridStandIn(StandInServer[_Fault]):
    """An Event Grid topic on loopback; ``endpoint`` is the value for MAILGW_EVENTGRID_ENDPOINT."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        signing_key: bytes = DEFAULT_SIGNING_KEY,
        audience: str = EVENTGRID_AUDIENCE,
        port_fallback: bool = False,
    ) -> None:
        super().__init__(host=host, port=port, port_fallback=port_fallback)
        self.signing_key = signing_key
        self.audience = audience
        self.events: list[TakenEvent] = []
        self.requests: list[PublishRequest] = []
        self._counters = _Counters()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/api/events"

    def ready_info(self) -> dict[str, Any]:
        return {"url": self.url, "endpoint": self.endpoint}

    # --- knobs --------------------------------------------------------------------------------
    def fail_next(self, status: int, n: int = 1, *, retry_after: str | None = None) -> _Fault:
        """Answer the next ``n`` publish requests with ``status`` (429 and 503 as Event Grid
        throttles and sheds load)."""
        return self.add_fault(_Fault(status=status, remaining=n, retry_after=retry_after))

    def add_fault_json(self, item: Mapping[str, Any]) -> object:
        """``{"status", "n", "retryAfter"}``."""
        retry_after = item.get("retryAfter")
        return self.fail_next(
            int(item["status"]),
            int(item.get("n", 1)),
            retry_after=None if retry_after is None else str(retry_after),
        )

    def recordings(self) -> Mapping[str, list[Any]]:
        return {"events": self.events, "requests": self.requests}

    def taken(self) -> list[dict[str, Any]]:
        return [item.event for item in self.events]

    # --- the topic ----------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = self.new_app(client_max_size=4 * MAX_BATCH_BYTES)
        app.router.add_post("/api/events", self._publish)
        return app

    async def _publish(self, request: web.Request) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        record = PublishRequest(content_type=content_type, events=0, time=time.monotonic())
        self.requests.append(record)
        try:
            record.audience = self._authenticate(request)
            fault = self.fault_queue.take(lambda f: True)
            if fault is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                code = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(fault.status, "")
                raise _Refused(fault.status, code or "Error", "stand-in fault", headers)
            if content_type != BATCH_CONTENT_TYPE:
                raise _Refused(
                    415,
                    "UnsupportedMediaType",
                    f"expected Content-Type {BATCH_CONTENT_TYPE!r}, got {content_type!r}",
                )
            body = await request.read()
            if len(body) > MAX_BATCH_BYTES:
                raise _Refused(413, "RequestEntityTooLarge", "the batch exceeds 1 MB")
            events = self._cloud_events(body)
        except _Refused as refused:
            record.status, record.error = refused.status, f"{refused.code}: {refused.message}"
            return refused.response()
        batch = next(self._counters.batches)
        now = time.monotonic()
        self.events.extend(TakenEvent(event, batch, now) for event in events)
        record.status, record.events = 200, len(events)
        return web.Response(status=200)

    def _authenticate(self, request: web.Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "Unauthorized", "The request has no bearer token.")
        try:
            claims = verify_token(token.strip(), key=self.signing_key)
        except InvalidToken as exc:
            raise _Refused(401, "Unauthorized", str(exc)) from exc
        if claims.resource.rstrip("/") != self.audience:
            raise _Refused(401, "Unauthorized", f"Invalid audience '{claims.resource}'.")
        return claims.resource

    @staticmethod
    def _cloud_events(body: bytes) -> list[dict[str, Any]]:
        try:
            events = json.loads(body)
        except ValueError as exc:
            raise _Refused(400, "BadRequest", f"the body is not JSON: {exc}") from exc
        if not isinstance(events, list) or not events:
            raise _Refused(400, "BadRequest", "a batch is a non-empty JSON array of events")
        for index, event in enumerate(events):
            missing = [a for a in _REQUIRED if not isinstance(event, dict) or not event.get(a)]
            if missing or event.get("specversion") != "1.0":
                raise _Refused(
                    400, "BadRequest", f"event {index} is not CloudEvents 1.0 (missing {missing})"
                )
        return events


def main(argv: list[str] | None = None) -> None:
    from standins.cli import signing_key, stand_in_parser

    parser = stand_in_parser("eventgrid", "Event Grid custom topic stand-in (loopback).")
    args = parser.parse_args(argv)
    EventGridStandIn(
        port=args.port, port_fallback=args.port_fallback, signing_key=signing_key(args)
    ).run_cli()


if __name__ == "__main__":
    main()
