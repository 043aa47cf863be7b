"""A delay becomes the message's initial invisibility in whole seconds, rounded up: a server's
Retry-After (or a sendAt) is never undercut by a fraction, and never beyond the queue's 7 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailgw.models import Envelope
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from support import DEAD_STORAGE, TEST_SEAL, sample_request


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [
        (None, 0),
        (timedelta(seconds=1.2), 2),
        (timedelta(seconds=30), 30),
        (timedelta(days=9), 7 * 24 * 3600),
    ],
)
async def test_the_delay_is_rounded_up_to_whole_seconds(
    delay: timedelta | None, seconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": DEAD_STORAGE})
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    sent: list[int] = []

    async def capture(queue_name: str, text: str, visibility: int) -> Any:
        sent.append(visibility)
        return type("Sent", (), {"id": "q1", "pop_receipt": "r", "expires_on": None})()

    monkeypatch.setattr(queue, "_send", capture)
    envelope = Envelope(id="m1", created_at=datetime.now(UTC), request=sample_request())
    await queue.enqueue(envelope, delay=delay)
    assert sent == [seconds]
