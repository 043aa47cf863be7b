"""The gateway end to end: HTTP → dev host → Azurite → queue trigger → outbox `.eml`."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy
from gateway_host import DevHost

from support import DEAD_STORAGE, b64, sample_request, wait_until

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def queues(devhost: DevHost) -> Iterator[Callable[[str], QueueClient]]:
    opened: list[QueueClient] = []

    def open_queue(name: str) -> QueueClient:
        client = QueueClient.from_connection_string(
            devhost.env["AzureWebJobsStorage"],
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        opened.append(client)
        return client

    yield open_queue
    for client in opened:
        client.close()


def depth(client: QueueClient) -> int:
    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def read_eml(host: DevHost, message_id: str, timeout: float = 30) -> EmailMessage:
    path = host.outbox / f"{message_id}.eml"
    wait_until(path.exists, timeout=timeout, what=f"{path.name} in the outbox")
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_health(devhost: DevHost) -> None:
    response = devhost.request("GET", "/api/v1/health")
    assert response.status == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["queue"] == devhost.queue
    assert body["transport"] == "outbox"


def test_post_produces_an_eml_with_every_field(devhost: DevHost) -> None:
    pdf = b"%PDF-1.4 " + os.urandom(2048)
    request = {
        "from": {"address": "noreply@contoso.com", "name": "Contoso Billing"},
        "to": ["a@example.com", {"address": "b@example.com", "name": "Bé Ünïcode"}],
        "cc": ["c@example.com"],
        "bcc": ["secret@example.com"],
        "replyTo": [{"address": "help@contoso.com", "name": "Help"}],
        "subject": "Your receipt №42",
        "text": "plain body",
        "html": '<p>html body <img src="cid:logo"></p>',
        "attachments": [
            {"name": "receipt.pdf", "contentType": "application/pdf", "contentBase64": b64(pdf)},
            {
                "name": "logo.png",
                "contentType": "image/png",
                "contentBase64": b64(PNG),
                "inline": True,
                "contentId": "logo",
            },
        ],
        "headers": {"X-Order-Id": "42", "X-Tenant": "contoso"},
        "importance": "high",
        "metadata": {"orderId": "42"},
    }
    response = devhost.post_json("/api/v1/messages", request)
    assert response.status == 202, response.body
    body = response.json()
    assert body["status"] == "queued"
    assert body["statusUrl"] == f"/api/v1/messages/{body['id']}"
    assert response.headers["location"] == body["statusUrl"]

    msg = read_eml(devhost, body["id"])
    assert msg["From"].addresses[0].display_name == "Contoso Billing"
    assert msg["From"].addresses[0].addr_spec == "noreply@contoso.com"
    to = [(a.display_name, a.addr_spec) for a in msg["To"].addresses]
    assert to == [("", "a@example.com"), ("Bé Ünïcode", "b@example.com")]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["c@example.com"]
    assert [(a.display_name, a.addr_spec) for a in msg["Reply-To"].addresses] == [
        ("Help", "help@contoso.com")
    ]
    assert msg["Subject"] == "Your receipt №42"
    assert msg["Message-ID"] == f"<{body['id']}@contoso.com>"
    assert msg["Date"].datetime is not None
    assert msg["X-Order-Id"] == "42"
    assert msg["X-Tenant"] == "contoso"
    assert msg["Importance"] == "High"
    assert msg["Bcc"] is None
    raw = (devhost.outbox / f"{body['id']}.eml").read_bytes()
    assert b"secret@example.com" not in raw
    assert b"orderId" not in raw  # metadata is never sent

    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("plain",)).get_content().strip() == "plain body"  # type: ignore[union-attr]
    html = msg.get_body(("html",))
    assert html is not None
    assert "cid:logo" in html.get_content()
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    (image,) = [p for p in related[0].iter_parts() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == "<logo>"
    assert image.get_content() == PNG
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "receipt.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf

    envelope = json.loads((devhost.outbox / f"{body['id']}.envelope.json").read_text())
    assert envelope["mailFrom"] == "noreply@contoso.com"
    assert sorted(envelope["rcptTo"]) == sorted(
        ["a@example.com", "b@example.com", "c@example.com", "secret@example.com"]
    )


BAD_INPUTS: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("invalid json", b"{not json", {}, 400, "(none)"),
    ("array body", b"[]", {}, 400, "(body)"),
    ("empty body", b"", {}, 400, "(none)"),
    (
        "form encoded",
        b"from=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "(none)",
    ),
    ("bad address", sample_request(to=["a@example.com", "nope"]), {}, 400, "to[1]"),
    ("no recipients", sample_request(to=[]), {}, 400, "to"),
    ("no body", sample_request(text=None, html=None), {}, 400, "text"),
    (
        "subject injection",
        sample_request(subject="Hi\r\nBcc: victim@example.com"),
        {},
        400,
        "subject",
    ),
    (
        "header injection",
        sample_request(headers={"X-A": "1\r\nBcc: victim@example.com"}),
        {},
        400,
        "headers.X-A",
    ),
    (
        "name injection",
        sample_request(to=[{"address": "a@example.com", "name": "A\nB"}]),
        {},
        400,
        "to[0].name",
    ),
    ("non X- header", sample_request(headers={"Subject": "x"}), {}, 400, "headers.Subject"),
    (
        "bad base64",
        sample_request(attachments=[{"name": "a", "contentBase64": "@@@"}]),
        {},
        400,
        "attachments[0].contentBase64",
    ),
    ("sendAt too far", sample_request(sendAt="2099-01-01T00:00:00Z"), {}, 400, "sendAt"),
    ("unknown field", sample_request(too=["a@example.com"]), {}, 400, "too"),
    ("sender not allowed", sample_request(**{"from": "ceo@contoso.com"}), {}, 403, "from"),
]


@pytest.fixture(scope="module")
def intake_only(start_devhost: Callable[..., DevHost]) -> DevHost:
    """The gateway with its delivery function switched off (``AzureWebJobs.deliver.Disabled``, as
    in Azure): nothing consumes the queue, so its depth shows exactly what the intake enqueued."""
    return start_devhost(**{"AzureWebJobs.deliver.Disabled": "true"})


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "field"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS]
)
def test_bad_input_is_a_4xx_problem_and_nothing_is_enqueued(
    intake_only: DevHost,
    queues: Callable[[str], QueueClient],
    case: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = intake_only.request(
        "POST", "/api/v1/messages", data, {"Content-Type": "application/json", **headers}
    )
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("urn:mailgw:problem:")
    assert problem["title"]
    assert problem["detail"]
    fields = [e["field"] for e in problem.get("errors", [])]
    if field == "(none)":
        assert fields == []
    else:
        assert field in fields, problem
    assert depth(queues(intake_only.queue)) == 0


def test_the_intake_only_host_shows_what_was_enqueued(
    intake_only: DevHost, queues: Callable[[str], QueueClient]
) -> None:
    """The control for the test above: an accepted request does show in the queue's depth."""
    before = depth(queues(intake_only.queue))
    assert intake_only.post_json("/api/v1/messages", sample_request()).status == 202
    assert depth(queues(intake_only.queue)) == before + 1
    assert "Executing 'Functions.deliver'" not in intake_only.log()
    # Leave the queue as the bad-input test expects it: empty.
    queues(intake_only.queue).clear_messages()


