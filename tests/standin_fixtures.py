"""Stand-in fixtures shared by several test folders (import them into a conftest or test module,
as the Graph and SMTP conftests import graph_helpers' queue fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn, use_identity_standin


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


__all__ = ["graph", "identity"]
