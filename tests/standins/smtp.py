"""Stand-in for Exchange Online's SMTP endpoints: a real SMTP server (aiosmtpd) on 127.0.0.1.

Two modes, as the gateway's SMTP transports meet them:

``submission`` – like ``smtp.office365.com:587`` (SMTP AUTH client submission):
    STARTTLS is offered and required before anything but EHLO/NOOP/QUIT (``530 5.7.0 Must issue
    a STARTTLS command first``); TLS 1.2 or newer only (the server's ``SSLContext`` has
    ``minimum_version = TLSv1_2``); AUTH is advertised only after STARTTLS and only as
    ``XOAUTH2``; MAIL before AUTH is ``530 5.7.57 Client not authenticated to send mail``.
``relay`` – like ``<domain>.mail.protection.outlook.com:25`` with a connector:
    STARTTLS offered and required, no AUTH advertised (``AUTH`` is ``504 5.7.4 Unrecognized
    authentication type``), and MAIL FROM outside ``accepted_domains`` is
    ``550 5.7.64 TenantAttribution; Relay Access Denied``.

XOAUTH2 (``AUTH XOAUTH2 <base64>``, and the form without initial response, where the server
sends ``334 `` and the client the blob) carries ``user=<upn>\\x01auth=Bearer <token>\\x01\\x01``.
The token must be one :mod:`standins.identity` issued (:func:`standins.identity.verify_token`,
shared HMAC key), unexpired, for a resource in ``accepted_audiences`` (default
``https://outlook.office365.com``, what the scope ``https://outlook.office365.com/.default``
yields); the user must be in ``allowed_users`` unless that is ``None``. Any failure is
``535 5.7.3 Authentication unsuccessful``, as Exchange answers; success is
``235 2.7.0 Authentication successful``. The reason is kept in :attr:`SmtpStandIn.auth_attempts`.
``AUTH LOGIN`` is advertised too, as smtp.office365.com does (``250-AUTH LOGIN XOAUTH2``), and
always fails after the username and password prompts: ``535 5.7.139 Authentication
unsuccessful, basic authentication is disabled.``

Replies follow Exchange: ``250 2.1.0 Sender OK``, ``250 2.1.5 Recipient OK``, and for DATA
``250 2.6.0 <message-id> [InternalId=n, Hostname=...] Queued mail for delivery``. EHLO advertises
``SIZE 157286400`` (``max_message_size``: 150 MiB, what smtp.office365.com advertises; a
mailbox's own limit is often lower), 8BITMIME, SMTPUTF8 and ENHANCEDSTATUSCODES. A message over
the limit, announced with ``MAIL FROM ... SIZE=`` or found while reading DATA, gets
``552 5.3.4 Message size exceeds fixed maximum message size``.

Recording: :attr:`SmtpStandIn.received` (:class:`Received`: envelope, the DATA bytes exactly as
they arrived after dot-unstuffing, authenticated user, TLS version, connection id),
:attr:`SmtpStandIn.connections` (:class:`SmtpConnection`, one per TCP connection; several
messages over one connection stay one entry), :attr:`SmtpStandIn.max_concurrent_by_user` (peak
number of open connections authenticated as each user) and :attr:`SmtpStandIn.rejections`.

Limits and faults:

- ``max_connections_per_user`` (default 3, Exchange Online's concurrent SMTP AUTH connections per
  mailbox): a connection authenticated as a user who already has that many *earlier*
  authenticated connections open is answered ``432 4.3.2 STOREDRV.ClientSubmit; sender thread
  limit exceeded`` at ``connection_limit_stage`` (default ``data``: Exchange sends it as the reply
  to the message content, so clients see it as a DATA error). ``None`` disables the limit.
- Scripted faults, FIFO, each optionally only for one authenticated user and/or one MAIL FROM:
  :meth:`SmtpStandIn.fail_next` (any code/text at ``auth`` | ``mail`` | ``rcpt`` | ``data``),
  :meth:`SmtpStandIn.fail_with` (a canned :class:`Exchange` reply at its usual stage), and
  :meth:`SmtpStandIn.drop_after_data` (the message is accepted and recorded, then the connection
  is cut before the ``250`` reply: the client cannot know whether it was sent). A 421 reply
  closes the connection after it is sent, as Exchange does. The ``data`` stage is the reply to
  the message content (after ``.``), not to the ``DATA`` command.
- :meth:`SmtpStandIn.hold_data` holds the reply to the next messages' content until the test
  releases a :class:`~standins.faults.Gate`: how a test sees connections in use at once.

Usage: ``async with SmtpStandIn(mode="submission") as smtp`` in the test's loop;
``SmtpStandIn().start_in_thread()`` / ``stop()``; or
``python -m standins.smtp --mode submission --port N``, which prints
``READY {"host", "port", "caFile", "adminUrl", "mode", "env"}`` (``env``: the gateway settings
that point its transport here, :meth:`SmtpStandIn.gateway_env`).

Admin API (:mod:`standins.admin`, on another loopback port, :attr:`SmtpStandIn.admin_url`;
:class:`RemoteSmtpStandIn` is its client). ``GET /_standin/received`` lists the accepted messages,
oldest first, each::

    {"receivedAt": "2026-05-04T09:30:12.123456Z",   # when the DATA was accepted (UTC, ISO 8601)
     "mailbox": "noreply@contoso.com" | null,        # the AUTH user (null: relay, no AUTH)
     "from": "noreply@contoso.com",                  # the envelope sender (MAIL FROM)
     "size": 1234,                                   # bytes of the message
     "dataBase64": "...",                            # the raw MIME message, as it arrived
     "mailFrom": "...", "rcptTos": ["..."], "mailOptions": ["SIZE=1234", ...],
     "authUser": ... | null, "tls": true, "tlsVersion": "TLSv1.3", "connectionId": 1,
     "internalId": 1, "reply": "250 2.6.0 ..." | null, "dropped": false,
     "time": <monotonic seconds>, "wallTime": <epoch seconds>}

and ``/connections``, ``/rejections``, ``/auth`` (attempts), ``/stats``. ``POST /_standin/faults``
takes :meth:`SmtpFault.from_json`'s form, ``POST /_standin/config`` the knobs of
:meth:`SmtpStandIn.configure_json`.

Client side (aiosmtplib 5.x has XOAUTH2 built in)::

    smtp = aiosmtplib.SMTP(hostname=s.host, port=s.port, start_tls=True, cert_bundle=s.ca_file,
                           username=upn, oauth_token_generator=get_token)
    await smtp.connect()   # EHLO, STARTTLS, EHLO, AUTH XOAUTH2 <base64>

``cert_bundle`` builds ``ssl.create_default_context()``, whose minimum is already TLS 1.2 on
Python 3.10+; pass ``tls_context=`` to pin it explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import email.message
import email.parser
import email.policy
import itertools
import shutil
import ssl
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr, ClassVar, Literal, NamedTuple, get_args

from aiohttp import web
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException

from standins import (
    LOOPBACK,
    RemoteAdmin,
    StandInServer,
    _bind,
    grants,
    wait_recorded,
    wait_recorded_async,
)
from standins.admin import camel_json, utc_iso
from standins.cli import signing_key, stand_in_parser
from standins.faults import FaultQueue, Gate, ScriptedFault
from standins.identity import DEFAULT_SIGNING_KEY, InvalidToken, verify_token

__all__ = [
    "CANNED_REPLIES",
    "EXCHANGE_MAX_MESSAGE_SIZE",
    "OUTLOOK_RESOURCE",
    "Exchange",
    "Mode",
    "Received",
    "RemoteSmtpStandIn",
    "Reply",
    "SmtpAuthAttempt",
    "SmtpConnection",
    "SmtpFault",
    "SmtpRejection",
    "SmtpStandIn",
    "Stage",
    "decode_xoauth2",
    "xoauth2_initial_response",
]

#: the resource of ``https://outlook.office365.com/.default`` (SMTP.SendAsApp / SMTP.Send)
OUTLOOK_RESOURCE = "https://outlook.office365.com"
#: what smtp.office365.com advertises in EHLO ``SIZE`` (150 MiB)
EXCHANGE_MAX_MESSAGE_SIZE = 157_286_400

Mode = Literal["submission", "relay"]
Stage = Literal["auth", "mail", "rcpt", "data"]
STAGES: tuple[Stage, ...] = get_args(Stage)


class Reply(NamedTuple):
    """An SMTP reply: ``code``, ``text`` (starting with the enhanced status code) and the
    ``stage`` at which Exchange sends it."""

    code: int
    text: str
    stage: Stage

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def enhanced_code(self) -> str:
        """``5.7.3`` from ``535 5.7.3 Authentication unsuccessful``."""
        return self.text.split(" ", 1)[0]


class Exchange:
    """Exchange Online's replies, at the stage where Exchange sends them.

    AUTH failures come as the reply to ``AUTH``; send-as and store-driver (``STOREDRV``) failures
    as the reply to the message content (clients report them as DATA errors); sender policy
    failures as the reply to ``MAIL FROM``.
    """

    AUTH_UNSUCCESSFUL: ClassVar[Reply] = Reply(535, "5.7.3 Authentication unsuccessful", "auth")
    SMTP_AUTH_DISABLED: ClassVar[Reply] = Reply(
        535,
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant",
        "auth",
    )
    BASIC_AUTH_DISABLED: ClassVar[Reply] = Reply(
        535, "5.7.139 Authentication unsuccessful, basic authentication is disabled.", "auth"
    )
    MESSAGE_TOO_LARGE: ClassVar[Reply] = Reply(
        552, "5.3.4 Message size exceeds fixed maximum message size", "data"
    )
    BASIC_AUTH_NOT_SUPPORTED: ClassVar[Reply] = Reply(
        550, "5.7.30 Basic authentication is not supported for Client Submission", "mail"
    )
    NOT_AUTHENTICATED: ClassVar[Reply] = Reply(
        530, "5.7.57 Client not authenticated to send mail", "mail"
    )
    RELAY_ACCESS_DENIED: ClassVar[Reply] = Reply(
        550, "5.7.64 TenantAttribution; Relay Access Denied", "mail"
    )
    TEMPORARY_SERVER_ERROR: ClassVar[Reply] = Reply(
        421, "4.7.0 Temporary server error. Please try again later", "mail"
    )
    SEND_AS_DENIED: ClassVar[Reply] = Reply(
        550, "5.7.60 SMTP; Client does not have permissions to send as this sender", "data"
    )
    SENDER_THREAD_LIMIT: ClassVar[Reply] = Reply(
        432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "data"
    )
    UNAUTHENTICATED_ATTRIBUTION: ClassVar[Reply] = Reply(
        451,
        "4.4.4 Mail received as unauthenticated, incoming to a recipient domain configured in "
        "a hosted tenant which has no mail-enabled subscriptions",
        "rcpt",
    )
    MAILBOX_FULL: ClassVar[Reply] = Reply(
        554, "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException", "data"
    )
    SUBMISSION_QUOTA_EXCEEDED: ClassVar[Reply] = Reply(
        554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", "data"
    )
    #: a rate limit's reply (Exchange's MessageRateLimit: messages per minute)
    MESSAGE_RATE_EXCEEDED: ClassVar[Reply] = Reply(
        421,
        "4.4.2 Message submission rate for this client has exceeded the configured limit",
        "data",
    )
    #: send-as refused by the store rather than by the SMTP front end: the same 5.2.0 as the
    #: sending limit, told apart only by the exception's name
    SEND_AS_DENIED_STOREDRV: ClassVar[Reply] = Reply(
        554,
        "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; "
        "Failed to process message due to a permanent exception with message Cannot submit "
        "message.",
        "data",
    )


#: the canned replies by name (``POST /_standin/faults {"reply": "SEND_AS_DENIED"}``)
CANNED_REPLIES: dict[str, Reply] = {
    name: value for name, value in vars(Exchange).items() if isinstance(value, Reply)
}

AUTH_OK = "235 2.7.0 Authentication successful"
MAIL_OK = "250 2.1.0 Sender OK"
RCPT_OK = "250 2.1.5 Recipient OK"
#: aiosmtpd's replies without enhanced status codes, and what Exchange says instead
_REWRITES = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: message size exceeds fixed maximum message size": str(Exchange.MESSAGE_TOO_LARGE),
    "552 Error: Too much mail data": str(Exchange.MESSAGE_TOO_LARGE),
}


# --- records ----------------------------------------------------------------------------------
@dataclass
class SmtpConnection:
    """One TCP connection. ``time``/``closed_at`` are ``time.monotonic()``."""

    id: int
    peer: str
    time: float
    wall_time: float
    closed_at: float | None = None
    tls: bool = False
    tls_version: str | None = None
    tls_error: str | None = None
    #: subject names (CN and DNS SANs) of the client certificate presented in STARTTLS, if any
    client_cert_names: tuple[str, ...] = ()
    auth_user: str | None = None
    auth_seq: int | None = None
    messages: int = 0

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def to_json(self) -> dict[str, Any]:
        return {**camel_json(self, omit=["auth_seq"]), "open": self.open}


@dataclass(frozen=True)
class Received:
    """A message the server accepted (or accepted and then dropped the connection on).

    ``data`` is the content exactly as it arrived, minus the SMTP transparency dots (RFC 5321
    4.5.2) and the final ``.\\r\\n``: line endings are whatever the client sent (CRLF for any
    conforming client). ``reply`` is the ``250`` line sent, ``None`` when ``dropped``.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    auth_user: str | None
    tls: bool
    tls_version: str | None
    connection_id: int
    time: float
    wall_time: float
    mail_options: tuple[str, ...] = ()
    internal_id: int = 0
    reply: str | None = None
    dropped: bool = False

    def message(self) -> email.message.EmailMessage:
        parser = email.parser.BytesParser(policy=email.policy.default)
        return parser.parsebytes(self.data)

    def to_json(self) -> dict[str, Any]:
        return {
            **camel_json(self, omit=["data"]),
            "receivedAt": utc_iso(self.wall_time),
            "mailbox": self.auth_user,
            "from": self.mail_from,
            "size": len(self.data),
            "dataBase64": base64.b64encode(self.data).decode(),
        }


