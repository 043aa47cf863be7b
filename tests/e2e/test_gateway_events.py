"""Outcome events end to end: the real function_app.py in dev host processes, on Azurite, with
the Graph, identity and Event Grid stand-ins. Every state path emits its events in order, to the
events queue and to the Event Grid topic alike; a worker killed between the write of ``sent`` and
its publish still gets ``sent`` out, through the worker that replaces it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from crash_support import (
    LEASE_SECONDS,
    start_crashing_host,
    start_successor,
    wait_for_crash,
    wait_for_status,
)
from event_support import EventQueueReader, assert_valid_event, kinds, unique
from gateway_host import DevHost

from standins.processes import (
    EventGridStandInProcess,
    StandInProcesses,
    start_eventgrid_standin,
)
from support import sample_request, wait_until

MESSAGES = "/api/v1/messages"


@pytest.fixture(scope="module")
def topic() -> Iterator[EventGridStandInProcess]:
    with start_eventgrid_standin() as processes:
        yield processes


def events_env(topic: EventGridStandInProcess | None = None) -> dict[str, str]:
    """Both sinks on (the Event Grid one when ``topic``), on a queue of this host's own."""
    env = {"MAILGW_EVENTS_QUEUE": f"ev-{uuid.uuid4().hex[:12]}"}
    if topic is not None:
        env["MAILGW_EVENTGRID_ENDPOINT"] = topic.endpoint
    return env


@pytest.fixture(scope="module")
def host(
    start_devhost: Callable[..., DevHost],
    standins: StandInProcesses,
    topic: EventGridStandInProcess,
) -> DevHost:
    # The Graph group's identity stand-in signs with the key the Event Grid stand-in checks.
    return start_devhost(
        DEVHOST_QUEUE_LEASE_SECONDS=LEASE_SECONDS,
        WEBSITE_HOSTNAME="mailgw-e2e.azurewebsites.net",
        **standins.gateway_env(),
        **events_env(topic),
    )


@pytest.fixture(scope="module")
def events(host: DevHost, azurite: Any) -> EventQueueReader:
    return EventQueueReader(azurite.connection_string, host.env["MAILGW_EVENTS_QUEUE"])


def send(host: DevHost, **fields: Any) -> str:
    response = host.post_json(MESSAGES, sample_request(**fields))
    assert response.status == 202, response.body
    return str(response.json()["id"])


