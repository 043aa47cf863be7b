"""Graph transport fixtures: the real msgraph-sdk and azure-identity against stand-ins on 127.0.0.1.

The managed-identity environment (IDENTITY_ENDPOINT / IDENTITY_HEADER) points azure-identity's own
ManagedIdentityCredential at the identity stand-in; the Graph stand-in accepts only its tokens,
for the resource that MAILGW_GRAPH_ENDPOINT implies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailgw.settings import Settings
from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn

OTHER_MI_VARIABLES = (
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
)


@pytest.fixture
async def identity(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IdentityStandIn]:
    async with IdentityStandIn() as server:
        for name in OTHER_MI_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn() as server:
        server.audiences.add(server.url)  # the token scope follows MAILGW_GRAPH_ENDPOINT
        yield server


@pytest.fixture
def graph_settings(graph: GraphStandIn, identity: IdentityStandIn) -> Callable[..., Settings]:
    def make(**overrides: str) -> Settings:
        env: dict[str, Any] = {
            "MAILGW_TRANSPORT": "graph",
            "MAILGW_GRAPH_ENDPOINT": graph.url,
            "MAILGW_CREDENTIAL": "managed_identity",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_GRAPH_TIMEOUT_SECONDS": "5",
            **identity.env(),
        }
        env.update(overrides)
        return Settings.from_env(env)

    return make


@pytest.fixture
async def transport(graph_settings: Callable[..., Settings]) -> AsyncIterator[GraphTransport]:
    graph_transport = GraphTransport(graph_settings())
    yield graph_transport
    await graph_transport.aclose()


@pytest.fixture
async def draft_transport(graph_settings: Callable[..., Settings]) -> AsyncIterator[GraphTransport]:
    graph_transport = GraphTransport(graph_settings(MAILGW_GRAPH_MODE="draft"))
    yield graph_transport
    await graph_transport.aclose()
