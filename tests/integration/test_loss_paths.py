"""Issue 9's loss paths, each on real Azurite through the real core: an accepted message is sent
once, or recorded as failed with its payload kept; nothing a message contains can crash a function
into a queue nobody reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailgw.delivery import Delivery
from mailgw.intake import Intake
from mailgw.models import MessageStatus
from mailgw.queue import MailQueue
from mailgw.store import StateStore
from mailgw.transports import render
from support import pull, sample_request


async def submit(intake: Intake, body: dict[str, Any], **headers: Any) -> Any:
    result = await intake.submit(
        json.dumps(body).encode(), content_type="application/json", **headers
    )
    await intake.drain()
    return result


async def test_a_render_failure_is_a_permanent_failure_with_its_reason_not_a_crash(
    intake: Intake,
    mail_queue: MailQueue,
    delivery: Delivery,
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("the renderer refuses this")

    monkeypatch.setattr(render, "render_mime", refuse)
    result = await submit(intake, sample_request())
    message = await pull(mail_queue)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "poisoned"
    record = await store.get(result.id)
    assert record is not None and record.status is MessageStatus.failed
    assert record.last_error is not None
    assert record.last_error.code == "mailgw/render-failed"
    assert "the renderer refuses this" in record.last_error.message
