"""Sandbox messages on real Azurite: everything runs but the transport."""

from __future__ import annotations

import json

import pytest
from rigs import CountingTransport, outcomes

from mailgw.delivery import Delivery
from mailgw.intake import Intake
from mailgw.models import MessageStatus
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports import sandbox
from mailgw.transports.errors import DeliveryError
from support import pull, sample_request


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport([])


@pytest.fixture
def delivery(
    settings: Settings, mail_queue: MailQueue, store: StateStore, transport: CountingTransport
) -> Delivery:
    return Delivery(settings, mail_queue, transport, store)


async def _deliver_one(intake: Intake, delivery: Delivery, **fields: object) -> str:
    accepted = await intake.submit(json.dumps(sample_request(**fields)).encode())
    await intake.drain()
    copy = await pull(delivery.queue)
    assert copy is not None
    await delivery.handle(copy.content, queue_message_id=copy.id)
    return accepted.id


async def test_a_sandbox_message_is_sent_without_the_transport(
    intake: Intake, delivery: Delivery, transport: CountingTransport, store: StateStore
) -> None:
    message_id = await _deliver_one(intake, delivery, sandbox=True)
    assert transport.sent == []
    record = await store.get(message_id)
    assert record is not None
    assert (record.status, record.sandbox, record.attempts) == (MessageStatus.sent, True, 1)
    assert outcomes(record) == ["queued", "sending", "sent"]
    assert record.public(record.updated_at)["sandbox"] is True
    plain = await _deliver_one(intake, delivery)
    assert [m.id for m in transport.sent] == [plain]


async def test_a_sandbox_message_the_renderer_refuses_fails_as_a_real_one_would(
    intake: Intake,
    delivery: Delivery,
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refusal = DeliveryError("mailgw/render-failed", "no", transient=False, hint="report it")

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise refusal

    monkeypatch.setattr(sandbox, "rendered_bytes", refuse)
    message_id = await _deliver_one(intake, delivery, sandbox=True)
    record = await store.get(message_id)
    assert record is not None and record.status is MessageStatus.failed
    assert record.last_error is not None and record.last_error.code == "mailgw/render-failed"
