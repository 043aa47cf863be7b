"""Exactly once, end to end: the real function_app.py in dev host processes on Azurite.

Idempotent POSTs over HTTP, the status endpoint, worker crashes at each fail point of delivery
(``MAILGW_FAULT_INJECTION``) followed by a fresh host, and poison → failed → replay → sent against
the Graph stand-in. Every host uses a 3 s queue lease, so a dead worker's message returns quickly.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from crash_support import (
    LEASE_SECONDS,
    failure_events,
    outcomes,
    start_crashing_host,
    start_successor,
    status_of,
    wait_for_crash,
    wait_for_status,
)
from gateway_host import DevHost

from standins.processes import StandInProcesses
from support import sample_request, wait_until

MESSAGES = "/api/v1/messages"


@pytest.fixture(scope="module")
def host(start_devhost: Callable[..., DevHost]) -> DevHost:
    return start_devhost(DEVHOST_QUEUE_LEASE_SECONDS=LEASE_SECONDS)


def unique_subject(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def emls_with_subject(host: DevHost, subject: str) -> list[str]:
    if not host.outbox.exists():
        return []
    return sorted(
        path.name
        for path in host.outbox.glob("*.eml")
        if f"Subject: {subject}".encode() in path.read_bytes()
    )


def queue_depth(host: DevHost, name: str) -> int:
    client = QueueClient.from_connection_string(host.env["AzureWebJobsStorage"], name)
    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0
    finally:
        client.close()


def queue_message_id(host: DevHost) -> str:
    """The queue message id the (single-message) host was handed, from its trigger log."""
    found = re.search(r"MessageId: ([0-9a-f-]+), DequeueCount: 1", host.log())
    assert found, host.log()
    return found.group(1)


def delivered(standins: StandInProcesses, subject: str) -> list[dict[str, Any]]:
    return [d for d in standins.graph.delivered() if d["message"].get("subject") == subject]


def assert_sent_once(state: dict[str, Any]) -> None:
    steps = outcomes(state)
    assert steps.count("sent") == 1, steps
    assert steps[-1] == "sent", steps


# --- idempotent POST over HTTP -------------------------------------------------------------------


def test_sequential_posts_with_one_key_answer_the_same_202_and_send_once(host: DevHost) -> None:
    subject = unique_subject("idempotent")
    key = f"order-{uuid.uuid4()}"
    # A client retrying one request (a timeout, a lost answer) five times in a row.
    responses = [
        host.post_json(MESSAGES, sample_request(subject=subject), {"Idempotency-Key": key})
        for _ in range(5)
    ]
    assert [r.status for r in responses] == [202] * 5, [r.body[:200] for r in responses]
    first = responses[0]
    assert all(r.json() == first.json() for r in responses)
    assert {r.headers["location"] for r in responses} == {first.json()["statusUrl"]}
    message_id = first.json()["id"]

    state = wait_for_status(host, message_id, "sent")
    assert_sent_once(state)
    assert outcomes(state).count("sending") == 1  # the retries never became attempts
    assert state["attempts"] == 1
    assert emls_with_subject(host, subject) == [f"{message_id}.eml"]

    other = host.post_json(
        MESSAGES, sample_request(subject=subject + " changed"), {"Idempotency-Key": key}
    )
    assert other.status == 422
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["type"] == "urn:mailgw:problem:idempotency-key-reused"


def test_20_concurrent_posts_with_one_key_make_one_message(host: DevHost) -> None:
    subject = unique_subject("burst")
    key = f"burst-{uuid.uuid4()}"
    body = sample_request(subject=subject)
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(lambda _: host.post_json(MESSAGES, body, {"Idempotency-Key": key}), range(20))
        )
    assert [r.status for r in responses] == [202] * 20, [
        (r.status, r.body[:300]) for r in responses if r.status != 202
    ]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    (message_id,) = ids

    state = wait_for_status(host, message_id, "sent")
    assert_sent_once(state)
    # Copies of a keyed message share its id: a late one finds it sent (see the integration
    # tests), so one attempt in the history is the proof that it went out once.
    assert outcomes(state).count("sending") == 1
    assert state["attempts"] == 1
    assert emls_with_subject(host, subject) == [f"{message_id}.eml"]


# --- GET /api/v1/messages/{id} ------------------------------------------------------------------


def test_status_is_readable_right_after_202_and_ends_sent(host: DevHost) -> None:
    subject = unique_subject("status")
    ids = []
    for n in range(5):
        response = host.post_json(
            MESSAGES, sample_request(subject=f"{subject} {n}", metadata={"n": str(n)})
        )
        assert response.status == 202
        message_id = response.json()["id"]
        ids.append(message_id)
        # A client following Location at once must not be told the message is unknown.
        now = host.request("GET", response.headers["location"])
        assert now.status == 200, (n, now.status, now.body)
        assert now.json()["status"] in ("queued", "sending", "sent")

    for n, message_id in enumerate(ids):
        state = wait_for_status(host, message_id, "sent")
        assert state["id"] == message_id
        assert state["attempts"] == 1
        assert state["metadata"] == {"n": str(n)}
        assert state["lastError"] is None
        assert state["replays"] == 0
        assert outcomes(state) == ["queued", "sending", "sent"]
        assert state["createdAt"] <= state["updatedAt"]
    response = host.request("GET", f"{MESSAGES}/{ids[0]}")
    assert response.headers["content-type"].startswith("application/json")


def test_unknown_message_is_404_problem(host: DevHost) -> None:
    response = host.request("GET", f"{MESSAGES}/{uuid.uuid4()}")
    assert response.status == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 404
    assert problem["type"] == "urn:mailgw:problem:not-found"
    assert problem["title"] and problem["detail"]
    replay = host.request("POST", f"{MESSAGES}/{uuid.uuid4()}/replay")
    assert replay.status == 404
    assert replay.json()["type"] == "urn:mailgw:problem:not-found"


def test_invalid_producer_message_logs_one_failure_event(host: DevHost) -> None:
    client = QueueClient.from_connection_string(
        host.env["AzureWebJobsStorage"],
        host.queue,
        message_encode_policy=TextBase64EncodePolicy(),
    )
    try:
        sent = client.send_message(json.dumps(sample_request(to=["not an address"])))
    finally:
        client.close()
    state = wait_for_status(host, sent.id, "failed")
    assert state["lastError"]["code"] == "mailgw/invalid-request"
    wait_until(lambda: failure_events(host, sent.id), timeout=30, what="the failure event")
    wait_until(
        lambda: queue_depth(host, f"{host.queue}-poison") == 0, timeout=30, what="poison drained"
    )
    (event,) = failure_events(host, sent.id)
    assert event["code"] == "mailgw/invalid-request"
    assert event["from"] == "noreply@contoso.com"  # what the payload claims, though invalid
    assert "docs/send-request.schema.json" in event["hint"]  # names the file with the rules


def crash_with_one_message(
    start_devhost: Callable[..., DevHost], fault: str, label: str, **env: str
) -> tuple[DevHost, str, str]:
    """A host set to crash at ``fault``, sent one message (a fresh subject); returns once it
    has crashed: the host, the subject and the message id."""
    crashing = start_crashing_host(start_devhost, fault, **env)
    subject = unique_subject(label)
    response = crashing.post_json(MESSAGES, sample_request(subject=subject))
    assert response.status == 202
    message_id: str = response.json()["id"]
    wait_for_crash(crashing)
    return crashing, subject, message_id


def crash_and_restart(
    start_devhost: Callable[..., DevHost], fault: str, label: str, *, written: bool
) -> tuple[DevHost, DevHost, str, str]:
    """An outbox host crashed at ``fault`` with one message, whose file the outbox holds already
    or not yet (``written``), then its successor on the same storage and outbox: the crashed
    host, the successor, the subject and the message id."""
    crashing, subject, message_id = crash_with_one_message(start_devhost, fault, label)
    assert emls_with_subject(crashing, subject) == ([f"{message_id}.eml"] if written else [])
    return crashing, start_successor(start_devhost, crashing), subject, message_id


# --- crashes at each fail point -----------------------------------------------------------------


def test_crash_after_record_is_acknowledged_without_sending_again(
    start_devhost: Callable[..., DevHost],
) -> None:
    # The state says sent, but the queue message was never deleted.
    crashing, successor, subject, message_id = crash_and_restart(
        start_devhost, "after_record", "after_record", written=True
    )
    assert status_of(successor, message_id)["status"] == "sent"
    wait_until(
        lambda: (
            f"MessageId: {queue_message_id(crashing)}, DequeueCount: 2" in successor.log()
            and queue_depth(successor, successor.queue) == 0
        ),
        timeout=30,
        what="the redelivered message to be acknowledged",
    )
    state = status_of(successor, message_id)
    assert outcomes(state) == ["queued", "sending", "sent"]  # no second attempt at all
    assert state["attempts"] == 1
    assert emls_with_subject(successor, subject) == [f"{message_id}.eml"]


@pytest.mark.parametrize(("fault", "written"), [("before_send", False), ("after_send", True)])
def test_a_crash_around_the_send_resumes_once_into_the_same_file(
    start_devhost: Callable[..., DevHost], fault: str, written: bool
) -> None:
    """Before the send, nothing is written yet. After it, the file is there but the send is not
    recorded: at-least-once territory for the transport, which the outbox absorbs, the resumed
    attempt overwriting the same file. Either way one file, after a second attempt."""
    _, successor, subject, message_id = crash_and_restart(
        start_devhost, fault, f"{fault} outbox", written=written
    )
    state = wait_for_status(successor, message_id, "sent")
    assert outcomes(state) == ["queued", "sending", "resumed", "sending", "sent"]
    assert state["attempts"] == 2
    wait_until(lambda: queue_depth(successor, successor.queue) == 0, what="an empty queue")
    assert emls_with_subject(successor, subject) == [f"{message_id}.eml"]
    files = sorted(p.name for p in successor.outbox.iterdir() if not p.name.startswith("."))
    assert files == sorted([f"{message_id}.envelope.json", f"{message_id}.eml"])


def test_crash_after_send_in_graph_draft_mode_delivers_once(
    start_devhost: Callable[..., DevHost], standins: StandInProcesses
) -> None:
    crashing, subject, message_id = crash_with_one_message(
        start_devhost,
        "after_send",
        "after_send draft",
        MAILGW_GRAPH_MODE="draft",
        **standins.gateway_env(),
    )
    (first,) = delivered(standins, subject)  # Graph accepted it before the worker died
    assert first["via"] == "draft"

    successor = start_successor(start_devhost, crashing)
    assert successor.env["MAILGW_GRAPH_MODE"] == "draft"
    state = wait_for_status(successor, message_id, "sent")
    assert "resumed" in outcomes(state)
    # The resumed attempt found its draft already sent (the checkpoint) and sent nothing.
    assert "already sent" in (state["history"][-1]["code"] or "")
    wait_until(lambda: queue_depth(successor, successor.queue) == 0, what="an empty queue")
    assert len(delivered(standins, subject)) == 1


def test_crash_after_send_while_exchange_is_still_sending_delivers_once(
    start_devhost: Callable[..., DevHost], standins: StandInProcesses
) -> None:
    """Exchange has not sent the draft yet when the successor resumes (the stand-in holds it as
    a draft until told): the successor must wait for it, not send it again, although nobody saw
    /send's 202. The record said 'submitting' before /send was made."""
    standins.graph.configure(submitLagSeconds=3600)
    try:
        crashing = start_crashing_host(
            start_devhost,
            "after_send",
            MAILGW_GRAPH_MODE="draft",
            MAILGW_GRAPH_SUBMIT_GRACE_SECONDS="60",  # looks again every 6 s
            **standins.gateway_env(),
        )
        subject = unique_subject("after_send slow exchange")
        response = crashing.post_json(MESSAGES, sample_request(subject=subject))
        assert response.status == 202
        message_id = response.json()["id"]
        wait_for_crash(crashing)
        assert len(delivered(standins, subject)) == 1

        successor = start_successor(start_devhost, crashing)

        def waiting() -> bool:
            history = status_of(successor, message_id).get("history", [])
            return any(step.get("code") == "graph/submission-pending" for step in history)

        wait_until(waiting, timeout=60, what="the successor to find the draft being sent")
        standins.graph.configure(completeSubmissions=True)
        state = wait_for_status(successor, message_id, "sent", timeout=60)
    finally:
        standins.graph.configure(submitLagSeconds=0, completeSubmissions=True)
    steps = outcomes(state)
    assert "resumed" in steps and steps[-1] == "sent"
    assert "already sent" in (state["history"][-1]["code"] or "")
    wait_until(lambda: queue_depth(successor, successor.queue) == 0, what="an empty queue")
    assert len(delivered(standins, subject)) == 1


