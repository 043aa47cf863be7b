"""Outcome events through the real core on Azurite: the events queue, the Event Grid topic (the
stand-in, with azure-eventgrid and azure-identity's managed identity), what is kept when a sink
fails, and the republishing that makes up for it."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from event_support import EventQueueReader, assert_valid_event, kinds
from rigs import CountingTransport

from mailgw.events.pending import PENDING_PARTITION, backoff
from mailgw.ids import new_message_id
from mailgw.models import Envelope
from mailgw.services import Services
from mailgw.state.events import EventKind
from mailgw.transports.errors import transient
from standins.eventgrid import BATCH_CONTENT_TYPE, EventGridStandIn
from standins.identity import IdentityStandIn
from support import pull, sample_request, wait_until_async

JSON = "application/json"


@pytest.fixture
async def topic(identity: IdentityStandIn) -> AsyncIterator[EventGridStandIn]:
    async with EventGridStandIn() as server:
        yield server


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


def reader(services: Services, azurite: Any) -> EventQueueReader:
    assert services.settings.events_queue
    return EventQueueReader(azurite.connection_string, services.settings.events_queue)


async def submit(services: Services, headers: dict[str, str] | None = None, **fields: Any) -> str:
    body = json.dumps(sample_request(**fields)).encode()
    key = (headers or {}).get("Idempotency-Key")
    result = await services.intake.submit(body, content_type=JSON, idempotency_key=key)
    await services.intake.drain()
    return result.id


async def deliver_next(services: Services, dequeue_count: int = 1) -> Any:
    """Deliver the next message of the queue once it is visible (a scheduled one: at sendAt)."""
    message = await wait_until_async(lambda: pull(services.queue), timeout=15, what="a message")
    return await services.delivery.handle(
        message.content, queue_message_id=message.id, dequeue_count=dequeue_count
    )


async def test_a_sent_message_reports_accepted_then_sent_on_the_events_queue(
    services: Services, azurite: Any, raw_queue: Any
) -> None:
    message_id = await submit(services, metadata={"orderId": "42"})
    outcome = await deliver_next(services)
    assert outcome.action == "sent"
    events = reader(services, azurite).of(message_id)
    assert kinds(events) == ["accepted", "sent"]
    accepted, sent = events
    assert accepted["data"]["metadata"] == sent["data"]["metadata"] == {"orderId": "42"}
    assert sent["source"] == "https://mailgw.example.net"
    assert sent["subject"] == f"messages/{message_id}"
    assert (sent["data"]["status"], sent["data"]["attempt"]) == ("sent", 1)
    assert accepted["time"] <= sent["time"]

    # Stored as the Functions host reads a queue: Base64 of the event's UTF-8 JSON.
    await submit(services)
    assert services.settings.events_queue
    (raw,) = await raw_queue(services.settings.events_queue).peek_messages(max_messages=1)
    assert_valid_event(json.loads(base64.b64decode(raw.content)))


async def test_a_keyed_message_is_accepted_once_however_often_it_is_posted(
    services: Services, azurite: Any
) -> None:
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    ids = {await submit(services, headers) for _ in range(3)}
    (message_id,) = ids
    assert await deliver_next(services) is not None
    events = reader(services, azurite).of(message_id)
    assert kinds(events) == ["accepted", "sent"]
    assert len([e for e in events if e["type"].endswith("accepted")]) == 1  # no republish


async def test_a_producers_message_is_accepted_when_delivery_first_takes_it(
    services: Services, azurite: Any
) -> None:
    message_id = new_message_id()
    envelope = Envelope(id=message_id, created_at=datetime.now(UTC), request=sample_request())
    await services.queue.enqueue(envelope)
    assert (await deliver_next(services)).action == "sent"
    assert kinds(reader(services, azurite).of(message_id)) == ["accepted", "sent"]


async def test_scheduled_retrying_failed_replayed_and_sent_in_order(
    make_services: Callable[..., Services], azurite: Any
) -> None:
    services = make_services()
    transport = CountingTransport([transient("ServiceUnavailable", "busy")])
    services.__dict__["transport"] = transport  # a transport that fails as scripted
    services.delivery.transport = transport
    due = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    message_id = await submit(services, sendAt=due)
    assert (await deliver_next(services)).action == "retry"
    # the retry copy waits for its backoff: take it at once
    message = await services.queue.queue().receive_message(visibility_timeout=1)
    assert message is None  # still invisible, as the backoff says
    events = reader(services, azurite).of(message_id)
    assert kinds(events) == ["accepted", "scheduled", "retrying"]
    retrying = events[-1]["data"]
    assert retrying["lastError"]["code"].endswith("ServiceUnavailable")
    assert datetime.fromisoformat(retrying["nextAttemptAt"]) > datetime.now(UTC)


async def test_failed_then_replayed_then_sent(services: Services, azurite: Any) -> None:
    from rigs import DENIED

    transport = CountingTransport([DENIED])
    services.delivery.transport = transport
    message_id = await submit(services)
    assert (await deliver_next(services)).action == "poisoned"
    poisoned = await pull(services.queue, services.queue.poison_queue_name)
    await services.operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    record = await services.operations.replay(message_id)
    assert record.replays == 1
    assert (await deliver_next(services)).action == "sent"
    events = reader(services, azurite).of(message_id)
    # the poison recorder reports the failure again (same id): consumers see it once
    assert kinds(events) == ["accepted", "failed", "replayed", "sent"]
    failed = next(e for e in events if e["type"].endswith("failed"))
    assert failed["data"]["lastError"]["code"].endswith("ErrorSendAsDenied")
    assert "Send As" in failed["data"]["lastError"]["hint"]


async def test_a_redelivered_copy_of_a_sent_message_publishes_sent_again_with_the_same_id(
    services: Services, azurite: Any
) -> None:
    """What a worker killed between the write and the publish leaves: its queue message comes
    back and finds the message sent. (tests/e2e kills a real worker there.)"""
    message_id = await submit(services)
    message = await pull(services.queue)
    assert message is not None
    for count in (1, 2):
        await services.delivery.handle(
            message.content, queue_message_id=message.id, dequeue_count=count
        )
    events = reader(services, azurite).of(message_id)
    sent = [e for e in events if e["type"] == EventKind.sent.type]
    assert len(sent) == 2 and sent[0] == sent[1]


# --- Event Grid -------------------------------------------------------------------------------


async def test_event_grid_takes_cloudevent_batches_signed_with_the_managed_identity(
    make_services: Callable[..., Services],
    topic: EventGridStandIn,
    identity: IdentityStandIn,
    azurite: Any,
) -> None:
    services = make_services(MAILGW_EVENTGRID_ENDPOINT=topic.endpoint, MAILGW_EVENTS_QUEUE="")
    ids = [await submit(services) for _ in range(3)]
    for _ in ids:
        assert (await deliver_next(services)).action == "sent"
    taken = topic.taken()
    for message_id in ids:
        assert kinds(taken, message_id) == ["accepted", "sent"]
    for event in taken:
        assert_valid_event(event)
    assert {r.content_type for r in topic.requests} == {BATCH_CONTENT_TYPE}
    assert {r.audience for r in topic.requests} == {"https://eventgrid.azure.net"}
    assert all(r.status == 200 for r in topic.requests)
    assert identity.tokens_for("https://eventgrid.azure.net")


async def test_concurrent_publishes_share_event_grid_requests(
    make_services: Callable[..., Services], topic: EventGridStandIn
) -> None:
    services = make_services(MAILGW_EVENTGRID_ENDPOINT=topic.endpoint, MAILGW_EVENTS_QUEUE="")
    records = [
        await services.store.transition(new_message_id(), lambda _: _accepted(services))
        for _ in range(20)
    ]
    await asyncio.gather(*(services.events.accepted(r) for r in records if r))
    assert len(topic.taken()) == 20
    assert len(topic.requests) < 20  # batched while a request was in flight


def _accepted(services: Services) -> Any:
    from mailgw.models import MessageStatus, SendRequest
    from mailgw.state import machine

    request = SendRequest.model_validate(sample_request())
    return machine.accepted(
        new_message_id(),
        MessageStatus.queued,
        request,
        now=datetime.now(UTC),
        retention=services.settings.retention,
    )


async def test_throttled_event_grid_never_holds_up_mail_and_gets_its_events_later(
    make_services: Callable[..., Services], topic: EventGridStandIn, azurite: Any
) -> None:
    services = make_services(MAILGW_EVENTGRID_ENDPOINT=topic.endpoint)
    now = [datetime.now(UTC)]
    pending = services.events.pending
    assert pending is not None
    pending.clock = lambda: now[0]
    events_queue = reader(services, azurite)
    topic.fail_next(429, 2, retry_after="10")  # accepted and sent, both throttled
    message_id = await submit(services)
    assert (await deliver_next(services)).action == "sent"  # mail went on regardless
    # the queue sink took them at once; Event Grid's share waits in the pending rows
    assert kinds(events_queue.of(message_id)) == ["accepted", "sent"]
    assert topic.taken() == []
    rows = [r async for r in _pending_rows(services)]
    assert {r["sinks"] for r in rows} == {"eventgrid"}
    assert len(rows) == 2

    assert await services.events.republish_pending() == 0  # not due yet: backoff
    topic.fail_next(503)  # the first republish is refused again: it backs off further
    now[0] += backoff(1)
    assert await services.events.republish_pending() == 0  # `sent` waits behind `accepted`
    rows = [r async for r in _pending_rows(services)]
    assert sorted(r["attempts"] for r in rows) == [1, 2]
    assert max(r["due"] for r in rows) >= now[0] + backoff(2) - timedelta(seconds=1)

    now[0] += backoff(2)
    assert await services.events.republish_pending() == 2
    assert [r async for r in _pending_rows(services)] == []
    assert kinds(topic.taken(), message_id) == ["accepted", "sent"]  # oldest first
    assert len(events_queue.of(message_id)) == 2  # the queue got each once


async def test_a_token_for_another_audience_is_refused_and_the_event_kept(
    make_services: Callable[..., Services], identity: IdentityStandIn
) -> None:
    async with EventGridStandIn(audience="https://management.azure.com") as wrong:
        services = make_services(MAILGW_EVENTGRID_ENDPOINT=wrong.endpoint, MAILGW_EVENTS_QUEUE="")
        await submit(services)
        assert [r.status for r in wrong.requests] == [401]
        assert "Invalid audience" in wrong.requests[0].error
        assert len([r async for r in _pending_rows(services)]) == 1


async def _pending_rows(services: Services) -> AsyncIterator[dict[str, Any]]:
    query = f"PartitionKey eq '{PENDING_PARTITION}'"
    async for entity in services.store.table().query_entities(query):
        yield dict(entity)


async def test_a_canceled_message_reports_accepted_scheduled_then_canceled(
    services: Services, azurite: Any
) -> None:
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    message_id = await submit(services, sendAt=send_at)
    canceled = await services.operations.cancel(message_id)
    assert canceled.status.value == "canceled"
    events_queue = reader(services, azurite)
    events = events_queue.of(message_id)
    assert kinds(events) == ["accepted", "scheduled", "canceled"]
    assert events[-1]["data"]["status"] == "canceled"
    for event in events:
        assert_valid_event(event)
    # canceling again changes nothing and reports nothing new
    await services.operations.cancel(message_id)
    assert kinds(events_queue.of(message_id)) == ["accepted", "scheduled", "canceled"]


async def test_a_sandbox_message_reports_as_a_real_send_and_says_it_is_one(
    services: Services, azurite: Any
) -> None:
    message_id = await submit(services, sandbox=True, metadata={"orderId": "7"})
    outcome = await deliver_next(services)
    assert outcome.action == "sent"
    events = reader(services, azurite).of(message_id)
    assert kinds(events) == ["accepted", "sent"]
    for event in events:
        assert_valid_event(event)
        assert event["data"]["sandbox"] is True
        assert event["data"]["metadata"] == {"orderId": "7"}
    real = await submit(services)
    await deliver_next(services)
    assert all("sandbox" not in e["data"] for e in reader(services, azurite).of(real))
