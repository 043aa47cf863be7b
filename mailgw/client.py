"""A typed Python client of the gateway's HTTP API, sync (:class:`Client`) and async
(:class:`AsyncClient`), on httpx.

    from mailgw.client import Client

    with Client("https://mailgw.example.net", key="...") as mailgw:
        accepted = mailgw.send({"from": "noreply@contoso.com", "to": ["a@example.com"],
                                "subject": "Hi", "text": "Hello"})
        print(mailgw.status(accepted.id).status)

Sending is safe to retry: every POST carries an ``Idempotency-Key`` (the caller's, or one the
client makes), so a 503 or a timeout is retried with the same key and can never queue a message
twice. A problem+json answer becomes :class:`ApiError` (``status``, ``type``, ``detail`` and the
field ``errors``); a gateway that cannot be reached at all, :class:`httpx.TransportError`.

Both clients share one implementation: each call is a generator that yields what to do (send this
request, or wait this long) and is driven by the blocking or the asynchronous loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from mailgw.models import SubmitResult
from mailgw.pacing.usage import MailboxUsage
from mailgw.state.record import MessageState

__all__ = [
    "ApiError",
    "AsyncClient",
    "BatchAnswer",
    "Client",
    "FieldProblem",
    "Health",
    "MessageState",
    "SubmitResult",
]

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
#: Attempts of one call that meets 503s or timeouts (the first included).
ATTEMPTS = 4
BACKOFF_SECONDS = 0.5
#: A server's Retry-After is honoured up to this; past it the call gives up with the 503.
MAX_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class ApiError(Exception):
    """The gateway said no: its problem+json (RFC 9457), or whatever else it answered."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        problem = body if isinstance(body, dict) else {}
        self.type: str | None = problem.get("type")
        self.title: str | None = problem.get("title")
        self.detail: str | None = problem.get("detail")
        self.errors = [
            FieldProblem(str(e.get("field")), str(e.get("message")))
            for e in problem.get("errors") or []
            if isinstance(e, dict)
        ]
        super().__init__(f"HTTP {status}: {self.title or ''} {self.detail or ''}".strip())


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str
    queue: str
    transport: str
    depth: dict[str, int]


class BatchAnswer(BaseModel):
    """A batch's 207: per item, in order, a :class:`SubmitResult` or an :class:`ApiError`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    accepted: int
    rejected: int
    results: list[SubmitResult | ApiError]


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _parse(kind: type[T], body: Any) -> T:
    adapter = _ADAPTERS.setdefault(kind, TypeAdapter(kind))
    return adapter.validate_python(body)  # type: ignore[no-any-return]


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def _batch(body: Any) -> BatchAnswer:
    results: list[SubmitResult | ApiError] = []
    for item in body["results"]:
        if isinstance(item.get("status"), int):
            results.append(ApiError(item["status"], item))
        else:
            results.append(SubmitResult.model_validate(item))
    return BatchAnswer(accepted=body["accepted"], rejected=body["rejected"], results=results)


#: What a call asks its driver to do: send a request (and hand back the response or the
#: transport error), or sleep.
Step = httpx.Request | float
Outcome = httpx.Response | httpx.TransportError | None
Call = Generator[Step, Outcome, T]


class _Steps(Generic[T]):
    """Drives a call for either client: iterating gives what it asks for next (a request to
    send, or seconds to sleep); set ``outcome`` to what sending gave; ``value`` is the answer
    (there once the iteration ends)."""

    value: T

    def __init__(self, call: Call[T]) -> None:
        self._call = call
        self.outcome: Outcome = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Step:
        outcome, self.outcome = self.outcome, None
        try:
            return self._call.send(outcome)
        except StopIteration as done:
            self.value = done.value
            raise StopIteration from None


@dataclass
class _Api:
    """The calls, independent of how requests are sent."""

    base_url: str
    key: str | None = None
    token: str | None = None
    attempts: int = ATTEMPTS
    headers: dict[str, str] = field(default_factory=dict)

    def _request(self, method: str, path: str, body: Any, key: str | None) -> httpx.Request:
        headers = {"Accept": "application/json", **self.headers}
        if self.key:
            headers["x-functions-key"] = self.key
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if key is not None:
            headers["Idempotency-Key"] = key
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        url = self.base_url.rstrip("/") + path
        return httpx.Request(method, url, headers=headers, content=content)

    def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None
    ) -> Call[Any]:
        """One API call: the answer's JSON; 503s and timeouts are retried (POSTs always carry
        an Idempotency-Key by then, so a retry cannot queue twice)."""
        request = self._request(method, path, body, key)
        for attempt in range(1, self.attempts + 1):
            outcome = yield request
            last = attempt == self.attempts
            if isinstance(outcome, httpx.TimeoutException) and not last:
                yield BACKOFF_SECONDS * 2 ** (attempt - 1)
                continue
            if isinstance(outcome, httpx.TransportError):
                raise outcome
            assert outcome is not None
            body_out = _decode(outcome)
            if outcome.status_code == 503 and not last:
                wait = _retry_after(outcome)
                wait = BACKOFF_SECONDS * 2 ** (attempt - 1) if wait is None else wait
                if wait <= MAX_WAIT_SECONDS:
                    yield wait
                    continue
            if outcome.status_code >= 400:
                raise ApiError(outcome.status_code, body_out)
            return body_out
        raise AssertionError("unreachable")

    def send(
        self, message: Mapping[str, Any], idempotency_key: str | None = None
    ) -> Call[SubmitResult]:
        key = idempotency_key or str(uuid.uuid4())
        return self._typed(SubmitResult, self.call("POST", "/api/v1/messages", message, key=key))

    def send_batch(
        self, messages: Sequence[Mapping[str, Any]], idempotency_key: str | None = None
    ) -> Call[BatchAnswer]:
        key = idempotency_key or str(uuid.uuid4())
        body = {"messages": list(messages)}
        answer = yield from self.call("POST", "/api/v1/messages:batch", body, key=key)
        return _batch(answer)

    def status(self, message_id: str) -> Call[MessageState]:
        return self._typed(MessageState, self.call("GET", _message_path(message_id)))

    def cancel(self, message_id: str) -> Call[MessageState]:
        return self._typed(MessageState, self.call("DELETE", _message_path(message_id)))

    def replay(self, message_id: str) -> Call[MessageState]:
        path = _message_path(message_id) + "/replay"
        return self._typed(MessageState, self.call("POST", path))

    def usage(self, mailbox: str) -> Call[MailboxUsage]:
        path = "/api/v1/mailboxes/" + urllib.parse.quote(mailbox, safe="@") + "/usage"
        return self._typed(MailboxUsage, self.call("GET", path))

    def health(self) -> Call[Health]:
        return self._typed(Health, self.call("GET", "/api/v1/health"))

    def openapi(self) -> Call[dict[str, Any]]:
        return self.call("GET", "/api/v1/openapi.json")

    @staticmethod
    def _typed(kind: type[T], call: Call[Any]) -> Call[T]:
        answer = yield from call
        return _parse(kind, answer)


def _message_path(message_id: str) -> str:
    return "/api/v1/messages/" + urllib.parse.quote(message_id, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(float(response.headers.get("retry-after", "")), 0.0)
    except ValueError:
        return None


class _Base(Generic[H]):
    """What both clients are made of: the calls (:class:`_Api`) and an httpx client of their
    kind. ``key``: a Functions key; ``token``: an Entra ID access token; ``http``: an httpx
    client to use instead of a new one."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:7071",
        *,
        key: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        attempts: int = ATTEMPTS,
        http: H | None = None,
    ) -> None:
        self._api = _Api(base_url, key, token, attempts)
        self._http: H = http or self._new_http(timeout)

    def _new_http(self, timeout: float) -> H:
        raise NotImplementedError


