"""Over budget means wait, not fail: delivery with pacing on, wired as in production, on Azurite."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from event_support import EventQueueReader, kinds
from rigs import CountingTransport

from mailgw.models import Envelope, MessageStatus
from mailgw.services import Services
from mailgw.transports.errors import transient
from support import pull, sample_request

JSON = "application/json"


@pytest.fixture
def paced_services(make_services: Callable[..., Services]) -> Callable[..., Services]:
    """The core as the Function App wires it, with a daily budget of 6 recipients per mailbox
    and a transport that counts what it sends."""

    def make(**overrides: str) -> Services:
        made = make_services(MAILGW_MAILBOX_DAILY_RECIPIENTS="6", **overrides)
        made.__dict__["transport"] = CountingTransport([])
        return made

    return make


@pytest.fixture
def services(paced_services: Callable[..., Services]) -> Services:
    return paced_services()


async def submit(services: Services, **fields: Any) -> str:
    body = json.dumps(sample_request(**fields)).encode()
    return (await services.intake.submit(body, content_type=JSON)).id


async def deliver_next(services: Services) -> Any:
    message = await pull(services.queue)
    assert message is not None, "the queue is empty"
    return await services.delivery.handle(
        message.content, queue_message_id=message.id, dequeue_count=message.dequeue_count
    )


async def test_over_the_daily_budget_a_message_waits_scheduled_not_failed(
    services: Services, azurite: Any
) -> None:
    ids = [await submit(services) for _ in range(5)]  # 2 recipients each, budget 6
    outcomes = [await deliver_next(services) for _ in ids]
    assert [o.action for o in outcomes] == ["sent"] * 3 + ["deferred"] * 2
    transport = services.transport
    assert isinstance(transport, CountingTransport) and len(transport.sent) == 3

    now = datetime.now(UTC)
    for message_id in ids[3:]:
        record = await services.store.get(message_id)
        assert record is not None
        state = record.public(now)
        assert state["status"] == "scheduled"
        assert state["reason"] == "mailbox daily recipient limit"
        next_attempt = datetime.fromisoformat(state["nextAttemptAt"])
        # the first 15-minute bucket leaves the 24 h window: a day from now, give or take a bucket
        assert (
            now + timedelta(hours=23, minutes=44)
            < next_attempt
            <= now + timedelta(hours=24, minutes=16)
        )
        assert state["attempts"] == 0  # a deferral is not an attempt
        assert state["history"][-1]["outcome"] == "deferred"
        assert state["history"][-1]["code"] == "pacing/daily"
        # after its wait, it reads as queued (due), without the pacing members
        later = record.public(next_attempt + timedelta(seconds=1))
        assert later["status"] == "queued" and "reason" not in later
    sent_state = await services.store.get(ids[0])
    assert sent_state is not None and "reason" not in sent_state.public(now)
    assert await pull(services.queue) is None  # both copies wait, invisible

    events = EventQueueReader(azurite.connection_string, services.settings.events_queue or "")
    assert kinds(events.of(ids[4]), ids[4]) == ["accepted", "deferred"]
    (deferred,) = [e for e in events.of(ids[4]) if e["type"] == "mailgw.message.deferred"]
    assert deferred["data"]["status"] == "scheduled"
    assert deferred["data"]["reason"] == "mailbox daily recipient limit"
    assert deferred["data"]["nextAttemptAt"]


async def test_a_deferred_message_is_neither_aged_nor_charged_an_attempt(
    paced_services: Callable[..., Services],
) -> None:
    """A burst that waited a day must not be poisoned for its age by a transient failure after."""
    services = paced_services(MAILGW_MAX_AGE_SECONDS="3600")
    services.__dict__["transport"] = CountingTransport([transient("graph/http-503", "busy")])
    message_id = await submit(services)
    message = await pull(services.queue)
    envelope = Envelope.model_validate_json(message.content)
    # as if it had been accepted two days ago and deferred until a moment ago
    long_ago = datetime.now(UTC) - timedelta(days=2)
    waited = envelope.model_copy(
        update={"created_at": long_ago, "paced_until": datetime.now(UTC) - timedelta(seconds=5)}
    )
    await services.queue.enqueue(waited)
    outcome = await deliver_next(services)
    assert outcome.action == "retry"  # not poisoned as 48 h old
    record = await services.store.get(message_id)
    assert record is not None and record.status is MessageStatus.retrying


async def test_an_over_budget_burst_from_one_mailbox_does_not_hold_up_another(
    services: Services,
) -> None:
    burst = [await submit(services, **{"from": "a@contoso.com"}) for _ in range(40)]
    other = await submit(services, **{"from": "b@contoso.com"})
    outcomes: dict[str, str] = {}
    for _ in range(len(burst) + 1):
        outcome = await deliver_next(services)
        outcomes[outcome.message_id] = outcome.action
    assert outcomes[other] == "sent"  # B's budget is its own
    assert sum(1 for i in burst if outcomes[i] == "sent") == 3
    assert sum(1 for i in burst if outcomes[i] == "deferred") == 37
    assert await pull(services.queue) is None


async def test_a_deferred_message_can_still_be_canceled(services: Services) -> None:
    for _ in range(3):
        await submit(services)
        await deliver_next(services)
    waiting = await submit(services)
    assert (await deliver_next(services)).action == "deferred"
    record = await services.operations.cancel(waiting)
    assert record.status is MessageStatus.canceled
