"""Fixtures for the stand-ins' own tests: both servers in the test's event loop, and the managed
identity environment pointed at the identity stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from standin_fixtures import graph

from standins.identity import IdentityStandIn, use_identity_standin


@pytest.fixture
async def identity() -> AsyncIterator[IdentityStandIn]:
    async with IdentityStandIn() as server:
        yield server


@pytest.fixture
def mi_env(identity: IdentityStandIn, monkeypatch: pytest.MonkeyPatch) -> IdentityStandIn:
    """IDENTITY_ENDPOINT / IDENTITY_HEADER of the identity stand-in, nothing else."""
    use_identity_standin(identity, monkeypatch)
    return identity


__all__ = ["graph"]  # shared, from standin_fixtures
