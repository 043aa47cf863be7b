"""Fixtures for tests on real Azurite: a fresh queue per test, the core wired as in production."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient
from rigs import CountingTransport, Rig
from standin_fixtures import identity

from mailgw.cli import close_services
from mailgw.delivery import Delivery, RetryPolicy
from mailgw.intake import Intake
from mailgw.operations import Operations
from mailgw.queue import MailQueue
from mailgw.services import Services
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports.outbox import OutboxTransport
from support import TEST_SEAL


@pytest.fixture
def settings(azurite: Any, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "MAILGW_QUEUE": f"it-{uuid.uuid4().hex[:12]}",
            "MAILGW_PAYLOAD_CONTAINER": f"payloads-{uuid.uuid4().hex[:12]}",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_TRANSPORT": "outbox",
            "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
        }
    )


@pytest.fixture
async def mail_queue(settings: Settings) -> AsyncIterator[MailQueue]:
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    yield queue
    await queue.close()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[StateStore]:
    state = StateStore(settings.storage(), f"it{uuid.uuid4().hex[:12]}")
    yield state
    await state.close()


@pytest.fixture
def intake(settings: Settings, mail_queue: MailQueue, store: StateStore) -> Intake:
    return Intake(settings, mail_queue, store)


@pytest.fixture
def outbox(settings: Settings) -> OutboxTransport:
    return OutboxTransport(settings.outbox_dir)


@pytest.fixture
def delivery(
    settings: Settings, mail_queue: MailQueue, outbox: OutboxTransport, store: StateStore
) -> Delivery:
    return Delivery(settings, mail_queue, outbox, store, retry=RetryPolicy(max_attempts=3))


@pytest.fixture
async def raw_queue(settings: Settings) -> AsyncIterator[Any]:
    """Open queues with NO decoding policy, to see exactly what is stored (as the host reads it)."""
    opened: list[QueueClient] = []

    def open_queue(name: str) -> QueueClient:
        client = QueueClient.from_connection_string(
            settings.storage().connection_string or "", name
        )
        opened.append(client)
        return client

    yield open_queue
    for client in opened:
        await client.close()


@pytest.fixture
def rig(settings: Settings, mail_queue: MailQueue, store: StateStore) -> Rig:
    """Delivery and Operations on this test's queues, with a transport that fails as scripted."""
    transport = CountingTransport([])
    delivery = Delivery(
        settings, mail_queue, transport, store, retry=RetryPolicy(max_attempts=3, base_seconds=0)
    )
    return Rig(mail_queue, store, transport, delivery, Operations(mail_queue, store))


@pytest.fixture
async def make_services(azurite: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Services]]:
    """The core wired as the Function App wires it, on a fresh queue and table; what it made is
    closed after the test (storage clients, credentials), so no test has to."""
    suffix = uuid.uuid4().hex[:10]
    made: list[Services] = []

    def make(**overrides: str) -> Services:
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            "MAILGW_QUEUE": f"ev-{suffix}",
            "MAILGW_PAYLOAD_CONTAINER": f"payloads-{suffix}",
            "MAILGW_STATE_TABLE": f"events{suffix}",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_TRANSPORT": "outbox",
            "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
            "MAILGW_EVENTS_QUEUE": f"ev-{suffix}-events",
            "MAILGW_EVENTS_SOURCE": "https://mailgw.example.net",
            **overrides,
        }
        made.append(Services(Settings.from_env({k: v for k, v in env.items() if v})))
        return made[-1]

    yield make
    for services in made:
        await close_services(services)


__all__ = ["identity"]  # shared stand-in fixture, from standin_fixtures