# --- poison → failed → replay → sent -------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_host(start_devhost: Callable[..., DevHost], standins: StandInProcesses) -> DevHost:
    return start_devhost(DEVHOST_QUEUE_LEASE_SECONDS=LEASE_SECONDS, **standins.gateway_env())


def test_permanent_failure_is_replayed_and_sent_once(
    graph_host: DevHost, standins: StandInProcesses
) -> None:
    mailbox = f"denied-{uuid.uuid4().hex[:8]}@fabrikam.com"
    standins.graph.add_faults(
        {"status": 403, "code": "ErrorSendAsDenied", "message": "no send as", "mailbox": mailbox}
    )
    subject = unique_subject("replay")
    request = sample_request(**{"from": mailbox, "subject": subject})
    response = graph_host.post_json(MESSAGES, request)
    assert response.status == 202
    message_id = response.json()["id"]

    failed = wait_for_status(graph_host, message_id, "failed")
    assert failed["lastError"]["code"] == "graph/ErrorSendAsDenied"
    assert "Send As" in failed["lastError"]["hint"]
    # The poison trigger records it (payload kept for the replay) and logs the failure once.
    wait_until(lambda: failure_events(graph_host, message_id), what="the failure event")
    assert delivered(standins, subject) == []

    standins.graph.configure(latencySeconds=1.5)  # keep the replay's send in flight for a while
    try:
        replay = graph_host.request("POST", f"{MESSAGES}/{message_id}/replay")
        assert replay.status == 202, replay.body
        assert replay.headers["location"] == f"{MESSAGES}/{message_id}"
        assert (replay.json()["status"], replay.json()["replays"]) == ("queued", 1)
        again = graph_host.request("POST", f"{MESSAGES}/{message_id}/replay")
        assert again.status == 202, again.body  # already under way: changes nothing
        assert again.json()["replays"] == 1
        assert again.json()["status"] in ("queued", "sending")
        assert queue_depth(graph_host, graph_host.queue) == 1  # the first replay's copy only
        state = wait_for_status(graph_host, message_id, "sent")
    finally:
        standins.graph.configure(latencySeconds=0)

    assert state["replays"] == 1
    steps = outcomes(state)
    assert steps.count("failed") == 1 and steps.count("replayed") == 1
    assert steps.index("failed") < steps.index("replayed") < steps.index("sent")
    wait_until(lambda: queue_depth(graph_host, graph_host.queue) == 0, what="an empty queue")
    (sent,) = delivered(standins, subject)
    assert sent["mailbox"] == mailbox
    assert len(failure_events(graph_host, message_id)) == 1  # one MAILGW_FAILED per failure
    done = graph_host.request("POST", f"{MESSAGES}/{message_id}/replay")
    assert done.status == 409
    assert done.json()["type"] == "urn:mailgw:problem:not-replayable"
