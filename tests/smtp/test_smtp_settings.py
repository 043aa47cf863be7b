"""MAILGW_SMTP_* / MAILGW_RELAY_* settings: refused at start-up when Exchange Online cannot work
with them (port 465, more than 3 connections per mailbox, relay without its host), and what the SMTP
transport makes of the valid ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from smtp_helpers import outbound

from mailgw.settings import Settings, SettingsError
from mailgw.transports import create_transport
from mailgw.transports.smtp import SmtpTransport
from standins.identity import IdentityStandIn
from standins.smtp import SmtpStandIn


@pytest.mark.parametrize("name", ["MAILGW_SMTP_PORT", "MAILGW_RELAY_PORT"])
@pytest.mark.parametrize("transport", ["smtp", "relay"])
def test_port_465_is_refused(name: str, transport: str) -> None:
    env = {
        "MAILGW_TRANSPORT": transport,
        "MAILGW_RELAY_HOST": "contoso-com.mail.example",
        name: "465",
    }
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert name in message and "465" in message
    assert "587" in message and "STARTTLS" in message


@pytest.mark.parametrize("value", ["4", "10", "0", "-1", "three"])
def test_smtp_connections_outside_1_to_3_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="MAILGW_SMTP_CONNECTIONS"):
        Settings.from_env({"MAILGW_TRANSPORT": "smtp", "MAILGW_SMTP_CONNECTIONS": value})


@pytest.mark.parametrize("value", ["1", "2", "3"])
def test_smtp_connections_1_to_3_are_accepted(value: str) -> None:
    settings = Settings.from_env({"MAILGW_TRANSPORT": "smtp", "MAILGW_SMTP_CONNECTIONS": value})
    assert settings.smtp_connections == int(value)


@pytest.mark.parametrize("host", [None, "", "   "])
def test_relay_without_its_host_is_refused(host: str | None) -> None:
    env = {"MAILGW_TRANSPORT": "relay"}
    if host is not None:
        env["MAILGW_RELAY_HOST"] = host
    with pytest.raises(SettingsError, match=r"MAILGW_RELAY_HOST.*mail\.protection\.outlook\.com"):
        Settings.from_env(env)


def test_a_ca_file_that_does_not_exist_is_refused() -> None:
    with pytest.raises(SettingsError, match="MAILGW_SMTP_CA_FILE"):
        Settings.from_env(
            {"MAILGW_TRANSPORT": "smtp", "MAILGW_SMTP_CA_FILE": "/nonexistent/ca.pem"}
        )


@pytest.mark.parametrize("name", ["MAILGW_SMTP_PORT", "MAILGW_RELAY_PORT"])
@pytest.mark.parametrize("value", ["0", "65536", "smtp"])
def test_ports_must_be_tcp_ports(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"MAILGW_TRANSPORT": "smtp", name: value})


def test_defaults_are_exchange_onlines_submission_endpoint() -> None:
    settings = Settings.from_env({"MAILGW_TRANSPORT": "smtp"})
    assert (settings.smtp_host, settings.smtp_port) == ("smtp.office365.com", 587)
    assert settings.smtp_token_scope == "https://outlook.office365.com/.default"
    assert settings.smtp_connections == 3
    assert settings.smtp_timeout_seconds == 30
    assert settings.smtp_ca_file is None
    relay = Settings.from_env(
        {
            "MAILGW_TRANSPORT": "relay",
            "MAILGW_RELAY_HOST": "contoso-com.mail.protection.outlook.com",
        }
    )
    assert relay.relay_port == 25


async def test_create_transport_builds_the_configured_smtp_transport(
    smtp_settings: Callable[..., Settings],
    smtp: SmtpStandIn,
    relay_server: SmtpStandIn,
) -> None:
    submission = create_transport(smtp_settings(MAILGW_SMTP_TIMEOUT_SECONDS="7"))
    relay = create_transport(
        Settings.from_env({"MAILGW_ALLOWED_SENDERS": "*@contoso.com", **relay_server.gateway_env()})
    )
    try:
        assert isinstance(submission, SmtpTransport) and isinstance(relay, SmtpTransport)
        assert (submission.name, submission.relay) == ("smtp", False)
        assert (submission.host, submission.port) == (smtp.host, smtp.port)
        assert submission.timeout == 7.0
        assert submission.limit == 3
        assert submission.credential is not None
        assert (relay.name, relay.relay, relay.credential) == ("relay", True, None)
        assert (relay.host, relay.port) == (relay_server.host, relay_server.port)
        await submission.send(outbound())
        await relay.send(outbound())
    finally:
        await submission.aclose()
        await relay.aclose()
    assert len(smtp.received) == len(relay_server.received) == 1


async def test_the_token_scope_follows_the_setting(
    smtp_settings: Callable[..., Settings], smtp: SmtpStandIn, identity: IdentityStandIn
) -> None:
    """Sovereign clouds have their own Exchange resource (e.g. outlook.office365.us)."""
    resource = "https://outlook.office365.us"
    smtp.accepted_audiences = {resource}
    transport = SmtpTransport(smtp_settings(MAILGW_SMTP_TOKEN_SCOPE=f"{resource}/.default"))
    try:
        await transport.send(outbound())
    finally:
        await transport.aclose()
    assert [t.resource for t in identity.issued] == [resource]
    assert len(smtp.received) == 1
