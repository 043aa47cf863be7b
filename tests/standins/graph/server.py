"""The Graph stand-in's wiring: settings, what it records, routing, and the per-mailbox limits that
stand before every resource (authentication, mailbox existence, rate and concurrency)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

from aiohttp import web

from standins import LOOPBACK, StandInServer, grants, wait_recorded, wait_recorded_async
from standins.graph.auth import (
    GRAPH_AUDIENCES,
    REQUIRED_ROLES,
    TokenVerifier,
    authenticate,
    authorize,
    standin_token_verifier,
)
from standins.graph.drafts import Drafts
from standins.graph.errors import ERRORS, GraphError, error_response
from standins.graph.faults import Fault, FaultScripting, RandomFaults, answer_with_faults
from standins.graph.folders import Folders
from standins.graph.mailstore import MailStore
from standins.graph.records import DeliveredMessage, Operation, Recorded
from standins.graph.sendmail import SendMail
from standins.graph.submission import Submission
from standins.graph.uploads import Uploads, UploadSession, is_upload_path
from standins.identity import DEFAULT_SIGNING_KEY, TokenClaims

__all__ = ["GraphStandIn"]

MAX_REQUEST_BYTES = 4_000_000
MIN_UPLOAD_SESSION_BYTES = 3 * 1024 * 1024
UPLOAD_CHUNK_MULTIPLE = 320 * 1024
MAX_UPLOAD_CHUNK_BYTES = 60 * 1024 * 1024
MAX_MESSAGE_BYTES = 150 * 1024 * 1024

Handler = Callable[[Recorded, str], web.Response]

#: ``/users/{user}/<shape>`` -> method -> operation; ``*`` stands for a message id
ROUTES: dict[tuple[str, ...], dict[str, Operation]] = {
    ("sendmail",): {"POST": "sendMail"},
    ("messages",): {"POST": "createMessage", "GET": "listMessages"},
    ("mailfolders", "*", "messages"): {"GET": "listMessages"},
    ("messages", "*"): {"GET": "getMessage", "PATCH": "updateMessage", "DELETE": "deleteMessage"},
    ("messages", "*", "send"): {"POST": "send"},
    ("messages", "*", "attachments"): {"GET": "listAttachments", "POST": "addAttachment"},
    ("messages", "*", "attachments", "createuploadsession"): {"POST": "createUploadSession"},
}


def route(method: str, rest: list[str]) -> tuple[Operation, str | None, str | None]:
    """``(operation, mailbox, message id)`` of a path below ``/v1.0``."""
    if len(rest) < 2 or rest[0].lower() != "users":
        return "unknown", None, None
    mailbox, tail = rest[1].lower(), [s.lower() for s in rest[2:]]
    # the segment after "messages" is a message id, after "mailFolders" a folder's
    message_id = rest[3] if len(rest) > 3 and tail[0] == "messages" else None
    shape = tuple(
        "*" if i == 1 and tail[0] in ("messages", "mailfolders") else p for i, p in enumerate(tail)
    )
    return ROUTES.get(shape, {}).get(method, "unknown"), mailbox, message_id


def _segments(raw_path: str) -> list[str]:
    path = raw_path.split("?", 1)[0]
    return [urllib.parse.unquote(s) for s in path.split("/") if s]


class GraphStandIn(FaultScripting, StandInServer[Fault]):
    """The Graph stand-in. Construct, then ``async with`` / ``start_in_thread()`` / ``run_cli()``.

    Public state: ``requests``, ``delivered``, ``max_in_flight``, ``in_flight`` (per mailbox),
    ``drafts`` (the mailbox items, by any id they were given), ``upload_sessions``, ``audiences``
    (a set, may be changed while running). Knobs are attributes too: ``latency_seconds``,
    ``concurrency_limit`` (None: unlimited), ``throttle_retry_after``, ``max_request_bytes``,
    ``min_upload_session_bytes``, ``upload_chunk_multiple`` (None: any),
    ``max_upload_chunk_bytes``, ``max_message_bytes``, ``upload_session_ttl_seconds``,
    ``reject_authorization_on_upload``, ``mailboxes`` (None: every mailbox exists; else others
    are 404 ``ErrorInvalidUser``), ``send_as`` (None: any ``from``; else mailbox -> addresses it
    may send as, others 403 ``ErrorSendAsDenied``), ``mailbox_rate_limit`` (``(n, seconds)``),
    ``submit_lag_seconds`` (a sent draft still reads as a draft this long) and
    ``transit_seconds`` (then it is found nowhere this long, before Sent Items),
    ``random_faults`` (:class:`standins.graph.faults.RandomFaults`, None: none).
    ``required_roles``: the permission each operation needs in the token
    (:data:`standins.graph.auth.REQUIRED_ROLES`). Like Graph, it accepts tokens for Graph's own
    audience, whatever URL it is reached at (a client sets MAILGW_GRAPH_SCOPE for another).
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        port_fallback: bool = False,
        latency_seconds: float = 0.0,
        token_verifier: TokenVerifier | None = None,
        audiences: Iterable[str] = GRAPH_AUDIENCES,
        signing_key: bytes = DEFAULT_SIGNING_KEY,
        concurrency_limit: int | None = 4,
        throttle_retry_after: int = 1,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        min_upload_session_bytes: int = MIN_UPLOAD_SESSION_BYTES,
        upload_chunk_multiple: int | None = UPLOAD_CHUNK_MULTIPLE,
        max_upload_chunk_bytes: int = MAX_UPLOAD_CHUNK_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        upload_session_ttl_seconds: float = 900.0,
        reject_authorization_on_upload: bool = False,
        mailboxes: Collection[str] | None = None,
        send_as: Mapping[str, Collection[str]] | None = None,
        mailbox_rate_limit: tuple[int, float] | None = None,
        submit_lag_seconds: float = 0.0,
        transit_seconds: float = 0.0,
        random_faults: RandomFaults | None = None,
    ) -> None:
        super().__init__(host=host, port=port, port_fallback=port_fallback)
        self.submit_lag_seconds = submit_lag_seconds
        self.transit_seconds = transit_seconds
        self.random_faults = random_faults
        self.latency_seconds = latency_seconds
        self.audiences: set[str] = set(audiences)
        self.signing_key = signing_key
        self.token_verifier: TokenVerifier = token_verifier or self._verify_standin_token
        self.concurrency_limit = concurrency_limit
        self.throttle_retry_after = throttle_retry_after
        self.max_request_bytes = max_request_bytes
        self.min_upload_session_bytes = min_upload_session_bytes
        self.upload_chunk_multiple = upload_chunk_multiple
        self.max_upload_chunk_bytes = max_upload_chunk_bytes
        self.max_message_bytes = max_message_bytes
        self.upload_session_ttl_seconds = upload_session_ttl_seconds
        self.reject_authorization_on_upload = reject_authorization_on_upload
        self.mailboxes = None if mailboxes is None else {m.lower() for m in mailboxes}
        self.send_as = grants(send_as)
        self.mailbox_rate_limit = mailbox_rate_limit
        #: operation -> application permissions that allow it (see standins.graph.auth)
        self.required_roles: dict[str, frozenset[str]] = dict(REQUIRED_ROLES)

        self.requests: list[Recorded] = []
        self.delivered: list[DeliveredMessage] = []
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.drafts = MailStore()
        self._rate_windows: dict[str, deque[float]] = {}

        self.submission = Submission(self)
        self.messages = Drafts(self)
        self.uploads = Uploads(self)
        self.folders = Folders(self)
        mail = SendMail(self)
        self._handlers: dict[Operation, Handler] = {
            "sendMail": mail.send_mail,
            "createMessage": self.messages.create,
            "listMessages": self.folders.list_messages,
            "getMessage": self.messages.get,
            "updateMessage": self.messages.update,
            "deleteMessage": self.messages.delete,
            "send": self.messages.send,
            "listAttachments": self.messages.list_attachments,
            "addAttachment": self.messages.add_attachment,
            "createUploadSession": self.uploads.create_session,
        }

    # --- addresses ----------------------------------------------------------------------------
    @property
    def graph_url(self) -> str:
        """``http://127.0.0.1:PORT/v1.0``: the client's base URL (no trailing slash)."""
        return f"{self.url}/v1.0"

    def ready_info(self) -> dict[str, Any]:
        return {"url": self.url, "graphUrl": self.graph_url}

    @property
    def upload_sessions(self) -> dict[str, UploadSession]:
        return self.uploads.sessions

    # --- admin (see standins.admin) -----------------------------------------------------------
    def recordings(self) -> Mapping[str, list[Any]]:
        return {"delivered": self.delivered, "requests": self.requests}

    def stats(self) -> dict[str, Any]:
        return {
            "maxInFlight": self.max_in_flight,
            "inFlight": self.in_flight,
            "delivered": len(self.delivered),
            "requests": len(self.requests),
            "pendingFaults": self.pending_fault_count(),
            "randomFaults": self.random_faults.drawn if self.random_faults else {},
        }

    def reset(self) -> None:
        """Forget requests, deliveries, drafts, sessions, faults and concurrency peaks."""
        super().reset()
        self.submission.cancel_pending()
        self.drafts.clear()
        self.upload_sessions.clear()
        self.max_in_flight.clear()
        self._rate_windows.clear()

    def configure_json(self, config: Mapping[str, Any]) -> None:
        """``latencySeconds``, ``concurrencyLimit`` (null: unlimited), ``audiences``,
        ``submitLagSeconds``, ``transitSeconds``, ``completeSubmissions`` (true: every draft
        being submitted is in Sent Items now), ``randomFaults`` (null: none; else
        :meth:`RandomFaults.from_json`)."""
        if "latencySeconds" in config:
            self.latency_seconds = float(config["latencySeconds"])
        if "submitLagSeconds" in config:
            self.submit_lag_seconds = float(config["submitLagSeconds"])
        if "transitSeconds" in config:
            self.transit_seconds = float(config["transitSeconds"])
        if config.get("completeSubmissions"):
            self.submission.complete_pending()
        if "randomFaults" in config:
            chaos = config["randomFaults"]
            self.random_faults = None if chaos is None else RandomFaults.from_json(chaos)
        if "concurrencyLimit" in config:
            limit = config["concurrencyLimit"]
            self.concurrency_limit = None if limit is None else int(limit)
        if "audiences" in config:
            self.audiences = set(config["audiences"])

    # --- queries ------------------------------------------------------------------------------
    def deliveries_for(self, mailbox: str) -> list[DeliveredMessage]:
        return [d for d in self.delivered if d.mailbox == mailbox.lower()]

    def requests_for(
        self, operation: str | None = None, mailbox: str | None = None
    ) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (operation is None or r.operation == operation)
            and (mailbox is None or r.mailbox == mailbox.lower())
        ]

    async def wait_delivered(self, count: int = 1, timeout: float = 10.0) -> list[DeliveredMessage]:
        """Wait until at least ``count`` messages were delivered; return them all."""
        return await wait_recorded_async(self.delivered, count, timeout, "delivered message(s)")

    def wait_delivered_sync(self, count: int = 1, timeout: float = 10.0) -> list[DeliveredMessage]:
        return wait_recorded(self.delivered, count, timeout, "delivered message(s)")

    # --- server -------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = self.new_app(client_max_size=max(self.max_upload_chunk_bytes, 200 * 2**20))
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _on_close(self) -> None:
        self.submission.cancel_pending()

    def _verify_standin_token(self, token: str) -> TokenClaims:
        return standin_token_verifier(self.audiences, self.signing_key)(token)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = _segments(request.raw_path)
        if is_upload_path(segments):
            return await self.uploads.serve(request, segments)
        if segments[:1] != ["v1.0"]:
            return web.Response(status=404, text="not a Graph v1.0 path\n")
        rest = segments[1:]
        operation, mailbox, message_id = route(request.method, rest)
        rec = await self.record(request, operation, mailbox, message_id)
        return await self.answer(rec, lambda: self._graph_call(request, rec, rest))

    async def record(
        self, request: web.Request, operation: Operation, mailbox: str | None, mid: str | None
    ) -> Recorded:
        """Read the whole request and append it to :attr:`requests`."""
        body = await request.read()
        parsed: Any = None
        if body and request.content_type == "application/json":
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            json=parsed,
            time=time.monotonic(),
            wall_time=time.time(),
            operation=operation,
            mailbox=mailbox,
            message_id=mid,
        )
        self.requests.append(rec)
        return rec

    async def answer(
        self, rec: Recorded, handle: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """``await handle()``, with a :class:`GraphError` answered as Graph's error JSON; the
        status and the moment of the answer are recorded on ``rec``."""
        try:
            response = await handle()
        except GraphError as exc:
            rec.status, rec.error_code = exc.status, exc.code
            response = error_response(
                exc.status, exc.code, exc.message, rec.header("client-request-id"), **exc.headers
            )
        rec.status = rec.status or response.status
        rec.responded = time.monotonic()
        return response

    async def _graph_call(
        self, request: web.Request, rec: Recorded, rest: list[str]
    ) -> web.StreamResponse:
        rec.token = authenticate(rec, self.token_verifier)
        if rest[:1] == ["me"]:
            raise GraphError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        mailbox = rec.mailbox
        if rec.operation == "unknown" or mailbox is None:
            raise GraphError(
                400, "BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'."
            )
        authorize(rec.token, rec.operation, self.required_roles)
        if self.mailboxes is not None and mailbox not in self.mailboxes:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{mailbox}' is invalid.")
        self._check_rate(mailbox)
        in_flight = self.in_flight.get(mailbox, 0) + 1
        self.in_flight[mailbox] = in_flight
        self.max_in_flight[mailbox] = max(self.max_in_flight.get(mailbox, 0), in_flight)
        try:
            if self.concurrency_limit is not None and in_flight > self.concurrency_limit:
                rec.throttled = True
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    ERRORS["ApplicationThrottled"][1],
                    {"Retry-After": str(self.throttle_retry_after)},
                )
            if self.latency_seconds > 0:
                await asyncio.sleep(self.latency_seconds)

            async def handle() -> web.StreamResponse:
                return self._handlers[rec.operation](rec, mailbox)

            return await answer_with_faults(
                self.fault_queue, request, rec, handle, self.random_faults
            )
        finally:
            self.in_flight[mailbox] -= 1

    def _check_rate(self, mailbox: str) -> None:
        if self.mailbox_rate_limit is None:
            return
        limit, window = self.mailbox_rate_limit
        now = time.monotonic()
        times = self._rate_windows.setdefault(mailbox, deque())
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            retry = max(1, int(times[0] + window - now + 0.999))
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxRequests limit.",
                {"Retry-After": str(retry)},
            )
        times.append(now)