def wait_for_kinds(
    events: EventQueueReader, topic: EventGridStandInProcess, message_id: str, expected: list[str]
) -> list[Mapping[str, Any]]:
    """Both sinks carry exactly ``expected`` for the message, in that order (de-duplicated by
    event id, as consumers do); returns the queue's events."""

    def enough(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return found if len(kinds(found, message_id)) >= len(expected) else []

    found = wait_until(lambda: enough(events.of(message_id)), timeout=60, what=str(expected))
    assert kinds(found) == expected
    on_topic = wait_until(lambda: enough(topic.events()), timeout=60, what="Event Grid's")
    assert kinds(on_topic, message_id) == expected
    for event in on_topic:
        assert_valid_event(event)
    assert {e["id"] for e in on_topic if e["data"]["id"] == message_id} == {e["id"] for e in found}
    return unique(found)


def test_a_sent_message_reports_accepted_then_sent(
    host: DevHost, events: EventQueueReader, topic: EventGridStandInProcess
) -> None:
    message_id = send(host, metadata={"orderId": "42"})
    accepted, sent = wait_for_kinds(events, topic, message_id, ["accepted", "sent"])
    assert accepted["source"] == sent["source"] == "https://mailgw-e2e.azurewebsites.net"
    assert sent["data"]["metadata"] == {"orderId": "42"}
    assert (sent["data"]["transport"], sent["data"]["attempt"]) == ("graph", 1)
    requests = topic.eventgrid.records("requests")
    assert {r["contentType"] for r in requests} == {
        "application/cloudevents-batch+json; charset=utf-8"
    }
    assert {r["audience"] for r in requests} == {"https://eventgrid.azure.net"}


def test_a_scheduled_message_reports_accepted_scheduled_sent(
    host: DevHost, events: EventQueueReader, topic: EventGridStandInProcess
) -> None:
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    message_id = send(host, sendAt=due)
    found = wait_for_kinds(events, topic, message_id, ["accepted", "scheduled", "sent"])
    assert found[1]["data"]["sendAt"] == found[0]["data"]["sendAt"]
    assert found[2]["time"] >= due.replace("+00:00", "Z")[:19]


def test_a_transient_failure_reports_retrying_with_its_code_then_sent(
    host: DevHost,
    standins: StandInProcesses,
    events: EventQueueReader,
    topic: EventGridStandInProcess,
) -> None:
    mailbox = f"busy-{uuid.uuid4().hex[:8]}@fabrikam.com"
    standins.graph.add_faults(
        {
            "status": 503,
            "code": "ServiceUnavailable",
            "message": "busy",
            "retryAfter": "1",
            "mailbox": mailbox,
        }
    )
    message_id = send(host, **{"from": mailbox})
    _, retrying, sent = wait_for_kinds(events, topic, message_id, ["accepted", "retrying", "sent"])
    assert retrying["data"]["lastError"]["code"] == "graph/ServiceUnavailable"
    assert retrying["data"]["nextAttemptAt"] > retrying["time"]
    assert sent["data"]["attempt"] == 2


def test_failed_then_replayed_then_sent(
    host: DevHost,
    standins: StandInProcesses,
    events: EventQueueReader,
    topic: EventGridStandInProcess,
) -> None:
    mailbox = f"denied-{uuid.uuid4().hex[:8]}@fabrikam.com"
    standins.graph.add_faults(
        {"status": 403, "code": "ErrorSendAsDenied", "message": "no", "mailbox": mailbox}
    )
    message_id = send(host, **{"from": mailbox})
    wait_for_status(host, message_id, "failed")
    found = wait_for_kinds(events, topic, message_id, ["accepted", "failed"])
    assert found[1]["data"]["lastError"]["code"] == "graph/ErrorSendAsDenied"
    assert "Send As" in found[1]["data"]["lastError"]["hint"]
    replay = host.request("POST", f"{MESSAGES}/{message_id}/replay")
    assert replay.status == 202, replay.body
    found = wait_for_kinds(events, topic, message_id, ["accepted", "failed", "replayed", "sent"])
    assert (found[2]["data"]["replay"], found[3]["data"]["replay"]) == (1, 1)


def test_a_producers_message_and_an_invalid_one(
    host: DevHost, events: EventQueueReader, topic: EventGridStandInProcess
) -> None:
    client = QueueClient.from_connection_string(
        host.env["AzureWebJobsStorage"], host.queue, message_encode_policy=TextBase64EncodePolicy()
    )
    try:
        good = client.send_message(json.dumps(sample_request(metadata={"batch": "7"})))
        bad = client.send_message(json.dumps(sample_request(to=["not an address"])))
    finally:
        client.close()
    accepted, _ = wait_for_kinds(events, topic, good.id, ["accepted", "sent"])
    assert accepted["data"]["metadata"] == {"batch": "7"}
    (failed,) = wait_for_kinds(events, topic, bad.id, ["failed"])  # never accepted
    assert failed["data"]["lastError"]["code"] == "mailgw/invalid-request"


def test_a_worker_killed_between_the_send_and_the_publish_still_reports_sent(
    start_devhost: Callable[..., DevHost], azurite: Any
) -> None:
    """Killed right after the transport took the message: neither `sent` written nor published.
    The successor resumes the message (the outbox rewrites the same file) and reports it."""
    crashing = start_crashing_host(start_devhost, "after_send", **events_env())
    events = EventQueueReader(azurite.connection_string, crashing.env["MAILGW_EVENTS_QUEUE"])
    message_id = send(crashing)
    wait_for_crash(crashing)
    assert kinds(events.of(message_id)) == ["accepted"]  # it died before publishing `sent`

    successor = start_successor(start_devhost, crashing)
    wait_for_status(successor, message_id, "sent")
    wait_until(
        lambda: kinds(events.of(message_id)) == ["accepted", "sent"],
        timeout=60,
        what="the sent event from the successor",
    )
    sent = unique(events.of(message_id))[-1]
    assert sent["data"]["attempt"] == 2  # the resumed attempt


def test_a_worker_killed_after_recording_sent_leaves_it_published_or_republished(
    start_devhost: Callable[..., DevHost], azurite: Any
) -> None:
    """Killed after `sent` was written (and published alongside): the redelivered copy finds the
    message sent, sends nothing, and publishes `sent` again with the same id."""
    crashing = start_crashing_host(start_devhost, "after_record", **events_env())
    events = EventQueueReader(azurite.connection_string, crashing.env["MAILGW_EVENTS_QUEUE"])
    message_id = send(crashing)
    wait_for_crash(crashing)
    successor = start_successor(start_devhost, crashing)
    assert wait_for_status(successor, message_id, "sent")["attempts"] == 1  # not sent again

    def republished() -> bool:
        return len([e for e in events.of(message_id) if e["type"].endswith(".sent")]) >= 2

    wait_until(republished, timeout=60, what="sent, republished by the redelivered copy")
    assert kinds(events.of(message_id)) == ["accepted", "sent"]  # one event, twice
