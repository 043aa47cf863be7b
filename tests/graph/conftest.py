"""Graph transport fixtures: the real msgraph-sdk and azure-identity against stand-ins on 127.0.0.1.

The managed-identity environment (IDENTITY_ENDPOINT / IDENTITY_HEADER) points azure-identity's own
ManagedIdentityCredential at the identity stand-in; the Graph stand-in accepts only its tokens,
for Graph's own resource (https://graph.microsoft.com), as Graph does whatever URL reaches it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from graph_helpers import SHORT_GRACE, mail_queue, make_pipeline, pacer, store
from standin_fixtures import graph, identity

from mailgw.settings import Settings
from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn
from standins.identity import IdentityStandIn


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
async def make_transport(
    graph_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., GraphTransport]]:
    """``make_transport(MAILGW_X="...")``: a GraphTransport on :func:`graph_settings`, closed
    after the test."""
    made: list[GraphTransport] = []

    def make(**overrides: str) -> GraphTransport:
        made.append(GraphTransport(graph_settings(**overrides)))
        return made[-1]

    yield make
    for transport in made:
        await transport.aclose()


@pytest.fixture
def transport(make_transport: Callable[..., GraphTransport]) -> GraphTransport:
    return make_transport()


@pytest.fixture
def draft_transport(make_transport: Callable[..., GraphTransport]) -> GraphTransport:
    return make_transport(MAILGW_GRAPH_MODE="draft")


@pytest.fixture
def draft_with_grace(
    make_transport: Callable[..., GraphTransport],
) -> Callable[[int], GraphTransport]:
    """``draft_with_grace(seconds)``: draft mode that concludes after ``seconds`` that a
    submission did not happen, with a 1 s timeout (the 'late' lost answers come after it)."""

    def make(grace: int) -> GraphTransport:
        return make_transport(
            MAILGW_GRAPH_MODE="draft",
            MAILGW_GRAPH_SUBMIT_GRACE_SECONDS=str(grace),
            MAILGW_GRAPH_TIMEOUT_SECONDS="1",
        )

    return make


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


# shared fixtures, from graph_helpers and standin_fixtures
__all__ = ["graph", "identity", "mail_queue", "make_pipeline", "pacer", "store"]
