"""The HTTP side of the host: an aiohttp server in front of the app's HTTP triggers.

It reproduces what callers of the real host observe: ``/{routePrefix}/{route}`` with ASP.NET
route templates, 404 (not 405) for a method the function does not accept, 413 above the request
body limit (``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``, as the host reads it), 500 with an empty body
when the function raises, and the ``/admin`` endpoints that tools poll. Requests and responses go
through azure.functions' own types and converters. One deliberate difference: the host's 413 has
an empty body, the dev host's is problem+json naming the limit and the setting, since an empty
413 leaves a developer guessing which layer refused.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from http.cookies import SimpleCookie
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.functions.http import HttpResponseConverter
from multidict import CIMultiDict, MultiMapping

from devhost.app_loader import HttpFunction
from devhost.invoke import Invoker
from devhost.routes import order_routes

log = logging.getLogger("devhost.http")

DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's request body limit
#: the Functions host's own setting for that limit (an app setting, in Azure as here)
BODY_LIMIT_SETTING = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"
HTTP_REASON = "This function was programmatically called via the host APIs."
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def max_request_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``DEVHOST_MAX_REQUEST_BYTES``, else ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``, else 100 MiB
    (the host's default). An app that checks its own, smaller limit sets the host's above it, so
    that the app, not the host, answers a body between the two."""
    environ = os.environ if environ is None else environ
    for name in ("DEVHOST_MAX_REQUEST_BYTES", BODY_LIMIT_SETTING):
        value = environ.get(name, "").strip()
        if value:
            return int(value)
    return DEFAULT_MAX_REQUEST_BYTES


def too_large(limit: int, size: int | None) -> web.Response:
    """The host's own refusal, as problem+json (RFC 9457) like every error a caller should read."""
    what = f"is {size} bytes" if size is not None else "is larger"
    return web.json_response(
        {
            "type": "about:blank",
            "title": "Request body too large",
            "status": 413,
            "detail": f"The request body {what}; the Functions host accepts at most {limit} "
            f"bytes ({BODY_LIMIT_SETTING}). Nothing reached the function.",
        },
        status=413,
        content_type="application/problem+json",
    )


def _joined(values: MultiMapping[str]) -> dict[str, str]:
    """Repeated header or query names arrive comma-joined, as the host's StringValues are."""
    joined: dict[str, str] = {}
    for key in values:
        if key not in joined:
            joined[key] = ",".join(values.getall(key))
    return joined


def to_http_request(request: web.Request, route_params: Mapping[str, str], body: bytes) -> Any:
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=_joined(request.headers),
        params=_joined(request.rel_url.query),
        route_params=dict(route_params),
        body=body,
    )


def to_web_response(result: Any) -> web.Response:
    """Convert the function's return value with the worker's own converter, as Azure does.

    ``func.HttpResponse`` or ``str`` are accepted; anything else (``None`` included) raises, which
    makes the invocation fail with a 500 just like in Azure.
    """
    try:
        datum = HttpResponseConverter.encode(result, expected_type=None)
    except NotImplementedError:
        raise TypeError(
            f"an HTTP function must return func.HttpResponse or str, not {type(result).__name__}"
        ) from None
    if datum.type == "string":
        return web.Response(
            status=200,
            body=str(datum.value).encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    value: dict[str, Any] = datum.value
    headers: CIMultiDict[str] = CIMultiDict()
    for name, header in value["headers"].items():
        if name.lower() not in _HOP_HEADERS:
            headers.add(name, str(header.value))
    cookies: list[SimpleCookie] = value.get("cookies") or []
    for cookie in cookies:
        for morsel in cookie.values():
            headers.add("Set-Cookie", morsel.OutputString())
    body = value["body"].value or b""
    return web.Response(status=int(value["status_code"].value), body=body, headers=headers)


class HttpFrontEnd:
    """Routes requests to HTTP functions and serves the admin endpoints."""

    def __init__(
        self,
        functions: Sequence[HttpFunction],
        invoker: Invoker,
        *,
        max_body: int,
        catalog: Callable[[], list[dict[str, Any]]],
        extensions: Sequence[Callable[[web.Application], None]] = (),
    ) -> None:
        by_route = {id(f.route): f for f in functions}
        self._functions = [by_route[id(r)] for r in order_routes(f.route for f in functions)]
        self._invoker = invoker
        self._max_body = max_body
        self._catalog = catalog
        self._extensions = extensions
        self._started = time.monotonic()
        self.state = "Initialized"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_get("/admin/host/status", self._status)
        app.router.add_get("/admin/functions", self._functions_list)
        for extend in self._extensions:  # the dev host's own pages, before the app's routes
            extend(app)
        # Every path reaches the dispatcher, even one whose decoded form has a line break (an id
        # with %0A): aiohttp's "." stops at it, the host's routing does not.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._dispatch)
        return app

    async def _status(self, _: web.Request) -> web.Response:
        uptime = int((time.monotonic() - self._started) * 1000)
        return web.json_response({"id": "devhost", "state": self.state, "processUptime": uptime})

    async def _functions_list(self, _: web.Request) -> web.Response:
        return web.json_response(self._catalog())

    def _route(self, method: str, raw_path: str) -> tuple[HttpFunction, dict[str, str]] | None:
        for function in self._functions:
            if method in function.methods:
                values = function.route.match(raw_path)
                if values is not None:
                    return function, values
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        routed = self._route(request.method, request.rel_url.raw_path)
        if routed is None:
            return web.Response(status=404)
        function, route_params = routed
        if request.content_length is not None and request.content_length > self._max_body:
            return too_large(self._max_body, request.content_length)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large(self._max_body, None)
        http_request = to_http_request(request, route_params, body)
        try:
            result = await self._invoker.invoke(
                function,
                http_request,
                reason=HTTP_REASON,
                trace_parent=request.headers.get("traceparent"),
                trace_state=request.headers.get("tracestate"),
                convert=to_web_response,
            )
        except Exception:
            return web.Response(status=500)  # the failure and its traceback are already logged
        response: web.Response = result
        return response