def test_producer_message_is_delivered(
    devhost: DevHost, queues: Callable[[str], QueueClient]
) -> None:
    queue = queues(devhost.queue)
    sent = queue.send_message(json.dumps(sample_request(subject="from a producer")))
    msg = read_eml(devhost, sent.id)
    assert msg["Subject"] == "from a producer"


def test_invalid_producer_message_is_recorded_failed_with_its_error(
    devhost: DevHost, queues: Callable[[str], QueueClient]
) -> None:
    sent = queues(devhost.queue).send_message(json.dumps(sample_request(to=["not an address"])))
    # The delivery function moves it to the poison queue with its validation error; the poison
    # function records it as failed (the poison message is consumed; its payload is kept).
    state = wait_until(lambda: devhost.status(sent.id, "failed"), timeout=30, what="failed state")
    assert state["lastError"]["code"] == "mailgw/invalid-request"
    assert "to[0]" in state["lastError"]["message"]
    assert state["lastError"]["hint"]
    assert [h["outcome"] for h in state["history"]][-1] == "failed"
    event = re.compile(r"MAILGW_FAILED .*" + re.escape(sent.id))
    wait_until(lambda: event.search(devhost.log()), timeout=30, what="the failure event")


@pytest.mark.slow
def test_20_mb_attachment_over_http(devhost: DevHost) -> None:
    blob = os.urandom(20 * 1024 * 1024)
    response = devhost.post_json(
        "/api/v1/messages",
        sample_request(attachments=[{"name": "big.bin", "contentBase64": b64(blob)}]),
    )
    assert response.status == 202, response.body[:500]
    msg = read_eml(devhost, response.json()["id"], timeout=120)
    (attachment,) = list(msg.iter_attachments())
    assert hashlib.sha256(attachment.get_content()).digest() == hashlib.sha256(blob).digest()


@pytest.mark.slow
def test_crashing_delivery_is_retried_then_poisoned_after_max_dequeue_count(
    start_devhost: Callable[..., DevHost], tmp_path: Path
) -> None:
    # An outbox "directory" that is a file makes every send raise an unclassified OSError: a crash.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    host = start_devhost(MAILGW_OUTBOX_DIR=str(blocker / "outbox"))
    response = host.post_json("/api/v1/messages", sample_request())
    assert response.status == 202
    message_id = response.json()["id"]
    state = wait_until(lambda: host.status(message_id, "failed"), timeout=60, what="failed state")
    # moved there by the host, unchanged
    assert state["lastError"]["code"] == "mailgw/max-dequeue-exceeded"
    assert state["attempts"] == 3
    executions = re.findall(r"Executing 'Functions\.deliver'", host.log())
    assert len(executions) == 3  # maxDequeueCount, overridden to 3 for the test


def test_storage_down_is_a_503_with_retry_after_and_never_a_202(
    start_devhost: Callable[..., DevHost],
) -> None:
    """Storage unreachable (its queue triggers switched off, so the host itself starts): health
    says so, and a send is refused with 503, never accepted and lost."""
    dead = DEAD_STORAGE
    host = start_devhost(
        AzureWebJobsStorage=dead,
        **{"AzureWebJobs.deliver.Disabled": "true", "AzureWebJobs.record_failure.Disabled": "true"},
    )
    health = host.request("GET", "/api/v1/health")
    assert health.status == 503
    assert health.json()["type"] == "urn:mailgw:problem:unhealthy"
    assert health.headers["retry-after"] == "30"
    for headers in ({}, {"Idempotency-Key": "storage-down-1"}):
        response = host.post_json("/api/v1/messages", sample_request(), headers)
        assert response.status == 503, response.body
        assert response.json()["type"] == "urn:mailgw:problem:queue-unavailable"
        assert response.headers["retry-after"] == "10"
