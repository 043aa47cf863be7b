"""The dev host's HTTP side, as a caller sees it: a real process serving ``apps/http_app``."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from devhost_support import DevHostProcess, StartDevHost

from support import wait_until

SMALL_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def host(start_devhost: StartDevHost) -> DevHostProcess:
    """The app as configured by its files; OVERRIDDEN shows the environment beating the file."""
    return start_devhost("http_app", OVERRIDDEN="from-env")


@pytest.fixture(scope="module")
def small_host(start_devhost: StartDevHost) -> DevHostProcess:
    """No route prefix (a host.json override) and a 1 MB body limit."""
    return start_devhost(
        "http_app",
        AzureFunctionsJobHost__extensions__http__routePrefix="",
        DEVHOST_MAX_REQUEST_BYTES=str(SMALL_LIMIT),
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as client:
        yield client


async def call(
    session: aiohttp.ClientSession, host: DevHostProcess, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, host.base_url + path, **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


async def test_status_and_function_list(host: DevHostProcess) -> None:
    assert host.get_json("/admin/host/status")["state"] == "Running"
    functions = {f["name"]: f for f in host.get_json("/admin/functions")}
    assert functions["items"]["route"] == "items/{id:int}/{action?}"
    assert functions["items"]["methods"] == ["GET", "PUT"]
    assert functions["items"]["invoke_url_template"].endswith("/api/items/{id:int}/{action?}")
    assert functions["default_route"]["route"] == "default_route"  # route defaults to the name
    assert functions["disabled_function"]["running"] is False  # AzureWebJobs.<name>.Disabled
    assert functions["every_five_minutes"]["trigger"] == "timerTrigger"
    assert functions["every_five_minutes"]["running"] is True
    assert functions["every_five_minutes"]["schedule"] == "0 */5 * * * *"
    assert re.search(r"Dev host ready: http://127\.0\.0\.1:\d+ \(15 functions\)", host.stdout())
    assert "items: [GET,PUT] http://127.0.0.1:" in host.stdout()
    assert "every_five_minutes: timerTrigger (schedule: 0 */5 * * * *)" in host.stdout()
    assert "Function keys are not enforced by the dev host" in host.log()


async def test_route_and_query_parameters(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    status, _, body = await call(session, host, "GET", "/api/items/42/edit?a=1&a=2&b=x%20y")
    assert status == 200
    assert json.loads(body) == {
        "route": {"id": "42", "action": "edit"},
        "params": {"a": "1,2", "b": "x y"},
        "method": "GET",
    }
    status, _, body = await call(session, host, "PUT", "/api/ITEMS/7/")  # case, trailing slash
    assert status == 200
    assert json.loads(body)["route"] == {"id": "7"}  # the optional segment is simply absent


async def test_constraints_and_precedence(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    assert (await call(session, host, "GET", "/api/items/abc"))[0] == 404  # {id:int}
    assert (await call(session, host, "GET", "/api/items/99999999999"))[0] == 404  # > int32
    status, _, body = await call(session, host, "GET", "/api/items/special")
    assert (status, json.loads(body)) == (200, {"special": True})  # literal beats {id}
    guid = str(uuid.uuid4())
    status, _, body = await call(session, host, "GET", f"/api/guid/{guid}")
    assert (status, json.loads(body)) == (200, {"id": guid})
    assert (await call(session, host, "GET", "/api/guid/not-a-guid"))[0] == 404


async def test_catch_all_matches_any_depth_and_any_method(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    status, _, body = await call(session, host, "DELETE", "/api/files/a/b/c%20d.txt")
    assert (status, json.loads(body)) == (200, {"route": {"path": "a/b/c d.txt"}})
    status, _, body = await call(session, host, "GET", "/api/files")
    assert (status, json.loads(body)) == (200, {"route": {}})


async def test_a_route_value_with_an_encoded_line_break_reaches_the_function(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    """The host's routing takes any character in a segment; the dev host's own web framework
    must not answer such a path itself (with its plain-text 404)."""
    status, _, body = await call(session, host, "GET", "/api/files/a%0Ab")
    assert (status, json.loads(body)) == (200, {"route": {"path": "a\nb"}})


async def test_unknown_path_and_wrong_method_are_404(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    # The host answers 404 with an empty body (not 405) when no route accepts the method.
    status, _, body = await call(session, host, "GET", "/api/post-only")
    assert (status, body) == (404, b"")
    assert (await call(session, host, "POST", "/api/post-only"))[0] == 204
    assert (await call(session, host, "HEAD", "/api/guid/" + str(uuid.uuid4())))[0] == 404
    assert (await call(session, host, "GET", "/api/nowhere"))[0] == 404
    assert (await call(session, host, "GET", "/hello"))[0] == 404  # the prefix is required
    assert (await call(session, host, "GET", "/api/disabled"))[0] == 404


async def test_async_and_sync_functions(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    status, headers, body = await call(session, host, "GET", "/api/hello?name=dev")
    assert (status, body) == (200, b"hello dev")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, _, body = await call(
        session, host, "POST", "/api/echo", data=b"abc", headers={"X-Custom": "c1"}
    )
    echoed = json.loads(body)
    assert status == 200
    assert echoed["length"] == 3 and echoed["custom"] == "c1"
    assert echoed["thread"].startswith("worker")  # sync functions run in the worker thread pool
    assert echoed["url"] == f"{host.base_url}/api/echo"


async def test_request_bodies_arrive_as_sent(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    compressed = gzip.compress(b"x" * 1000)
    status, _, body = await call(
        session, host, "POST", "/api/echo", data=compressed, headers={"Content-Encoding": "gzip"}
    )
    assert status == 200
    assert json.loads(body)["length"] == len(compressed)  # the host does not gunzip requests


async def test_response_conversion(host: DevHostProcess, session: aiohttp.ClientSession) -> None:
    status, headers, body = await call(session, host, "GET", "/api/headers")
    assert status == 201
    assert body == b"\x00\x01binary"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Result"] == "yes"
    assert headers["Set-Cookie"].startswith("a=1")
    status, headers, body = await call(session, host, "GET", "/api/default_route")  # returns str
    assert (status, body) == (200, b"default route")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_exceptions_are_500_with_empty_body_and_logged(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    assert await _status_and_body(session, host, "/api/boom") == (500, b"")
    assert await _status_and_body(session, host, "/api/sync-boom") == (500, b"")
    assert await _status_and_body(session, host, "/api/returns-none") == (500, b"")

    def logged() -> str:
        text = host.log()
        return text if "sync boom on purpose" in text else ""

    log = wait_until(logged, what="the failures to be logged")
    assert re.search(
        r"Executed 'Functions\.boom' \(Failed, Id=[0-9a-f-]{36}, Duration=\d+ms\)", log
    )
    assert "RuntimeError: boom on purpose" in log  # the traceback is logged
    assert "must return func.HttpResponse or str, not NoneType" in log


async def _status_and_body(
    session: aiohttp.ClientSession, host: DevHostProcess, path: str
) -> tuple[int, bytes]:
    status, _, body = await call(session, host, "GET", path)
    return status, body


async def test_context_argument(host: DevHostProcess, session: aiohttp.ClientSession) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, _, body = await call(
        session, host, "GET", "/api/context", headers={"traceparent": parent}
    )
    context = json.loads(body)
    assert status == 200
    assert context["function_name"] == "with_context"
    assert uuid.UUID(context["invocation_id"])
    assert context["trace_parent"] == parent


async def test_local_settings_come_from_the_sample_and_env_wins(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    assert "Created local.settings.json from local.settings.sample.json" in host.stdout()
    assert (host.app_dir / "local.settings.json").exists()
    status, _, body = await call(session, host, "GET", "/api/settings?names=FROM_SAMPLE,OVERRIDDEN")
    assert status == 200
    assert json.loads(body) == {"FROM_SAMPLE": "sample-value", "OVERRIDDEN": "from-env"}


async def test_a_30_mb_json_body_is_accepted(
    host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    document = json.dumps({"data": "x" * (30 * 1024 * 1024)}).encode()
    status, _, body = await call(
        session,
        host,
        "POST",
        "/api/echo",
        data=document,
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    assert json.loads(body)["length"] == len(document)
    assert json.loads(body)["json_keys"] == 1


async def test_a_body_over_100_mb_is_413_before_it_is_sent(host: DevHostProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
    writer.write(
        b"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 104857601\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert b"application/problem+json" in head  # not an empty 413: it says which layer refused
    problem = json.loads(body)
    assert (problem["status"], problem["title"]) == (413, "Request body too large")
    assert (
        "104857601 bytes" in problem["detail"]
        and "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT" in problem["detail"]
    )


async def test_route_prefix_override_and_configured_body_limit(
    small_host: DevHostProcess, session: aiohttp.ClientSession
) -> None:
    assert (await call(session, small_host, "GET", "/hello"))[0] == 200
    assert (await call(session, small_host, "GET", "/api/hello"))[0] == 404
    at_limit = await call(session, small_host, "POST", "/echo", data=b"a" * SMALL_LIMIT)
    assert at_limit[0] == 200 and json.loads(at_limit[2])["length"] == SMALL_LIMIT
    over = await call(session, small_host, "POST", "/echo", data=b"a" * (SMALL_LIMIT + 1))
    assert over[0] == 413
    assert over[1]["Content-Type"].startswith("application/problem+json")
    assert f"at most {SMALL_LIMIT} bytes" in json.loads(over[2])["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies as read
        for _ in range(4):
            yield b"b" * (SMALL_LIMIT // 2)

    assert (await call(session, small_host, "POST", "/echo", data=chunks()))[0] == 413
