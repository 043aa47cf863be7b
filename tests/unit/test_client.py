"""mailgw.client against a stand-in gateway on 127.0.0.1: retries keep their Idempotency-Key,
problems become exceptions, and the sync and async clients behave alike."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailgw.client import ApiError, AsyncClient, Client, SubmitResult
from support import QuietHandler, sample_request, serve_http

ACCEPTED = {"id": "m-1", "status": "queued", "statusUrl": "/api/v1/messages/m-1"}
INVALID = {
    "type": "urn:mailgw:problem:validation",
    "title": "Invalid send request",
    "status": 400,
    "detail": "The request has 1 invalid field: to[0]: is not a valid email address",
    "errors": [{"field": "to[0]", "message": "is not a valid email address"}],
}


class Script:
    """What the stand-in answers, in order, and what it was sent."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any, float]] = []  # status, body, delay before answering
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()


@pytest.fixture
def gateway() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(QuietHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length) if length else b""
            with script.lock:
                script.seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "key": self.headers.get("Idempotency-Key"),
                        "auth": self.headers.get("x-functions-key"),
                        "body": json.loads(body) if body else None,
                    }
                )
                status, answer, delay = script.answers.pop(0) if script.answers else (500, {}, 0)
            time.sleep(delay)  # a slow gateway (the client's timeout is shorter)
            data = json.dumps(answer).encode()
            self.send_response(status)
            kind = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", kind)
            if status == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

    with serve_http(Handler) as base:
        yield base, script


def test_a_503_is_retried_with_the_same_idempotency_key(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    script.answers = [(503, {"status": 503}, 0), (503, {"status": 503}, 0), (202, ACCEPTED, 0)]
    with Client(base, key="k") as client:
        accepted = client.send(sample_request())
    assert accepted == SubmitResult.model_validate(ACCEPTED)
    keys = [seen["key"] for seen in script.seen]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1  # one key, made by the client
    assert all(seen["auth"] == "k" for seen in script.seen)


def test_a_timeout_is_retried_with_the_callers_key(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    script.answers = [(202, ACCEPTED, 1.0), (202, ACCEPTED, 0)]
    with Client(base, timeout=0.2) as client:
        client.send(sample_request(), idempotency_key="order-42")
    assert [seen["key"] for seen in script.seen] == ["order-42", "order-42"]


def test_retries_end(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    script.answers = [(503, {"status": 503, "title": "Queue unavailable"}, 0)] * 2
    with Client(base, attempts=2) as client, pytest.raises(ApiError) as failed:
        client.send(sample_request())
    assert failed.value.status == 503
    assert len(script.seen) == 2


def test_a_problem_becomes_an_exception_with_its_fields(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    script.answers = [(400, INVALID, 0)]
    with Client(base) as client, pytest.raises(ApiError) as refused:
        client.send(sample_request(to=["x"]))
    error = refused.value
    assert (error.status, error.type, error.title) == (400, INVALID["type"], INVALID["title"])
    assert [(e.field, e.message) for e in error.errors] == [
        ("to[0]", "is not a valid email address")
    ]
    assert len(script.seen) == 1  # a 400 is not retried


def test_batch_results_are_typed_per_item(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    answer = {"accepted": 1, "rejected": 1, "results": [ACCEPTED, INVALID]}
    script.answers = [(207, answer, 0)]
    with Client(base) as client:
        batch = client.send_batch([sample_request(), sample_request(to=["x"])])
    ok, refused = batch.results
    assert isinstance(ok, SubmitResult) and ok.id == "m-1"
    assert isinstance(refused, ApiError) and refused.errors[0].field == "to[0]"
    (seen,) = script.seen
    assert seen["path"] == "/api/v1/messages:batch" and len(seen["body"]["messages"]) == 2


def test_paths_quote_the_id(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    state = {
        "id": "a/b", "status": "canceled", "attempts": 0, "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z", "sendAt": None, "lastError": None, "metadata": {},
        "history": [], "ambiguous": False, "replays": 0,
    }  # fmt: skip
    script.answers = [(200, state, 0)]
    with Client(base) as client:
        assert client.cancel("a/b").status == "canceled"
    assert (script.seen[0]["method"], script.seen[0]["path"]) == (
        "DELETE",
        "/api/v1/messages/a%2Fb",
    )


async def test_the_async_client_retries_alike(gateway: tuple[str, Script]) -> None:
    base, script = gateway
    script.answers = [(503, {"status": 503}, 0), (202, ACCEPTED, 0)]
    async with AsyncClient(base) as client:
        accepted = await client.send(sample_request())
    assert accepted.id == "m-1"
    assert len({seen["key"] for seen in script.seen}) == 1 and len(script.seen) == 2


def test_an_unreachable_gateway_is_a_transport_error() -> None:
    with Client("http://127.0.0.1:9", attempts=1) as client, pytest.raises(httpx.ConnectError):
        client.health()
