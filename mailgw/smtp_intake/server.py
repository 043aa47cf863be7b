"""The SMTP submission server (aiosmtpd): AUTH, the sender policy, then the gateway's intake.

Two listeners share one handler: 587-style (STARTTLS required before anything but EHLO, and so
before AUTH) and 465-style (implicit TLS). TLS 1.2 or newer. Without AUTH nothing is accepted
(``530 5.7.0``): never an open relay. A message is answered ``250 2.0.0 Ok: queued as <id>`` only
once :meth:`mailgw.intake.Intake.submit_mime` has durably queued it; ``<id>`` is the gateway's
message id (status, events, poison handling and replay as for HTTP messages).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailgw.errors import (
    GatewayError,
    IdempotencyKeyReused,
    InvalidRequest,
    MessageTooLarge,
    SenderNotAllowed,
)
from mailgw.intake import Intake
from mailgw.mime import parse_submission
from mailgw.models import MAX_RECIPIENTS, Recipient
from mailgw.settings import SmtpIntakeSettings
from mailgw.smtp_intake.clients import ClientStore, SmtpClient
from mailgw.smtp_intake.limits import LoginThrottle, RateLimiter

log = logging.getLogger("mailgw.smtp_intake")

SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, try again later"
STORAGE_DOWN = "451 4.3.0 Storage unavailable, message not accepted; try again later"
#: aiosmtpd's own replies, with the enhanced status codes (RFC 3463) clients log
_ENHANCED = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this server",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message too big for this server"
    ),
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
}


def server_tls_context(cert_file: str, key_file: str | None = None) -> ssl.SSLContext:
    """The listeners' TLS: the certificate chain and key (PEM), TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class IntakeHandler:
    """What the gateway decides at each SMTP step; shared by every session and listener."""

    intake: Intake
    clients: ClientStore
    limits: SmtpIntakeSettings
    rates: RateLimiter = field(default_factory=RateLimiter)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    sessions: set[IntakeSMTP] = field(default_factory=set)
    closing: bool = False
    _busy: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def max_bytes(self, client: SmtpClient) -> int:
        return client.max_message_bytes or self.limits.max_message_bytes

    # --- AUTH -------------------------------------------------------------------------------------

    async def authenticate(self, session: Session, login: bytes, password: bytes) -> AuthResult:
        """Checked at once; only a failure is answered late (doubling per recent failure of the
        name or the IP), so a stranger guessing a client's password never slows the client."""
        ip = str((session.peer or ("",))[0])
        try:
            name, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            name, secret = "", ""
        if self.closing:
            return AuthResult(success=False, handled=False, message=SHUTDOWN_REPLY)
        try:
            client = await self.clients.authenticate(name, secret) if name else None
        except Exception as exc:
            log.warning("login of %r from %s not checked: storage unavailable (%s)", name, ip, exc)
            return AuthResult(
                success=False, handled=False, message="454 4.7.0 Temporary authentication failure"
            )
        if client is None or not client.allows_ip(ip):
            self.throttle.failed(name, ip)
            why = "address not allowed" if client is not None else "bad credentials"
            log.warning("failed login of %r from %s: %s", name, ip, why)
            await asyncio.sleep(self.throttle.delay(name, ip))  # a deliberate slowdown
            return AuthResult(success=False, handled=False)
        self.throttle.succeeded(name, ip)
        return AuthResult(success=True, auth_data=client)

    async def _current(self, client: SmtpClient) -> SmtpClient | str:
        """The client as the store has it now, or the reply refusing it: a client revoked, or
        whose password or rules changed, since this session logged in gets no further message."""
        try:
            current = await self.clients.get(client.name)
        except Exception as exc:
            log.warning("client %s not checked: storage unavailable (%s)", client.name, exc)
            return STORAGE_DOWN
        if current is None or current.revoked or current.password_hash != client.password_hash:
            log.warning("client %s: revoked or changed since it logged in", client.name)
            return "535 5.7.8 Authentication credentials invalid: log in again"
        return current

    # --- the transaction --------------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: IntakeSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        client = session.auth_data
        if self.closing:
            return SHUTDOWN_REPLY
        if not isinstance(client, SmtpClient):  # aiosmtpd enforces AUTH first; belt and braces
            return "530 5.7.0 Authentication required"
        current = await self._current(client)
        if isinstance(current, str):
            return current
        client = session.auth_data = current
        size = next((o[5:] for o in mail_options if o.upper().startswith("SIZE=")), "")
        if size.isdigit() and int(size) > self.max_bytes(client):
            return f"552 5.3.4 Message too big: the limit is {self.max_bytes(client)} bytes"
        if not address:
            return "550 5.7.1 Sender not allowed: a null sender cannot submit mail"
        for policy in (self.intake.policy, client.policy()):
            if not policy.allows(address):
                log.warning("client %s: MAIL FROM %s refused", client.name, address)
                return f"550 5.7.1 Sender not allowed: this client may not send as <{address}>"
        per_minute = client.per_minute or self.limits.per_minute
        if not self.rates.allow(client.name, per_minute):
            return f"451 4.7.1 Rate limit of {per_minute} messages per minute reached; try later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: IntakeSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
        try:
            Recipient.model_validate(address)
        except ValueError:
            return "553 5.1.3 Recipient address syntax is not valid"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: IntakeSMTP, session: Session, envelope: Envelope) -> str:
        client = session.auth_data
        if not isinstance(client, SmtpClient):
            return "530 5.7.0 Authentication required"
        self._busy += 1
        self._idle.clear()
        try:
            return await self._queue(client, envelope)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def _queue(self, client: SmtpClient, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        try:
            submission = parse_submission(
                data,
                envelope.mail_from or "",
                envelope.rcpt_tos,
                max_bytes=self.max_bytes(client),
                utf8=bool(envelope.smtp_utf8),
                client=client.name,
            )
            result = await self.intake.submit_mime(submission, allowed=client.policy())
        except MessageTooLarge as exc:
            return f"552 5.3.4 Message too big: {_one_line(exc.detail)}"
        except SenderNotAllowed as exc:
            log.warning("client %s: message refused: %s", client.name, exc.detail)
            return f"550 5.7.1 Sender not allowed: {_one_line(exc.detail)}"
        except InvalidRequest as exc:
            return f"550 5.6.0 Message refused: {_one_line(exc.detail)}"
        except IdempotencyKeyReused:
            log.warning("client %s: a different message reused a Message-ID", client.name)
            return (
                "554 5.6.0 Message refused: another message with this Message-ID was already "
                "queued by this client; give each message its own Message-ID"
            )
        except GatewayError as exc:  # QueueUnavailable and the like: nothing was accepted
            log.warning("client %s: message not queued: %s", client.name, exc.detail)
            return STORAGE_DOWN
        except Exception:
            log.exception("client %s: message not queued", client.name)
            return STORAGE_DOWN
        log.info("client %s: queued %s", client.name, result.id)
        return f"250 2.0.0 Ok: queued as {result.id}"

    async def drain(self, grace: float) -> None:
        """Wait (up to ``grace`` seconds) for messages being queued right now."""
        if self._busy:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                log.warning("%d message(s) still being queued at shutdown", self._busy)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


class IntakeSMTP(SMTP):
    """aiosmtpd's protocol with asynchronous credential checks (argon2 and a table read must
    not block the loop) and the gateway's replies."""

    def __init__(self, handler: IntakeHandler, *, implicit_tls: bool, **options: Any) -> None:
        with warnings.catch_warnings():
            # On the implicit-TLS listener the whole session is TLS already: aiosmtpd's warning
            # about AUTH without (START)TLS does not apply (and _check verifies it).
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            super().__init__(
                handler,
                auth_required=True,
                auth_require_tls=not implicit_tls,
                authenticator=self._capture,
                enable_SMTPUTF8=True,
                decode_data=False,
                **options,
            )
        self.intake_handler = handler
        self.implicit_tls = implicit_tls
        self._captured: LoginPassword | None = None

    def _capture(self, *args: Any) -> AuthResult:
        """aiosmtpd checks credentials synchronously; keep them for :meth:`_check` instead."""
        auth_data = args[-1]
        self._captured = auth_data if isinstance(auth_data, LoginPassword) else None
        return AuthResult(success=False, handled=False)

    async def _check(self, parsed: Awaitable[AuthResult]) -> AuthResult:
        self._captured = None
        result = await parsed
        captured, self._captured = self._captured, None
        if captured is None:
            return result  # the exchange itself failed (and was answered)
        if self.implicit_tls and self.transport.get_extra_info("ssl_object") is None:
            return AuthResult(success=False, handled=False, message="538 5.7.11 TLS required")
        assert self.session is not None
        return await self.intake_handler.authenticate(
            self.session, captured.login, captured.password
        )

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(super().auth_LOGIN(_, args))

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _ENHANCED.get(status, status)
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.intake_handler.sessions.add(self)
        if self.intake_handler.closing:
            _say_goodbye(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.intake_handler.sessions.discard(self)
        super().connection_lost(error)


def _say_goodbye(transport: asyncio.BaseTransport) -> None:
    """``421`` and close: the client keeps its message and tries again later."""
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.write(f"{SHUTDOWN_REPLY}\r\n".encode())
    transport.close()


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    #: True: 465-style (TLS from the first byte); False: 587-style (STARTTLS before AUTH)
    implicit_tls: bool


class SmtpIntakeServer:
    """Both listeners; :meth:`stop` answers ``421`` to every open session once the messages
    being queued are queued."""

    def __init__(
        self,
        handler: IntakeHandler,
        tls: ssl.SSLContext,
        listeners: list[Listener],
        *,
        hostname: str | None = None,
        data_size_limit: int | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.listeners = listeners
        self.hostname = hostname
        self.data_size_limit = data_size_limit or handler.limits.max_message_bytes
        self._servers: list[asyncio.Server] = []
        #: the bound (host, port) of each listener, in order (port 0 picks a free one)
        self.addresses: list[tuple[str, int]] = []

    def _factory(self, listener: Listener) -> Callable[[], IntakeSMTP]:
        def make() -> IntakeSMTP:
            return IntakeSMTP(
                self.handler,
                implicit_tls=listener.implicit_tls,
                tls_context=None if listener.implicit_tls else self.tls,
                require_starttls=not listener.implicit_tls,
                hostname=self.hostname,
                data_size_limit=self.data_size_limit,
                timeout=300,
                loop=asyncio.get_running_loop(),
            )

        return make

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            server = await loop.create_server(
                self._factory(listener),
                host=listener.host,
                port=listener.port,
                ssl=self.tls if listener.implicit_tls else None,
            )
            self._servers.append(server)
            sockname = server.sockets[0].getsockname()
            self.addresses.append((str(sockname[0]), int(sockname[1])))
        return self.addresses

    async def stop(self, grace: float = 30.0) -> None:
        """Stop listening; let messages being queued finish; then ``421`` to every session."""
        self.handler.closing = True
        for server in self._servers:
            server.close()
        await self.handler.drain(grace)
        for session in list(self.handler.sessions):
            if session.transport is not None:
                _say_goodbye(session.transport)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
