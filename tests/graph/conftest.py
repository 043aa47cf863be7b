"""Graph transport fixtures: the real msgraph-sdk and azure-identity against stand-ins on 127.0.0.1.

The managed-identity environment (IDENTITY_ENDPOINT / IDENTITY_HEADER) points azure-identity's own
ManagedIdentityCredential at the identity stand-in; the Graph stand-in accepts only its tokens,
for Graph's own resource (https://graph.microsoft.com), as Graph does whatever URL reaches it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import pytest
from graph_helpers import SHORT_GRACE, mail_queue, make_pipeline, pacer, store

from mailgw.settings import Settings
from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn, use_identity_standin


@pytest.fixture
async def identity(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[IdentityStandIn]:
    async with IdentityStandIn() as server:
        use_identity_standin(server, monkeypatch)
        yield server


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    async with GraphStandIn() as server:
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
    async with aclosing(GraphTransport(graph_settings())) as graph_transport:
        yield graph_transport


@pytest.fixture
async def draft_transport(graph_settings: Callable[..., Settings]) -> AsyncIterator[GraphTransport]:
    async with aclosing(GraphTransport(graph_settings(MAILGW_GRAPH_MODE="draft"))) as drafts:
        yield drafts


@pytest.fixture
async def draft_with_grace(
    graph_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[[int], GraphTransport]]:
    """``draft_with_grace(seconds)``: draft mode that concludes after ``seconds`` that a
    submission did not happen, with a 1 s timeout (the 'late' lost answers come after it)."""
    made: list[GraphTransport] = []

    def make(grace: int) -> GraphTransport:
        settings = graph_settings(
            MAILGW_GRAPH_MODE="draft",
            MAILGW_GRAPH_SUBMIT_GRACE_SECONDS=str(grace),
            MAILGW_GRAPH_TIMEOUT_SECONDS="1",
        )
        made.append(GraphTransport(settings))
        return made[-1]

    yield make
    for transport in made:
        await transport.aclose()


@pytest.fixture
def draft_short_grace(draft_with_grace: Callable[[int], GraphTransport]) -> GraphTransport:
    """Draft mode that concludes after 2 s that a submission did not happen."""
    return draft_with_grace(SHORT_GRACE)


@pytest.fixture
def queue_settings(graph_settings: Callable[..., Settings], azurite: Any) -> Settings:
    """Graph settings plus a fresh queue, payload container and state table on Azurite."""
    suffix = uuid.uuid4().hex[:12]
    return graph_settings(
        AzureWebJobsStorage=azurite.connection_string,
        MAILGW_QUEUE=f"gr-{suffix}",
        MAILGW_PAYLOAD_CONTAINER=f"payloads-{suffix}",
        MAILGW_STATE_TABLE=f"state{suffix}",
    )


__all__ = ["mail_queue", "make_pipeline", "pacer", "store"]  # shared fixtures, with graph_helpers
