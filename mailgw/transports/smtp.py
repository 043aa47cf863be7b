"""SMTP transports: client submission with OAuth (``smtp``) and the relay connector (``relay``).

``smtp``: STARTTLS to smtp.office365.com:587 (TLS 1.2+, certificate verified), ``AUTH XOAUTH2``
as the ``from`` mailbox with a token for Exchange Online (``SMTP.SendAsApp``) from the same
identity modes as Graph. ``relay``: STARTTLS to ``<domain>.mail.protection.outlook.com:25``, no
AUTH; the connector trusts the sender's IP or certificate. Both use aiosmtplib and the gateway's
one renderer; Bcc travels only in the envelope (RCPT TO), never in the headers.

Connections are pooled per mailbox and reused for its next messages (a TLS handshake and an AUTH
per message would dominate), at most ``MAILGW_SMTP_CONNECTIONS`` (Exchange allows 3) at a time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiosmtplib
from azure.core.exceptions import AzureError

from mailgw.identity import SingleFlightCredential, create_credential
from mailgw.settings import Settings
from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.errors import DeliveryError, token_unavailable
from mailgw.transports.render import envelope_recipients, needs_smtputf8, rendered_bytes
from mailgw.transports.smtp_errors import classify_smtp, without_addresses

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger("mailgw.smtp")

#: Reuse a connection only while it is this fresh; Exchange drops idle sessions after a while.
MAX_IDLE_SECONDS = 60.0
MAX_AGE_SECONDS = 600.0


@dataclass
class _Progress:
    data_started: bool = False


def _protocol_refused(exc: ssl.SSLError) -> bool:
    text = f"{exc.reason or ''} {exc}".upper()
    return any(m in text for m in ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_VERSION"))


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store (+ ``MAILGW_SMTP_CA_FILE``), hostname checked, TLS 1.2 or newer."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    opened: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)

    def reusable(self) -> bool:
        now = time.monotonic()
        return (
            self.client.is_connected
            and now - self.used < MAX_IDLE_SECONDS
            and now - self.opened < MAX_AGE_SECONDS
        )


class _MailboxPool:
    """Idle connections of one mailbox, and a cap on how many may be open at once."""

    def __init__(self, limit: int, open_connection: Callable[[], Awaitable[aiosmtplib.SMTP]]):
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open = open_connection

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        async with self._slots:
            connection = None
            while self._idle and connection is None:
                candidate = self._idle.pop()
                if candidate.reusable():
                    connection = candidate
                else:
                    await _quit(candidate.client)
            if connection is None:
                connection = _Connection(await self._open())
            healthy = False
            try:
                yield connection
                healthy = True
            finally:
                connection.used = time.monotonic()
                if healthy and connection.client.is_connected:
                    self._idle.append(connection)
                else:
                    await _quit(connection.client)

    async def close(self) -> None:
        while self._idle:
            await _quit(self._idle.pop().client)


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit(timeout=5)
    except (aiosmtplib.SMTPException, OSError):
        client.close()


class SmtpTransport:
    """``relay=False``: client submission with XOAUTH2; ``relay=True``: the relay connector."""

    def __init__(
        self,
        settings: Settings,
        *,
        relay: bool = False,
        credential: AsyncTokenCredential | None = None,
    ):
        self.relay = relay
        self.name = "relay" if relay else "smtp"
        self.host = (settings.relay_host or "") if relay else settings.smtp_host
        self.port = settings.relay_port if relay else settings.smtp_port
        self.scope = settings.smtp_token_scope
        self.timeout = float(settings.smtp_timeout_seconds)
        self.limit = settings.smtp_connections
        self.context = tls_context(settings.smtp_ca_file)
        self._client_cert = settings.relay_client_cert if relay else None
        if self._client_cert is not None:
            cert = self._client_cert
            cert.load_into(self.context)
            log.info(
                "relay presents the client certificate for %s (subject %s, valid until %s)",
                ", ".join(cert.names) or "no name",
                cert.subject,
                f"{cert.not_after:%Y-%m-%d}",
            )
            if cert.expires_soon():
                log.warning(
                    "the relay's client certificate expires on %s: renew it "
                    "(MAILGW_RELAY_CLIENT_CERT); with an expired one the app does not start",
                    f"{cert.not_after:%Y-%m-%d}",
                )
        self._owns_credential = credential is None and not relay
        inner = credential or (None if relay else create_credential(settings))
        self.credential = SingleFlightCredential(inner) if inner else None
        self._pools: dict[str, _MailboxPool] = {}

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        if self._owns_credential and self.credential is not None:
            await self.credential.close()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if message.mime is not None:
            return await self.send_mime(message)
        request = message.request
        return await self._deliver(
            message.id,
            request.sender.address,
            envelope_recipients(request),
            rendered_bytes(message.id, request),
            needs_smtputf8(request),
        )

    async def send_mime(self, message: OutboundMessage) -> SendReceipt:
        """A raw MIME message (SMTP intake), as submitted, to its envelope (Bcc included)."""
        assert message.mime is not None
        mime = message.mime
        utf8 = mime.utf8 or not all(a.isascii() for a in (mime.mail_from, *mime.rcpt_to))
        return await self._deliver(message.id, mime.mail_from, list(mime.rcpt_to), mime.data, utf8)

    async def _deliver(
        self, message_id: str, mailbox: str, recipients: list[str], data: bytes, utf8: bool
    ) -> SendReceipt:
        pool = self._pools.get(mailbox.lower())
        if pool is None:
            pool = self._pools[mailbox.lower()] = _MailboxPool(
                self.limit, lambda: self._open(mailbox)
            )
        progress = _Progress()
        try:
            async with pool.connection() as connection:
                refused = await self._transact(
                    connection.client, mailbox, recipients, data, utf8, progress
                )
        except Exception as exc:
            raise self._classify(exc, progress) from exc
        detail = f"{self.host}:{self.port}"
        if refused:
            detail += f" ({refused} of {len(recipients)} recipients refused)"
            log.warning(
                "message %s: %d of %d recipients refused", message_id, refused, len(recipients)
            )
        return SendReceipt(self.name, detail, refused=refused)

    async def _transact(
        self,
        client: aiosmtplib.SMTP,
        sender: str,
        recipients: list[str],
        data: bytes,
        utf8: bool,
        progress: _Progress,
    ) -> int:
        """MAIL, RCPT..., DATA step by step, so a failure is known to be before DATA (nothing
        can have been taken) or after it started (the server may have the message). Returns how
        many recipients the server refused (it took the message for the others)."""
        options = ["SMTPUTF8"] if utf8 else []
        if not data.isascii():
            options.append("BODY=8BITMIME")  # RFC 6152: an 8-bit body must be declared
        encoding = "utf-8" if utf8 else "ascii"
        await client.mail(sender, options=options, encoding=encoding)
        refused = 0
        for recipient in recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused:
                refused += 1
                if refused == len(recipients):
                    raise
        progress.data_started = True
        await client.data(data)
        return refused

    def _classify(self, exc: Exception, progress: _Progress) -> Exception:
        """Every way a send can fail, as a DeliveryError (anything unknown stays a crash)."""
        if isinstance(exc, DeliveryError):
            return exc
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
            # The reply names the recipient; a failure is recorded and logged, so it must not.
            return classify_smtp(exc.code, without_addresses(exc.message))
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return classify_smtp(exc.code, exc.message)
        if isinstance(exc, AzureError):
            return token_unavailable(exc)
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return DeliveryError(
                "smtp/not-supported",
                str(exc),
                transient=False,
                hint="the server lacks an extension this message needs (SMTPUTF8 for "
                "international addresses); use ASCII addresses or the Graph transport",
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DeliveryError(
                "smtp/tls-certificate",
                f"the server's certificate was not trusted: {exc}",
                transient=False,
                hint=f"check {self.host}'s certificate, or set MAILGW_SMTP_CA_FILE to the CA "
                "that issued it",
            )
        if isinstance(exc, ssl.SSLError) and _protocol_refused(exc):
            return DeliveryError(
                "smtp/tls-version",
                f"no TLS session could be agreed: {exc}",
                transient=False,
                hint=f"{self.host} must offer TLS 1.2 or newer; the gateway refuses older TLS",
            )
        if isinstance(exc, TimeoutError | aiosmtplib.SMTPException | ssl.SSLError | OSError):
            # Only a failure once DATA started can leave the server holding the message.
            ambiguous = progress.data_started
            return DeliveryError(
                "smtp/connection",
                f"{type(exc).__name__}: {exc}",
                transient=True,
                ambiguous=ambiguous,
                hint=f"could not talk to {self.host}:{self.port}; the gateway retries"
                + (" (the server may have taken the message)" if ambiguous else ""),
            )
        return exc

    async def probe(self, mailbox: str | None) -> str:
        """Connect, STARTTLS and (client submission) AUTH as the mailbox; for the relay, MAIL FROM
        it too, since a connector decides there (then RSET). Then QUIT: nothing is sent."""
        client: aiosmtplib.SMTP | None = None
        try:
            client = await self._open(mailbox)
            ssl_object = client.transport.get_extra_info("ssl_object") if client.transport else None
            seen = f"{self.host}:{self.port} over {ssl_object.version() if ssl_object else 'TLS'}"
            if self.relay and mailbox is not None:
                await client.mail(mailbox)
                await client.rset()
                seen += f", MAIL FROM {mailbox} accepted"
            await client.quit()
        except Exception as exc:
            raise self._classify(exc, _Progress()) from exc
        finally:
            if client is not None:
                client.close()
        if self.relay:
            cert = self._client_cert
            if cert is not None and cert.expires_soon():
                raise DeliveryError(
                    "smtp/client-certificate-expiring",
                    f"the client certificate expires on {cert.not_after:%Y-%m-%d}",
                    transient=False,
                    hint="renew it (MAILGW_RELAY_CLIENT_CERT, in Key Vault): with an expired "
                    "certificate the app does not start",
                )
            if cert is not None:
                seen += f", client certificate valid until {cert.not_after:%Y-%m-%d}"
            return seen
        if mailbox is None:
            return seen + "; AUTH not tried (give --mailbox to authenticate as one)"
        return seen + f", AUTH XOAUTH2 as {mailbox} accepted"

    async def _open(self, mailbox: str | None) -> aiosmtplib.SMTP:
        """Connect, require STARTTLS (TLS 1.2+), and for client submission AUTH XOAUTH2 as the
        mailbox. Nothing is sent before the session is encrypted."""
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            start_tls=False,
            tls_context=self.context,
            timeout=self.timeout,
        )
        await client.connect()
        try:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                raise DeliveryError(
                    "smtp/starttls-required",
                    f"{self.host}:{self.port} does not offer STARTTLS",
                    transient=False,
                    hint="the gateway only sends over STARTTLS with TLS 1.2+: point "
                    "MAILGW_SMTP_HOST/MAILGW_RELAY_HOST at a server that offers it (port 587 "
                    "for submission, 25 for a relay connector)",
                )
            try:
                await client.starttls()
            except ssl.SSLCertVerificationError:
                raise
            except (aiosmtplib.SMTPServerDisconnected, ssl.SSLError) as exc:
                if isinstance(exc, ssl.SSLError) and _protocol_refused(exc):
                    raise
                raise DeliveryError(
                    "smtp/tls-handshake",
                    f"the TLS handshake failed: {exc}",
                    transient=True,
                    hint=f"{self.host} must offer TLS 1.2 or newer with a certificate the gateway "
                    "trusts; the gateway retries in case it was the network",
                ) from exc
            if self.credential is not None and mailbox is not None:
                token = await self.credential.get_token(self.scope)
                await client.auth_xoauth2(mailbox, token.token)
        except BaseException:
            client.close()
            raise
        return client
