"""Stand-in fixtures shared by several test folders (import them into a conftest or test module,
as the Graph and SMTP conftests import graph_helpers' queue fixtures; pytest names a fixture by
the name it is imported as, so ``import smtp as submission`` serves it as ``submission``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn, use_identity_standin
from standins.smtp import SmtpStandIn


@pytest.fixture
async def identity(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IdentityStandIn]:
    """The identity stand-in, with azure-identity's managed identity pointed at it."""
    async with IdentityStandIn() as server:
        use_identity_standin(server, monkeypatch)
        yield server


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn() as server:
        yield server


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpStandIn]:
    """smtp.office365.com:587 as the gateway meets it (any mailbox may authenticate)."""
    async with SmtpStandIn(mode="submission") as server:
        yield server


@pytest.fixture
async def relay_server() -> AsyncIterator[SmtpStandIn]:
    """contoso-com.mail.protection.outlook.com:25 with a connector for contoso.com."""
    async with SmtpStandIn(mode="relay", accepted_domains=["contoso.com"]) as server:
        yield server


__all__ = ["graph", "identity", "relay_server", "smtp"]