@dataclass(frozen=True)
class SmtpRejection:
    """A failure reply the server sent (injected, limit or policy)."""

    stage: Stage
    code: int
    text: str
    connection_id: int
    auth_user: str | None
    mail_from: str | None
    cause: Literal["fault", "limit", "policy", "auth"]
    time: float

    def to_json(self) -> dict[str, Any]:
        return camel_json(self)


@dataclass(frozen=True)
class SmtpAuthAttempt:
    connection_id: int
    mechanism: str
    user: str | None
    ok: bool
    reason: str
    client_id: str | None
    time: float

    def to_json(self) -> dict[str, Any]:
        return camel_json(self)


@dataclass
class SmtpFault(ScriptedFault):
    """Answer ``remaining`` matching commands at ``stage`` with ``code text``.

    ``user`` / ``mail_from`` restrict the fault to one authenticated user (for ``auth``: the
    user named in the XOAUTH2 blob) or one envelope sender (case-insensitive). ``close``
    closes the connection after the reply (default: only for 421). ``drop`` sends no reply and
    cuts the connection instead; at ``data`` the message is recorded first.
    """

    stage: Stage
    code: int = 0
    text: str = ""
    user: str | None = None
    mail_from: str | None = None
    close: bool | None = None
    drop: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {self.stage!r}")
        if not self.drop and not 400 <= self.code <= 599:
            raise ValueError(f"a fault replies with a 4xx or 5xx code, not {self.code}")

    @property
    def closes(self) -> bool:
        return self.code == 421 if self.close is None else self.close

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    def matches(self, stage: Stage, user: str | None, mail_from: str | None) -> bool:
        if stage != self.stage:
            return False
        if self.user is not None and (user or "").lower() != self.user.lower():
            return False
        return self.mail_from is None or (mail_from or "").lower() == self.mail_from.lower()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SmtpFault:
        reply = CANNED_REPLIES[data["reply"]] if data.get("reply") else None
        stage = data.get("stage") or (reply.stage if reply else None)
        if stage is None:
            raise ValueError("a fault needs a stage (or a canned reply)")
        return cls(
            stage=stage,
            code=int(data.get("code") or (reply.code if reply else 0)),
            text=str(data.get("text") or (reply.text if reply else "")),
            remaining=int(data.get("n", 1)),
            user=data.get("user"),
            mail_from=data.get("mailFrom"),
            close=data.get("close"),
            drop=bool(data.get("drop", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "code": self.code,
            "text": self.text,
            "n": self.remaining,
            "user": self.user,
            "mailFrom": self.mail_from,
            "close": self.close,
            "drop": self.drop,
        }


# --- XOAUTH2 ----------------------------------------------------------------------------------
@dataclass(kw_only=True)
class _DataHold(ScriptedFault):
    gate: Gate
    user: str | None


def xoauth2_initial_response(user: str, token: str) -> str:
    """``base64("user=" + user + "\\x01auth=Bearer " + token + "\\x01\\x01")``."""
    raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode()).decode()


def decode_xoauth2(blob: bytes) -> tuple[str, str]:
    """``(user, token)`` from a decoded XOAUTH2 blob; ``ValueError`` when malformed."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("XOAUTH2 blob is not UTF-8") from exc
    if not text.endswith("\x01\x01"):
        raise ValueError("XOAUTH2 blob does not end with ^A^A")
    fields: dict[str, str] = {}
    for part in text[:-2].split("\x01"):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"XOAUTH2 field without '=': {key!r}")
        fields[key.strip().lower()] = value
    user = fields.get("user", "")
    scheme, _, token = fields.get("auth", "").partition(" ")
    if not user:
        raise ValueError("XOAUTH2 blob has no user")
    if scheme.lower() != "bearer" or not token.strip():
        raise ValueError("XOAUTH2 blob has no 'auth=Bearer <token>'")
    return user, token.strip()


def _normalise_audience(value: str) -> str:
    value = value.strip()
    if value.endswith("/.default"):
        value = value[: -len("/.default")]
    return value.rstrip("/").lower()


# --- the SMTP protocol ------------------------------------------------------------------------
class _Session(Session):
    """aiosmtpd's session without the deprecation warning it logs on every successful AUTH
    (it sets ``login_data`` itself)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _StandInSMTP(SMTP):
    """aiosmtpd's SMTP session with XOAUTH2, Exchange's wording and the stand-in's bookkeeping."""

    #: AUTH lines carry bearer tokens (real Entra tokens are 1.5-3 KB). (No attribute of this
    #: class may start with ``auth_`` unless it is a mechanism: aiosmtpd collects those.)
    max_auth_line = 16_384

    def __init__(self, standin: SmtpStandIn, loop: asyncio.AbstractEventLoop) -> None:
        submission = standin.mode == "submission"
        super().__init__(
            _Handler(standin),
            data_size_limit=standin.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=standin.hostname,
            ident="Microsoft ESMTP MAIL Service ready (mailgw stand-in)",
            tls_context=standin.tls_context,
            require_starttls=True,
            auth_required=submission,
            auth_require_tls=True,
            auth_exclude_mechanism=["PLAIN"] + ([] if submission else ["LOGIN", "XOAUTH2"]),
            loop=loop,
        )
        self.standin = standin
        # aiosmtpd keeps command size limits in a class-level dict; give this session its own
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"AUTH": self.max_auth_line}
        )
        # aiosmtpd's StreamReader refuses any line longer than ``line_length_limit`` (1001)
        # before it looks at the command; let long AUTH lines through to the per-command check
        # (DATA lines are still held to 1001 by aiosmtpd's own check).
        reader = getattr(self, "_stream_reader", None)
        if reader is not None:
            reader._limit = self.max_auth_line
        self.record: SmtpConnection | None = None
        self._close_after_reply = False
        self._drop_next_reply = False

    def _create_session(self) -> Session:
        return _Session(self.loop)

    # --- connection bookkeeping ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            self.record = self.standin._open_connection(self, peer)
        elif self.record is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            self.record.tls = True
            self.record.tls_version = None if ssl_object is None else ssl_object.version()
            peer_cert = None if ssl_object is None else ssl_object.getpeercert()
            self.record.client_cert_names = _certificate_names(peer_cert or {})

    def connection_lost(self, error: Exception | None) -> None:
        if self.record is not None and self.record.open:
            self.standin._close_connection(self)
        super().connection_lost(error)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            if self.record is not None:
                cause = error.__cause__
                self.record.tls_error = f"{type(cause).__name__}: {cause}" if cause else "TLS"
            return "454 4.7.0 TLS negotiation failed"  # not sent: aiosmtpd closes the transport
        return await super().handle_exception(error)

    # --- replies ------------------------------------------------------------------------------
    async def push(self, status: AnyStr) -> None:
        if self._drop_next_reply:
            self._drop_next_reply = False
            self._close_after_reply = False
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]
            return
        if isinstance(status, str):
            status = _REWRITES.get(status, status)
        await super().push(status)
        if self._close_after_reply:
            self._close_after_reply = False
            if self.transport is not None:
                self.transport.close()

    def after_reply(self, *, close: bool = False, drop: bool = False) -> None:
        """Close the connection after the next reply, or cut it instead of sending it."""
        self._close_after_reply = close
        self._drop_next_reply = drop

    async def check_auth_needed(self, caller_method: str) -> bool:
        assert self.session is not None
        if self._auth_required and not self.session.authenticated:
            reply = Exchange.NOT_AUTHENTICATED
            self.standin._reject(self, reply.stage, reply.code, reply.text, "policy", None)
            await self.push(str(reply))
            return True
        return False

    # --- AUTH ---------------------------------------------------------------------------------
    async def smtp_AUTH(self, arg: str) -> None:
        if self.standin.mode == "relay":
            await self.push("504 5.7.4 Unrecognized authentication type")
            return
        await super().smtp_AUTH(arg)

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        record = self.record
        assert record is not None
        if len(args) == 1:
            challenge = await self.challenge_auth("", encode_to_b64=False)  # sends "334 "
            if challenge is MISSING:  # "*" or not base64: aiosmtpd has answered 501
                return AuthResult(success=False, handled=True)
            blob = challenge
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return self._auth_failed(None, "initial response is not base64", None)
        try:
            user, token = decode_xoauth2(blob)
        except ValueError as exc:
            return self._auth_failed(None, str(exc), None)
        fault = self.standin._take_fault("auth", user, None)
        if fault is not None:
            return self._auth_fault(user, fault)
        try:
            claims = verify_token(token, key=self.standin.signing_key)
        except InvalidToken as exc:
            return self._auth_failed(user, str(exc), None)
        audience = _normalise_audience(claims.resource)
        if audience not in self.standin.accepted_audiences:
            return self._auth_failed(
                user, f"token audience {claims.resource!r} is not accepted", claims.client_id
            )
        allowed = self.standin.allowed_users
        if allowed is not None and user.lower() not in allowed:
            return self._auth_failed(
                user, f"{user} is not a mailbox this client may use", claims.client_id
            )
        if self.standin.connection_limit_stage == "auth" and self.standin._over_limit(user, None):
            reply = Exchange.SENDER_THREAD_LIMIT
            self.standin._record_auth(record, user, False, "connection limit", claims.client_id)
            self.standin._reject(self, "auth", reply.code, reply.text, "limit", None, user=user)
            return AuthResult(success=False, handled=False, message=str(reply))
        self.standin._authenticated(self, user, claims.client_id)
        return AuthResult(success=True, auth_data=user, message=AUTH_OK)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        """Basic authentication: Exchange prompts for both, then refuses."""
        assert self.record is not None
        if len(args) == 1 and await self.challenge_auth("Username:") is MISSING:
            return AuthResult(success=False, handled=True)
        if await self.challenge_auth("Password:") is MISSING:
            return AuthResult(success=False, handled=True)
        reply = Exchange.BASIC_AUTH_DISABLED
        self.standin._record_auth(self.record, None, False, "basic auth", None, "LOGIN")
        self.standin._reject(self, "auth", reply.code, reply.text, "auth", None)
        return AuthResult(success=False, handled=False, message=str(reply))

    def _auth_failed(self, user: str | None, reason: str, client_id: str | None) -> AuthResult:
        assert self.record is not None
        reply = Exchange.AUTH_UNSUCCESSFUL
        self.standin._record_auth(self.record, user, False, reason, client_id)
        self.standin._reject(self, "auth", reply.code, reply.text, "auth", None, user=user)
        return AuthResult(success=False, handled=False, message=str(reply))

    def _auth_fault(self, user: str, fault: SmtpFault) -> AuthResult:
        assert self.record is not None
        self.standin._record_auth(self.record, user, False, f"injected: {fault.line}", None)
        if fault.drop:
            self.after_reply(drop=True)
            return AuthResult(success=False, handled=False, message=AUTH_OK)
        self.standin._reject(self, "auth", fault.code, fault.text, "fault", None, user=user)
        self.after_reply(close=fault.closes)
        return AuthResult(success=False, handled=False, message=fault.line)


