"""Fixtures for the stand-ins' own tests: both servers in the test's event loop, and the managed
identity environment pointed at the identity stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn

#: variables that make azure-identity pick another managed identity flavour than App Service
OTHER_MI_VARIABLES = (
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
)


@pytest.fixture
async def identity() -> AsyncIterator[IdentityStandIn]:
    async with IdentityStandIn() as server:
        yield server


@pytest.fixture
def mi_env(identity: IdentityStandIn, monkeypatch: pytest.MonkeyPatch) -> IdentityStandIn:
    """IDENTITY_ENDPOINT / IDENTITY_HEADER of the identity stand-in, nothing else."""
    for name in OTHER_MI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    return identity


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn() as server:
        yield server