class Client(_Base[httpx.Client]):
    """The blocking client. ``key``: a Functions key; ``token``: an Entra ID access token."""

    def _new_http(self, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout)

    def _run(self, call: Call[T]) -> T:
        steps = _Steps(call)
        for step in steps:
            if isinstance(step, httpx.Request):
                try:
                    steps.outcome = self._http.send(step)
                except httpx.TransportError as error:
                    steps.outcome = error
            else:
                time.sleep(step)
        return steps.value

    def request(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> Any:
        """Any call, untyped: the answer's JSON (a POST gets an Idempotency-Key if not given)."""
        if method == "POST" and idempotency_key is None:
            idempotency_key = str(uuid.uuid4())
        return self._run(self._api.call(method, path, body, key=idempotency_key))

    def send(self, message: Mapping[str, Any], idempotency_key: str | None = None) -> SubmitResult:
        return self._run(self._api.send(message, idempotency_key))

    def send_batch(
        self, messages: Sequence[Mapping[str, Any]], idempotency_key: str | None = None
    ) -> BatchAnswer:
        return self._run(self._api.send_batch(messages, idempotency_key))

    def status(self, message_id: str) -> MessageState:
        return self._run(self._api.status(message_id))

    def cancel(self, message_id: str) -> MessageState:
        return self._run(self._api.cancel(message_id))

    def replay(self, message_id: str) -> MessageState:
        return self._run(self._api.replay(message_id))

    def usage(self, mailbox: str) -> MailboxUsage:
        """A sender mailbox's budgets and their use (admin key, or Messages.ReadAll)."""
        return self._run(self._api.usage(mailbox))

    def health(self) -> Health:
        return self._run(self._api.health())

    def openapi(self) -> dict[str, Any]:
        return self._run(self._api.openapi())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base[httpx.AsyncClient]):
    """The asyncio client: the same calls, awaited."""

    def _new_http(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout)

    async def _run(self, call: Call[T]) -> T:
        steps = _Steps(call)
        for step in steps:
            if isinstance(step, httpx.Request):
                try:
                    steps.outcome = await self._http.send(step)
                except httpx.TransportError as error:
                    steps.outcome = error
            else:
                await asyncio.sleep(step)
        return steps.value

    async def send(
        self, message: Mapping[str, Any], idempotency_key: str | None = None
    ) -> SubmitResult:
        return await self._run(self._api.send(message, idempotency_key))

    async def send_batch(
        self, messages: Sequence[Mapping[str, Any]], idempotency_key: str | None = None
    ) -> BatchAnswer:
        return await self._run(self._api.send_batch(messages, idempotency_key))

    async def status(self, message_id: str) -> MessageState:
        return await self._run(self._api.status(message_id))

    async def cancel(self, message_id: str) -> MessageState:
        return await self._run(self._api.cancel(message_id))

    async def replay(self, message_id: str) -> MessageState:
        return await self._run(self._api.replay(message_id))

    async def usage(self, mailbox: str) -> MailboxUsage:
        return await self._run(self._api.usage(mailbox))

    async def health(self) -> Health:
        return await self._run(self._api.health())

    async def openapi(self) -> dict[str, Any]:
        return await self._run(self._api.openapi())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
