"""Scripted Graph faults: an error answer instead of the real one, or the ambiguous outcome
where the request is carried out and the client still sees a failure.

Faults wait in the stand-in's :class:`~standins.faults.FaultQueue` and are taken first in, first
out by the first request they match: per mailbox and/or per :data:`Operation` (``None``: any Graph
call except the upload URL's PUT/DELETE, which a fault must name to hit). :class:`RandomFaults`
answers a share of the other calls with faults drawn at random (soaks, chaos runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiohttp import web

from standins.faults import FaultQueue, Gate, ScriptedFault
from standins.graph.errors import ERRORS, error_response
from standins.graph.records import Recorded

__all__ = [
    "Fault",
    "FaultMode",
    "FaultScripting",
    "RandomFaults",
    "answer_with_faults",
    "fault_from_json",
]

FaultMode = Literal[
    "respond", "accept_then_status", "accept_then_delay", "accept_then_drop", "accept_then_hold"
]
_UPLOAD_OPERATIONS = ("upload", "cancelUpload")


@dataclass(kw_only=True)
class Fault(ScriptedFault):
    """A scripted answer; consumed FIFO by the first request that matches it."""

    status: int
    code: str
    message: str
    retry_after: str | None = None
    mailbox: str | None = None
    operation: str | None = None
    mode: FaultMode = "respond"
    delay_seconds: float = 0.0
    raw_body: bytes | None = None
    content_type: str = "application/json"
    gate: Gate | None = None

    def matches(self, mailbox: str | None, operation: str) -> bool:
        if self.mailbox is not None and self.mailbox != mailbox:
            return False
        if self.operation is None:
            return operation not in _UPLOAD_OPERATIONS
        return self.operation == operation

    def response(self, rec: Recorded) -> web.Response:
        """The error answer (Graph's JSON, or ``raw_body`` as given), recorded on ``rec``."""
        headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
        rec.status, rec.error_code = self.status, self.code
        if self.raw_body is not None:
            return web.Response(
                status=self.status,
                body=self.raw_body,
                headers={"Content-Type": self.content_type, **headers},
            )
        return error_response(
            self.status, self.code, self.message, rec.header("client-request-id"), **headers
        )


class RandomFaults:
    """Each Graph call that no scripted fault took gets, with probability ``rate``, one of
    ``faults`` (drawn among those that match it). Seeded, so that a run can be repeated."""

    def __init__(self, rate: float, faults: Sequence[Fault], seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1; got {rate}")
        self.rate = rate
        self.faults = list(faults)
        self._rng = random.Random(seed)
        #: how many faults were drawn, by code
        self.drawn: dict[str, int] = {}

    @classmethod
    def from_json(cls, config: Mapping[str, Any]) -> RandomFaults:
        """``{"rate": 0.2, "seed": 7, "faults": [<a fault's JSON form>, ...]}``."""
        faults = [fault_from_json(item) for item in config.get("faults", [])]
        return cls(float(config.get("rate", 0.0)), faults, config.get("seed"))

    def draw(self, mailbox: str | None, operation: str) -> Fault | None:
        if self._rng.random() >= self.rate:
            return None
        candidates = [f for f in self.faults if f.matches(mailbox, operation)]
        if not candidates:
            return None
        fault = dataclasses.replace(self._rng.choice(candidates), remaining=1)
        self.drawn[fault.code] = self.drawn.get(fault.code, 0) + 1
        return fault


def _retry_after(value: float | str | None) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else f"{value:g}"


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def _canned(code: str, default_retry_after: float | None, doc: str) -> Callable[..., Fault]:
    """A :meth:`FaultScripting.fail_with` for one code (``n`` and ``retry_after`` positional)."""

    def script(
        self: FaultScripting,
        n: int = 1,
        retry_after: float | str | None = default_retry_after,
        *,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.fail_with(
            code, n=n, retry_after=retry_after, mailbox=mailbox, operation=operation
        )

    script.__doc__ = doc
    return script


class FaultScripting:
    """The Graph stand-in's fault helpers (a mixin: ``fault_queue`` is the server's queue)."""

    fault_queue: FaultQueue[Fault]

    def fail_next(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        n: int = 1,
        retry_after: float | str | None = None,
        mailbox: str | None = None,
        operation: str | None = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Fault:
        """Answer the next ``n`` matching Graph calls with ``status`` and
        ``{"error": {"code", "message", "innerError"}}`` (or ``raw_body``). ``operation`` is
        one of :data:`Operation` (None: any Graph call, not upload PUTs); ``mailbox`` None: any.
        ``Retry-After`` goes out as given; kiota parses whole seconds or an HTTP date only."""
        return self.fault_queue.add(
            Fault(
                status=status,
                code=code,
                message=message or ERRORS.get(code, (status, f"Injected {code}."))[1],
                remaining=n,
                retry_after=_retry_after(retry_after),
                mailbox=_lower(mailbox),
                operation=operation,
                raw_body=raw_body,
                content_type=content_type,
            )
        )

    def fail_with(
        self,
        code: str,
        *,
        n: int = 1,
        retry_after: float | str | None = None,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        """A canned error from :data:`ERRORS` (status and message as Graph sends them)."""
        status, message = ERRORS[code]
        return self.fail_next(
            status,
            code,
            message,
            n=n,
            retry_after=retry_after,
            mailbox=mailbox,
            operation=operation,
        )

    def throttle(
        self,
        n: int = 1,
        retry_after: float | str | None = 1,
        *,
        code: Literal["ApplicationThrottled", "TooManyRequests"] = "ApplicationThrottled",
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.fail_with(
            code, n=n, retry_after=retry_after, mailbox=mailbox, operation=operation
        )

    service_unavailable = _canned(
        "ServiceUnavailable", 1, "503 ``ServiceUnavailable`` (with ``Retry-After: 1``)."
    )
    gateway_timeout = _canned("GatewayTimeout", None, "504 ``GatewayTimeout``, no ``Retry-After``.")

    def accept_then_fail(
        self,
        status: int = 504,
        *,
        n: int = 1,
        mode: Literal["status", "delay", "drop"] = "status",
        delay_seconds: float = 5.0,
        code: str | None = None,
        retry_after: float | str | None = None,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        """The ambiguous outcome: the request is fully processed (the message IS delivered),
        then the client gets ``status`` (mode "status"), or the success answer only after
        ``delay_seconds`` (mode "delay": past the client's timeout), or the connection is
        closed without an answer (mode "drop")."""
        code = code or {504: "GatewayTimeout", 503: "ServiceUnavailable"}.get(
            status, "UnknownError"
        )
        return self.fault_queue.add(
            Fault(
                status=status,
                code=code,
                message=ERRORS.get(code, (status, f"Injected {code}."))[1],
                remaining=n,
                retry_after=_retry_after(retry_after),
                mailbox=_lower(mailbox),
                operation=operation,
                mode=cast(FaultMode, f"accept_then_{mode}"),
                delay_seconds=delay_seconds,
            )
        )

    def hold_answers(
        self, n: int = 1, *, mailbox: str | None = None, operation: str | None = None
    ) -> Gate:
        """Carry out the next ``n`` matching requests, then hold their answers (and their slots
        in the mailbox's concurrency count) until the returned gate is released."""
        gate = Gate()
        self.fault_queue.add(
            Fault(
                status=200,
                code="Held",
                message="",
                remaining=n,
                mailbox=_lower(mailbox),
                operation=operation,
                mode="accept_then_hold",
                gate=gate,
            )
        )
        return gate

    @property
    def pending_faults(self) -> list[Fault]:
        return self.fault_queue.pending

    def add_fault_json(self, item: Mapping[str, Any]) -> Fault:
        """Script a fault from its JSON form (:func:`fault_from_json`)."""
        return self.fault_queue.add(fault_from_json(item))


def fault_from_json(item: Mapping[str, Any]) -> Fault:
    """``{"preset": "ErrorSendAsDenied"}`` or ``{"status", "code", "message"}``, plus ``n``,
    ``retryAfter``, ``mailbox``, ``operation``, ``mode`` ("respond" | "status" | "delay" |
    "drop": the request is carried out, then the answer is lost), ``delaySeconds``."""
    mode = item.get("mode", "respond")
    if "preset" in item:
        if item["preset"] not in ERRORS:
            raise ValueError(f"unknown preset {item['preset']!r}: one of {sorted(ERRORS)}")
        status, code = ERRORS[item["preset"]][0], item["preset"]
    elif mode != "respond":
        status = int(item.get("status", 504))
        code = item.get("code") or {504: "GatewayTimeout", 503: "ServiceUnavailable"}.get(
            status, "UnknownError"
        )
    else:
        status, code = int(item["status"]), item["code"]
    return Fault(
        status=status,
        code=code,
        message=item.get("message") or ERRORS.get(code, (status, f"Injected {code}."))[1],
        remaining=int(item.get("n", 1)),
        retry_after=_retry_after(item.get("retryAfter")),
        mailbox=_lower(item.get("mailbox")),
        operation=item.get("operation"),
        mode="respond" if mode == "respond" else cast(FaultMode, f"accept_then_{mode}"),
        delay_seconds=float(item.get("delaySeconds", 5.0)),
    )


async def answer_with_faults(
    faults: FaultQueue[Fault],
    request: web.Request,
    rec: Recorded,
    handle: Callable[[], Awaitable[web.StreamResponse]],
    random_faults: RandomFaults | None = None,
) -> web.StreamResponse:
    """Answer ``rec`` with the fault it matches (scripted first, else perhaps a random one), or
    with ``await handle()``; for the ambiguous modes, ``handle()`` runs first (the request IS
    carried out) and the fault decides the answer.
    """
    fault = faults.take(lambda f: f.matches(rec.mailbox, rec.operation))
    if fault is None and random_faults is not None:
        fault = random_faults.draw(rec.mailbox, rec.operation)
    if fault is not None and fault.mode == "respond":
        rec.fault = fault.code
        return fault.response(rec)
    response: web.StreamResponse = await handle()
    if fault is None:
        return response
    rec.fault = f"{fault.mode}:{fault.code}"
    if fault.mode == "accept_then_status":
        return fault.response(rec)
    if fault.mode == "accept_then_delay":
        await asyncio.sleep(fault.delay_seconds)
        return response
    if fault.mode == "accept_then_hold":
        assert fault.gate is not None
        await fault.gate.wait()
        return response
    # accept_then_drop: close the connection without an answer
    rec.status = 0
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # aiohttp treats the handler as cancelled; nothing is sent
