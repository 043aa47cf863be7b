"""The transports' readiness probes (what `mailgw doctor` reports), against the real SMTP and
identity stand-ins: they connect, negotiate TLS and authenticate as a send would; none sends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from mailgw.settings import Settings
from mailgw.transports.errors import DeliveryError
from mailgw.transports.smtp import SmtpTransport
from standins.smtp import SmtpStandIn
from support import wait_until_async

MAILBOX = "noreply@contoso.com"


async def probe(transport: SmtpTransport, mailbox: str | None) -> str:
    try:
        return await transport.probe(mailbox)
    finally:
        await transport.aclose()


async def test_submission_probe_authenticates_as_the_mailbox_and_sends_nothing(
    smtp: SmtpStandIn, smtp_settings: Callable[..., Settings]
) -> None:
    seen = await probe(SmtpTransport(smtp_settings()), MAILBOX)
    assert "AUTH XOAUTH2 as noreply@contoso.com accepted" in seen
    assert "TLSv1.2" in seen or "TLSv1.3" in seen
    assert smtp.received == []
    (attempt,) = smtp.auth_attempts
    assert attempt.ok and attempt.user == MAILBOX
    (connection,) = smtp.connections

    async def closed() -> bool:
        return not connection.open

    await wait_until_async(closed, what="the probe's QUIT to close the connection")


async def test_submission_probe_without_a_mailbox_stops_before_auth(
    smtp: SmtpStandIn, smtp_settings: Callable[..., Settings]
) -> None:
    seen = await probe(SmtpTransport(smtp_settings()), None)
    assert "AUTH not tried" in seen
    assert smtp.auth_attempts == []


async def test_a_refused_auth_is_the_same_classified_error_a_send_gets(
    smtp: SmtpStandIn, smtp_settings: Callable[..., Settings]
) -> None:
    smtp.accepted_audiences = {"https://outlook.office.de"}
    with pytest.raises(DeliveryError) as caught:
        await probe(SmtpTransport(smtp_settings()), MAILBOX)
    assert "535" in caught.value.code and "5.7.3" in caught.value.code
    assert caught.value.hint


async def test_a_relay_that_does_not_answer_is_a_connection_error_with_a_hint(
    relay_settings: Callable[..., Settings],
) -> None:
    transport = SmtpTransport(relay_settings(MAILGW_RELAY_PORT="9"), relay=True)
    with pytest.raises(DeliveryError) as caught:
        await probe(transport, MAILBOX)
    assert caught.value.code == "smtp/connection"
    assert "127.0.0.1:9" in caught.value.hint


async def test_relay_probe_presents_the_client_certificate(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings]
) -> None:
    cert = relay_server.issue_client_cert("mail.contoso.com")
    seen = await probe(
        SmtpTransport(relay_settings(MAILGW_RELAY_CLIENT_CERT=cert), relay=True), MAILBOX
    )
    assert "MAIL FROM noreply@contoso.com accepted" in seen
    assert "client certificate valid until" in seen
    (connection,) = relay_server.connections
    assert "mail.contoso.com" in connection.client_cert_names
    assert relay_server.received == []


async def test_relay_probe_hears_the_connectors_verdict_at_mail_from(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings]
) -> None:
    """A certificate connector for another name refuses at MAIL FROM: the probe asks it."""
    relay_server.client_cert_names = {"mail.contoso.com"}
    cert = relay_server.issue_client_cert("gateway.fabrikam.com")
    transport = SmtpTransport(relay_settings(MAILGW_RELAY_CLIENT_CERT=cert), relay=True)
    with pytest.raises(DeliveryError) as caught:
        await probe(transport, MAILBOX)
    assert "5.7.64" in caught.value.code
    assert "MAILGW_RELAY_CLIENT_CERT" in caught.value.hint
    assert relay_server.received == []


async def test_relay_probe_fails_a_certificate_about_to_expire(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings]
) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    cert = relay_server.issue_client_cert("mail.contoso.com", not_after=soon)
    transport = SmtpTransport(relay_settings(MAILGW_RELAY_CLIENT_CERT=cert), relay=True)
    with pytest.raises(DeliveryError) as caught:
        await probe(transport, MAILBOX)
    assert caught.value.code == "smtp/client-certificate-expiring"
    assert f"{soon:%Y-%m-%d}" in caught.value.message
