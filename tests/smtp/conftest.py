"""SMTP transport fixtures: the gateway's own SmtpTransport (real aiosmtplib inside) against the
SMTP stand-in on 127.0.0.1, with tokens from azure-identity's real ManagedIdentityCredential talking
to the identity stand-in through IDENTITY_ENDPOINT / IDENTITY_HEADER (as in tests/graph).

``smtp``: Exchange Online's client submission endpoint (STARTTLS, TLS 1.2+, XOAUTH2 checked against
the identity stand-in's tokens for https://outlook.office365.com). ``relay_server``: a relay
connector for the accepted domain contoso.com (STARTTLS, no AUTH). ``make_pipeline(transport)``:
:class:`mailgw.delivery.Delivery` with its state store on real Azurite queues and tables, driven
one queue-trigger invocation at a time (the Graph tests' Pipeline).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import pytest
from graph.graph_helpers import mail_queue, make_pipeline, pacer, store
from standin_fixtures import identity, relay_server, smtp

from mailgw.settings import Settings
from mailgw.transports.smtp import SmtpTransport
from standins.identity import IdentityStandIn
from standins.smtp import SmtpStandIn

ALLOWED_SENDERS = "*@contoso.com,*@fabrikam.com"


def _settings(env: dict[str, str], overrides: dict[str, str | None]) -> Settings:
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)  # None removes a setting
        else:
            env[name] = value
    return Settings.from_env(env)


@pytest.fixture
def smtp_settings(smtp: SmtpStandIn, identity: IdentityStandIn) -> Callable[..., Settings]:
    """``smtp_settings(MAILGW_X="...")``: client submission to the stand-in (``None`` unsets)."""

    def make(**overrides: str | None) -> Settings:
        env = {
            "MAILGW_CREDENTIAL": "managed_identity",
            "MAILGW_ALLOWED_SENDERS": ALLOWED_SENDERS,
            "MAILGW_SMTP_TIMEOUT_SECONDS": "5",
            **identity.env(),
            **smtp.gateway_env(),
        }
        return _settings(env, overrides)

    return make


@pytest.fixture
def relay_settings(relay_server: SmtpStandIn) -> Callable[..., Settings]:
    def make(**overrides: str | None) -> Settings:
        env = {
            "MAILGW_ALLOWED_SENDERS": ALLOWED_SENDERS,
            "MAILGW_SMTP_TIMEOUT_SECONDS": "5",
            **relay_server.gateway_env(),
        }
        return _settings(env, overrides)

    return make


@pytest.fixture
async def transport(smtp_settings: Callable[..., Settings]) -> AsyncIterator[SmtpTransport]:
    async with aclosing(SmtpTransport(smtp_settings())) as smtp_transport:
        yield smtp_transport


@pytest.fixture
async def relay(relay_settings: Callable[..., Settings]) -> AsyncIterator[SmtpTransport]:
    async with aclosing(SmtpTransport(relay_settings(), relay=True)) as relay_transport:
        yield relay_transport


@pytest.fixture
def queue_settings(azurite: Any) -> Settings:
    """A fresh queue, payload container and state table on Azurite (what Delivery needs; the
    transport under test is handed to it separately)."""
    suffix = uuid.uuid4().hex[:12]
    return Settings.from_env(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "MAILGW_TRANSPORT": "outbox",
            "MAILGW_ALLOWED_SENDERS": ALLOWED_SENDERS,
            "MAILGW_QUEUE": f"smtp-{suffix}",
            "MAILGW_PAYLOAD_CONTAINER": f"payloads-{suffix}",
            "MAILGW_STATE_TABLE": f"state{suffix}",
        }
    )


# shared fixtures, from graph_helpers and standin_fixtures
__all__ = ["identity", "mail_queue", "make_pipeline", "pacer", "relay_server", "smtp", "store"]