class _Handler:
    """aiosmtpd hooks: EHLO keywords, sender policy, faults, limits and recording."""

    def __init__(self, standin: SmtpStandIn) -> None:
        self.standin = standin

    async def handle_EHLO(
        self,
        server: _StandInSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do what aiosmtpd otherwise does
        lines = [r for r in responses if r != "250 HELP"]
        if self.standin.mode == "relay":
            lines = [r for r in lines if not r.startswith("250-AUTH")]
        lines.append("250-ENHANCEDSTATUSCODES")
        # the last line of a multi-line reply has a space after the code
        lines[-1] = "250 " + lines[-1][4:]
        return lines

    def _failure(self, server: _StandInSMTP, stage: Stage, mail_from: str | None) -> str | None:
        """The injected fault, connection limit or policy reply for ``stage``, if any."""
        standin = self.standin
        user = server.record.auth_user if server.record else None
        fault = standin._take_fault(stage, user, mail_from)
        if fault is not None:
            if fault.drop:
                server.after_reply(drop=True)
                return None
            standin._reject(server, stage, fault.code, fault.text, "fault", mail_from)
            server.after_reply(close=fault.closes)
            return fault.line
        if stage == standin.connection_limit_stage and user and standin._over_limit(user, server):
            reply = Exchange.SENDER_THREAD_LIMIT
            standin._reject(server, stage, reply.code, reply.text, "limit", mail_from)
            return str(reply)
        names = server.record.client_cert_names if server.record else ()
        policy = standin._policy(stage, user, mail_from, names)
        if policy is not None:
            standin._reject(server, stage, policy.code, policy.text, "policy", mail_from)
            return str(policy)
        return None

    async def handle_MAIL(
        self,
        server: _StandInSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        failure = self._failure(server, "mail", address)
        if failure is not None:
            return failure
        if server._drop_next_reply:
            return MAIL_OK
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return MAIL_OK

    async def handle_RCPT(
        self,
        server: _StandInSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self._failure(server, "rcpt", envelope.mail_from)
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return RCPT_OK

    async def handle_DATA(self, server: _StandInSMTP, session: Session, envelope: Envelope) -> str:
        user = server.record.auth_user if server.record else None
        hold = self.standin._held_data.take(lambda h: h.user in (None, (user or "").lower()))
        if hold is not None:
            await hold.gate.wait()  # the content is in; the reply waits for the test
        failure = self._failure(server, "data", envelope.mail_from)
        if failure is not None:
            return failure
        received = self.standin._receive(server, envelope, dropped=server._drop_next_reply)
        return received.reply or "250 2.6.0 dropped"


def _certificate_names(peer_cert: Mapping[str, Any]) -> tuple[str, ...]:
    """CN and DNS SANs of ``SSLSocket.getpeercert()``'s dict."""
    common = [
        value for rdn in peer_cert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    dns = [value for kind, value in peer_cert.get("subjectAltName", ()) if kind == "DNS"]
    return tuple(dict.fromkeys([*common, *dns]))


# --- the stand-in -----------------------------------------------------------------------------
class SmtpStandIn(StandInServer[SmtpFault]):
    """Exchange Online's SMTP submission or relay endpoint on loopback (see the module doc).

    ``port`` is the SMTP port (0: any free one); ``admin_port`` the admin HTTP port.
    :attr:`port`, :attr:`host`, :attr:`ca_file` are what a client needs; :attr:`url` and
    :attr:`admin_url` are the admin app's base URL.

    Knobs (plain attributes, changeable while running): ``accepted_audiences``,
    ``accepted_domains`` (relay), ``allowed_users`` (``None``: any), ``send_as`` (authenticated
    user -> other addresses it may send as; ``None``: no send-as check; when set, a MAIL FROM
    that is neither the user nor listed gets ``550 5.7.60`` at end of DATA),
    ``max_connections_per_user`` (``None``: unlimited), ``connection_limit_stage``,
    ``max_message_size`` (EHLO ``SIZE``; new connections only).
    """

    def __init__(
        self,
        *,
        mode: Mode = "submission",
        host: str = LOOPBACK,
        port: int = 0,
        admin_port: int = 0,
        accepted_audiences: Iterable[str] = (OUTLOOK_RESOURCE,),
        accepted_domains: Iterable[str] = (),
        allowed_users: Iterable[str] | None = None,
        send_as: Mapping[str, Collection[str]] | None = None,
        max_connections_per_user: int | None = 3,
        connection_limit_stage: Stage = "data",
        signing_key: bytes = DEFAULT_SIGNING_KEY,
        hostname: str | None = None,
        client_cert_names: Iterable[str] | None = None,
        max_message_size: int = EXCHANGE_MAX_MESSAGE_SIZE,
        admin_port_fallback: bool = False,
    ) -> None:
        if mode not in ("submission", "relay"):
            raise ValueError(f"mode must be 'submission' or 'relay', not {mode!r}")
        super().__init__(host=host, port=admin_port, port_fallback=admin_port_fallback)
        #: EHLO ``SIZE``; bigger messages get ``552 5.3.4`` (read when a connection opens)
        self.max_message_size = max_message_size
        self.mode: Mode = mode
        self._requested_smtp_port = port
        self.accepted_audiences = {_normalise_audience(a) for a in accepted_audiences}
        self.accepted_domains = {d.lower().lstrip("@") for d in accepted_domains}
        self.allowed_users = None if allowed_users is None else {u.lower() for u in allowed_users}
        self.send_as = grants(send_as)
        self.max_connections_per_user = max_connections_per_user
        self.connection_limit_stage: Stage = connection_limit_stage
        #: relay: a certificate-based connector (``TlsSenderCertificateName``). ``None``: the
        #: connector trusts the IP address; else MAIL FROM is ``550 5.7.64`` unless the client
        #: presented a certificate (signed by :attr:`ca_file`'s CA) naming one of these.
        self.client_cert_names = (
            None if client_cert_names is None else {n.lower() for n in client_cert_names}
        )
        self.signing_key = signing_key
        self.hostname = hostname or (
            "smtp.office365.standin.invalid"
            if mode == "submission"
            else "contoso-com.mail.protection.standin.invalid"
        )
        self.received: list[Received] = []
        self.connections: list[SmtpConnection] = []
        self.rejections: list[SmtpRejection] = []
        self.auth_attempts: list[SmtpAuthAttempt] = []
        self.max_concurrent_by_user: dict[str, int] = {}
        self.max_concurrent = 0
        self._held_data: FaultQueue[_DataHold] = FaultQueue()
        self._ids = itertools.count(1)
        self._auth_seq = itertools.count(1)
        self._internal_ids = itertools.count(1)
        self._open: dict[int, _StandInSMTP] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._smtp_server: asyncio.Server | None = None
        self._smtp_port: int | None = None
        self._tls_dir: Path | None = None
        self._ca: Any = None
        self.tls_context: ssl.SSLContext | None = None

    # --- addresses ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The SMTP port."""
        if self._smtp_port is None:
            raise RuntimeError("SmtpStandIn is not started")
        return self._smtp_port

    @property
    def admin_port(self) -> int:
        return self._http_port()

    @property
    def admin_url(self) -> str:
        """The admin app's base URL (also :attr:`url`; what :class:`RemoteSmtpStandIn` takes)."""
        return self.url

    @property
    def ca_file(self) -> str:
        """PEM of the throw-away CA that signed the server certificate (127.0.0.1, localhost)."""
        if self._tls_dir is None:
            raise RuntimeError("SmtpStandIn is not started")
        return str(self._tls_dir / "ca.pem")

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts :attr:`ca_file` and refuses anything below TLS 1.2."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def gateway_env(self) -> dict[str, str]:
        """The gateway settings that point its ``smtp`` / ``relay`` transport here."""
        if self.mode == "relay":
            address = {"MAILGW_RELAY_HOST": self.host, "MAILGW_RELAY_PORT": str(self.port)}
        else:
            address = {"MAILGW_SMTP_HOST": self.host, "MAILGW_SMTP_PORT": str(self.port)}
        transport = "smtp" if self.mode == "submission" else "relay"
        return {"MAILGW_TRANSPORT": transport, **address, "MAILGW_SMTP_CA_FILE": self.ca_file}

    def ready_info(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "caFile": self.ca_file,
            "adminUrl": self.admin_url,
            "mode": self.mode,
            "env": self.gateway_env(),
        }

    # --- lifecycle (the admin app is the base class's server; SMTP is the extra site) ----------
    def build_app(self) -> web.Application:
        return self.new_app()

    async def _start_extra_sites(self, runner: web.AppRunner) -> None:
        self.tls_context = self._make_tls()
        loop = asyncio.get_running_loop()
        sock = _bind(self.host, self._requested_smtp_port)
        try:
            self._smtp_server = await loop.create_server(
                lambda: _StandInSMTP(self, loop), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._smtp_port = int(sock.getsockname()[1])

    def _make_tls(self) -> ssl.SSLContext:
        import trustme

        ca = trustme.CA(organization_name="mailgw stand-in CA")
        self._ca = ca
        cert = ca.issue_cert(LOOPBACK, "localhost", self.hostname)
        self._tls_dir = Path(tempfile.mkdtemp(prefix="standin-smtp-tls-"))
        ca.cert_pem.write_to_path(str(self._tls_dir / "ca.pem"))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # Exchange Online: TLS 1.2+
        cert.configure_cert(context)
        # Like Exchange Online: ask for a client certificate, do not insist on one (the connector
        # decides at MAIL FROM); one that does not chain to the CA fails the handshake.
        context.verify_mode = ssl.CERT_OPTIONAL
        ca.configure_trust(context)
        return context

    def issue_client_cert(self, *names: str, not_after: Any = None) -> str:
        """PEM (private key + certificate) of a client certificate for ``names``, from the CA
        that the stand-in trusts: what ``MAILGW_RELAY_CLIENT_CERT`` holds."""
        if self._ca is None:
            raise RuntimeError("SmtpStandIn is not started")
        issued = self._ca.issue_cert(*names, not_after=not_after)
        pem: str = issued.private_key_pem.bytes().decode()
        return pem + "".join(blob.bytes().decode() for blob in issued.cert_chain_pems)

    async def _on_close(self) -> None:
        server, self._smtp_server = self._smtp_server, None
        if server is not None:
            server.close()
            for protocol in list(self._open.values()):
                if protocol.transport is not None:
                    protocol.transport.abort()  # type: ignore[attr-defined]
            await server.wait_closed()
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._smtp_port = None
        tls_dir, self._tls_dir = self._tls_dir, None
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)

    # --- faults -------------------------------------------------------------------------------
    def fail_next(
        self,
        stage: Stage,
        code: int,
        text: str,
        n: int = 1,
        *,
        user: str | None = None,
        mail_from: str | None = None,
        close: bool | None = None,
    ) -> SmtpFault:
        """Answer the next ``n`` matching commands at ``stage`` with ``code text``."""
        return self.add_fault(
            SmtpFault(stage, code, text, remaining=n, user=user, mail_from=mail_from, close=close)
        )

    def fail_with(
        self,
        reply: Reply,
        n: int = 1,
        *,
        stage: Stage | None = None,
        user: str | None = None,
        mail_from: str | None = None,
        close: bool | None = None,
    ) -> SmtpFault:
        """A canned :class:`Exchange` reply, at its usual stage unless ``stage`` says another."""
        return self.fail_next(
            stage or reply.stage,
            reply.code,
            reply.text,
            n,
            user=user,
            mail_from=mail_from,
            close=close,
        )

    def hold_data(self, n: int = 1, *, user: str | None = None) -> Gate:
        """Hold the reply to the next ``n`` messages' content (of ``user``, or any) until the
        returned gate is released: connections stay busy in DATA for as long as a test needs."""
        gate = Gate()
        self._held_data.add(_DataHold(remaining=n, gate=gate, user=user and user.lower()))
        return gate

    def drop_after_data(
        self, n: int = 1, *, user: str | None = None, mail_from: str | None = None
    ) -> SmtpFault:
        """Accept and record the next ``n`` messages, then cut the connection without a reply."""
        return self.add_fault(
            SmtpFault("data", remaining=n, user=user, mail_from=mail_from, drop=True)
        )

    @property
    def faults(self) -> list[SmtpFault]:
        return self.fault_queue.pending

    def reset(self) -> None:
        """Forget faults and everything recorded (open connections stay counted as open)."""
        open_connections = [c for c in self.connections if c.open]
        super().reset()
        self._held_data.clear()
        self.connections[:] = open_connections
        self.max_concurrent_by_user.clear()
        self.max_concurrent = len(self._open)

    def _take_fault(
        self, stage: Stage, user: str | None, mail_from: str | None
    ) -> SmtpFault | None:
        return self.fault_queue.take(lambda fault: fault.matches(stage, user, mail_from))

    # --- queries ------------------------------------------------------------------------------
    @property
    def connections_opened(self) -> int:
        return len(self.connections)

    @property
    def open_connections(self) -> list[SmtpConnection]:
        return [c for c in self.connections if c.open]

    def received_by(self, user: str) -> list[Received]:
        return [r for r in self.received if (r.auth_user or "").lower() == user.lower()]

    async def wait_received(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait (in the server's loop) until ``count`` messages were received."""
        return await wait_recorded_async(self.received, count, timeout, "received message(s)")

    def wait_received_sync(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Thread-mode twin of :meth:`wait_received`."""
        return wait_recorded(self.received, count, timeout, "received message(s)")

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "connectionsOpened": self.connections_opened,
            "openConnections": len(self.open_connections),
            "maxConcurrent": self.max_concurrent,
            "maxConcurrentByUser": dict(self.max_concurrent_by_user),
            "received": len(self.received),
            "rejections": len(self.rejections),
            "faultsPending": [f.to_json() for f in self.faults],
        }

    # --- bookkeeping (called from the server's loop) ------------------------------------------
    def _open_connection(self, protocol: _StandInSMTP, peer: Any) -> SmtpConnection:
        record = SmtpConnection(
            id=next(self._ids),
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            time=time.monotonic(),
            wall_time=time.time(),
        )
        self.connections.append(record)
        self._open[record.id] = protocol
        self.max_concurrent = max(self.max_concurrent, len(self._open))
        task = protocol._handler_coroutine
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return record

    def _close_connection(self, protocol: _StandInSMTP) -> None:
        record = protocol.record
        assert record is not None
        record.closed_at = time.monotonic()
        self._open.pop(record.id, None)

    def _authenticated(self, protocol: _StandInSMTP, user: str, client_id: str | None) -> None:
        record = protocol.record
        assert record is not None
        record.auth_user = user
        record.auth_seq = next(self._auth_seq)
        self._record_auth(record, user, True, "ok", client_id)
        key = user.lower()
        concurrent = sum(
            1
            for p in self._open.values()
            if p.record is not None and (p.record.auth_user or "").lower() == key
        )
        self.max_concurrent_by_user[key] = max(self.max_concurrent_by_user.get(key, 0), concurrent)

    def _record_auth(
        self,
        record: SmtpConnection,
        user: str | None,
        ok: bool,
        reason: str,
        client_id: str | None,
        mechanism: str = "XOAUTH2",
    ) -> None:
        self.auth_attempts.append(
            SmtpAuthAttempt(
                connection_id=record.id,
                mechanism=mechanism,
                user=user,
                ok=ok,
                reason=reason,
                client_id=client_id,
                time=time.monotonic(),
            )
        )

    def _reject(
        self,
        protocol: _StandInSMTP,
        stage: Stage,
        code: int,
        text: str,
        cause: Literal["fault", "limit", "policy", "auth"],
        mail_from: str | None,
        *,
        user: str | None = None,
    ) -> None:
        record = protocol.record
        self.rejections.append(
            SmtpRejection(
                stage=stage,
                code=code,
                text=text,
                connection_id=record.id if record else 0,
                auth_user=user or (record.auth_user if record else None),
                mail_from=mail_from,
                cause=cause,
                time=time.monotonic(),
            )
        )

    def _over_limit(self, user: str, protocol: _StandInSMTP | None) -> bool:
        """Whether ``user`` already has ``max_connections_per_user`` earlier connections open.

        ``protocol`` is the connection asking (``None``: one that is about to authenticate).
        """
        limit = self.max_connections_per_user
        if limit is None:
            return False
        mine = protocol.record.auth_seq if protocol and protocol.record else None
        earlier = 0
        for other in self._open.values():
            rec = other.record
            if other is protocol or rec is None or rec.auth_seq is None:
                continue
            if (rec.auth_user or "").lower() != user.lower():
                continue
            if mine is None or rec.auth_seq < mine:
                earlier += 1
        return earlier >= limit

    def _policy(
        self, stage: Stage, user: str | None, mail_from: str | None, cert_names: tuple[str, ...]
    ) -> Reply | None:
        if stage == "mail" and self.mode == "relay":
            domain = (mail_from or "").rpartition("@")[2].lower()
            if domain not in self.accepted_domains:
                return Exchange.RELAY_ACCESS_DENIED
            wanted = self.client_cert_names
            if wanted is not None and not {n.lower() for n in cert_names} & wanted:
                return Exchange.RELAY_ACCESS_DENIED  # the connector did not recognise the sender
        if stage == "data" and self.mode == "submission" and self.send_as is not None and user:
            sender = (mail_from or "").lower()
            if sender != user.lower() and sender not in self.send_as.get(user.lower(), set()):
                return Exchange.SEND_AS_DENIED
        return None

    def _receive(self, protocol: _StandInSMTP, envelope: Envelope, *, dropped: bool) -> Received:
        record = protocol.record
        assert record is not None
        data = envelope.original_content or b""
        internal_id = next(self._internal_ids)
        reply = None
        if not dropped:
            message_id = _message_id(data) or f"<{internal_id}@{self.hostname}>"
            reply = (
                f"250 2.6.0 {message_id} [InternalId={internal_id}, Hostname={self.hostname}] "
                "Queued mail for delivery"
            )
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(data),
            auth_user=record.auth_user,
            tls=record.tls,
            tls_version=record.tls_version,
            connection_id=record.id,
            time=time.monotonic(),
            wall_time=time.time(),
            mail_options=tuple(envelope.mail_options),
            internal_id=internal_id,
            reply=reply,
            dropped=dropped,
        )
        record.messages += 1
        self.received.append(received)
        return received

    # --- admin (standins.admin) ---------------------------------------------------------------
    def recordings(self) -> Mapping[str, list[Any]]:
        return {
            "received": self.received,
            "connections": self.connections,
            "rejections": self.rejections,
            "auth": self.auth_attempts,
        }

    def add_fault_json(self, item: Mapping[str, Any]) -> SmtpFault:
        return self.add_fault(SmtpFault.from_json(item))

    def configure_json(self, config: Mapping[str, Any]) -> None:
        """``maxConnectionsPerUser``, ``connectionLimitStage``, ``acceptedAudiences``,
        ``acceptedDomains``, ``allowedUsers``, ``clientCertNames``, ``sendAs``."""
        if "connectionLimitStage" in config and config["connectionLimitStage"] not in STAGES:
            raise ValueError(f"connectionLimitStage: one of {STAGES}")
        if "maxConnectionsPerUser" in config:
            value = config["maxConnectionsPerUser"]
            self.max_connections_per_user = None if value is None else int(value)
        if "connectionLimitStage" in config:
            self.connection_limit_stage = config["connectionLimitStage"]
        if "acceptedAudiences" in config:
            self.accepted_audiences = {_normalise_audience(a) for a in config["acceptedAudiences"]}
        if "acceptedDomains" in config:
            self.accepted_domains = {d.lower().lstrip("@") for d in config["acceptedDomains"]}
        if "allowedUsers" in config:
            users = config["allowedUsers"]
            self.allowed_users = None if users is None else {u.lower() for u in users}
        if "clientCertNames" in config:
            names = config["clientCertNames"]
            self.client_cert_names = None if names is None else {n.lower() for n in names}
        if "sendAs" in config:
            self.send_as = grants(config["sendAs"])


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:11].lower() == b"message-id:":
            value = line[11:].strip().decode("ascii", "replace")
            return value or None
    return None


class RemoteSmtpStandIn(RemoteAdmin):
    """Synchronous client of an SMTP stand-in's admin app (``python -m standins.smtp``)."""

    def received(self) -> list[dict[str, Any]]:
        """Received messages as JSON, with ``data`` (bytes) decoded from ``dataBase64``."""
        items = self.records("received")
        for item in items:
            item["data"] = base64.b64decode(item["dataBase64"])
        return items

    def connections(self) -> list[dict[str, Any]]:
        return self.records("connections")

    def rejections(self) -> list[dict[str, Any]]:
        return self.records("rejections")

    def auth_attempts(self) -> list[dict[str, Any]]:
        return self.records("auth")

    def add_faults(self, *faults: Mapping[str, Any] | SmtpFault) -> None:
        """Faults as :class:`SmtpFault` or JSON: ``{"stage", "code", "text", "n", "user",
        "mailFrom", "close", "drop"}`` or ``{"reply": "SEND_AS_DENIED", ...}``."""
        super().add_faults(*(f.to_json() if isinstance(f, SmtpFault) else f for f in faults))

    def fail_with(self, reply: Reply | str, n: int = 1, **options: Any) -> None:
        """``fail_with(Exchange.SEND_AS_DENIED, mailFrom=...)``; a name works too."""
        name = reply if isinstance(reply, str) else _canned_name(reply)
        self.add_faults({"reply": name, "n": n, **options})

    def drop_after_data(self, n: int = 1, **options: Any) -> None:
        self.add_faults({"stage": "data", "drop": True, "n": n, **options})

    def wait_received(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Received messages (``data`` decoded) once there are at least ``count``."""
        self.wait_records("received", count, timeout)
        return self.received()


def _canned_name(reply: Reply) -> str:
    for name, value in CANNED_REPLIES.items():
        if value == reply:
            return name
    raise ValueError(f"{reply} is not a canned Exchange reply; use add_faults")


def main(argv: Sequence[str] | None = None) -> None:
    parser = stand_in_parser(
        "smtp",
        "Exchange Online SMTP stand-in on loopback (prints READY {json}).",
        port_flag="--admin-port",
    )
    parser.add_argument("--mode", choices=["submission", "relay"], default="submission")
    parser.add_argument("--port", type=int, default=0, help="SMTP port (0: any free one)")
    parser.add_argument(
        "--audience", action="append", default=None, help="accepted token resource (repeatable)"
    )
    parser.add_argument(
        "--accepted-domain", action="append", default=[], help="relay: MAIL FROM domain"
    )
    parser.add_argument(
        "--allowed-user", action="append", default=None, help="mailbox allowed to AUTH"
    )
    parser.add_argument("--max-connections-per-user", type=int, default=3, help="0: unlimited")
    parser.add_argument("--connection-limit-stage", choices=list(STAGES), default="data")
    parser.add_argument("--hostname", default=None)
    args = parser.parse_args(argv)
    SmtpStandIn(
        mode=args.mode,
        port=args.port,
        admin_port=args.admin_port,
        admin_port_fallback=args.port_fallback,
        accepted_audiences=args.audience or (OUTLOOK_RESOURCE,),
        accepted_domains=args.accepted_domain,
        allowed_users=args.allowed_user,
        max_connections_per_user=args.max_connections_per_user or None,
        connection_limit_stage=args.connection_limit_stage,
        signing_key=signing_key(args),
        hostname=args.hostname,
    ).run_cli()


if __name__ == "__main__":
    main()
