"""Graph transport fixtures: the real msgraph-sdk and azure-identity against stand-ins on 127.0.0.1.

The managed-identity environment (IDENTITY_ENDPOINT / IDENTITY_HEADER) points azure-identity's own
ManagedIdentityCredential at the identity stand-in; the Graph stand-in accepts only its tokens,
for the resource that MAILGW_GRAPH_ENDPOINT implies.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from graph_helpers import Pipeline

from mailgw.delivery import Delivery, RetryPolicy
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports.base import Transport
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


@pytest.fixture
async def mail_queue(queue_settings: Settings) -> AsyncIterator[MailQueue]:
    queue = MailQueue(
        queue_settings.storage(), queue_settings.queue, queue_settings.payload_container
    )
    yield queue
    await queue.close()


@pytest.fixture
async def state_store(queue_settings: Settings) -> AsyncIterator[StateStore]:
    """The message states on Azurite: what Delivery needs besides settings, queue, transport."""
    store = StateStore(queue_settings.storage(), queue_settings.state_table)
    yield store
    await store.close()


#: retries become visible at once (queue delays are whole seconds; backoff this small rounds to 0)
FAST_RETRIES = RetryPolicy(max_attempts=8, base_seconds=0.001, cap_seconds=0.001)


@pytest.fixture
def make_pipeline(
    queue_settings: Settings, mail_queue: MailQueue, state_store: StateStore
) -> Callable[..., Pipeline]:
    """``make_pipeline(transport, retry=RetryPolicy(...))``: Delivery on the real queues."""

    def make(transport: Transport, retry: RetryPolicy = FAST_RETRIES) -> Pipeline:
        delivery = Delivery(queue_settings, mail_queue, transport, retry=retry, store=state_store)
        return Pipeline(mail_queue, delivery)

    return make
