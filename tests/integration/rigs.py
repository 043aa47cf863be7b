"""The integration tests' rig: Delivery and Operations on real Azurite queues, with a transport
that fails as scripted (imported as ``rigs``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from mailgw.delivery import Delivery
from mailgw.ids import new_message_id
from mailgw.models import Envelope, PayloadRef
from mailgw.operations import FAILURE_EVENT, Operations
from mailgw.queue import MailQueue
from mailgw.state import MessageRecord
from mailgw.store import StateStore
from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.errors import permanent
from support import TransportDefaults, pull, sample_request

DENIED = permanent("ErrorSendAsDenied", "no send as", hint="grant Send As")


@dataclass
class CountingTransport(TransportDefaults):
    """Fails as scripted (DeliveryError, or any other exception for a crash), then sends."""

    failures: list[Exception]
    name: str = "counting"

    def __post_init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return SendReceipt(self.name, "ok")


@dataclass
class Rig:
    queue: MailQueue
    store: StateStore
    transport: CountingTransport
    delivery: Delivery
    operations: Operations


async def blob_bytes(queue: MailQueue, ref: PayloadRef) -> bytes | None:
    try:
        downloader = await queue.blobs().get_blob_client(ref.container, ref.blob).download_blob()
    except ResourceNotFoundError:
        return None
    return bytes(await downloader.readall())


def outcomes(record: MessageRecord | None) -> list[str]:
    assert record is not None
    return [step.outcome for step in record.history]


def failure_events(caplog: pytest.LogCaptureFixture, message_id: str) -> list[dict[str, Any]]:
    events = []
    for entry in caplog.records:
        text = entry.getMessage()
        if text.startswith(FAILURE_EVENT + " "):
            event = json.loads(text.removeprefix(FAILURE_EVENT + " "))
            if event["messageId"] == message_id:
                events.append(event)
    return events


async def enqueue_new(rig: Rig, **request: Any) -> tuple[str, Any]:
    """A gateway envelope in the queue (as intake writes it); returns its id and the received
    queue message."""
    message_id = new_message_id()
    await rig.queue.enqueue(
        Envelope(id=message_id, created_at=datetime.now(UTC), request=sample_request(**request))
    )
    message = await pull(rig.queue)
    assert message is not None
    return message_id, message


async def fail_permanently(rig: Rig) -> tuple[str, Any, Any]:
    """Deliver a message that Graph refuses for good; the poison trigger records it.
    Returns its id, the original queue message and the poison queue message."""
    rig.transport.failures.append(DENIED)
    message_id, original = await enqueue_new(rig)
    outcome = await rig.delivery.handle(original.content, queue_message_id=original.id)
    assert outcome.action == "poisoned"
    poisoned = await pull(rig.queue, rig.queue.poison_queue_name)
    assert poisoned is not None
    await rig.operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    return message_id, original, poisoned


async def deliver_all(rig: Rig) -> list[str]:
    """Handle every visible queue message, as the trigger would; the outcomes in order."""
    actions: list[str] = []
    while (message := await pull(rig.queue)) is not None:
        outcome = await rig.delivery.handle(message.content, queue_message_id=message.id)
        actions.append(outcome.action)
    return actions


async def poison(rig: Rig, message_id: str, request: dict[str, Any] | None = None) -> None:
    """Enqueue a message that Graph refuses for good and deliver it: it fails, and its report
    waits in the poison queue (the poison trigger has not run)."""
    rig.transport.failures.append(DENIED)
    document = sample_request() if request is None else request
    await rig.queue.enqueue(Envelope(id=message_id, created_at=datetime.now(UTC), request=document))
    assert await deliver_all(rig) == ["poisoned"]


async def poison_report(rig: Rig, message_id: str) -> Any:
    """:func:`poison`, then take its report from the poison queue (as the poison trigger would)."""
    await poison(rig, message_id)
    report = await pull(rig.queue, rig.queue.poison_queue_name)
    assert report is not None
    return report
