"""Intake → Azurite → delivery, with the real storage SDK and the real emulator (no host)."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailgw.delivery import Delivery, RetryPolicy
from mailgw.intake import Intake
from mailgw.models import Envelope
from mailgw.queue import INLINE_LIMIT, MailQueue
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.errors import permanent, transient
from support import TransportDefaults, b64, pull, raises_problem, sample_request, wait_until_async


async def submit(intake: Intake, body: dict[str, Any]) -> Any:
    return await intake.submit(json.dumps(body).encode(), content_type="application/json")


async def test_intake_writes_base64_json_that_the_trigger_reads(
    intake: Intake, settings: Settings, raw_queue: Any
) -> None:
    result = await submit(intake, sample_request())
    assert result.status == "queued"
    stored = [m async for m in raw_queue(settings.queue).receive_messages()]
    assert len(stored) == 1
    # What sits in the queue is Base64 of UTF-8 JSON: the host's default messageEncoding.
    envelope = json.loads(base64.b64decode(stored[0].content, validate=True).decode("utf-8"))
    assert envelope["mailgw"] == 1
    assert envelope["id"] == result.id
    assert envelope["request"]["from"] == {"address": "noreply@contoso.com"}


async def test_submitted_message_is_delivered_to_the_outbox(
    intake: Intake, mail_queue: MailQueue, delivery: Delivery, settings: Settings
) -> None:
    result = await submit(intake, sample_request(bcc=["hidden@example.com"]))
    message = await pull(mail_queue)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "sent"
    eml = Path(settings.outbox_dir) / f"{result.id}.eml"
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Your receipt"
    assert parsed["Bcc"] is None
    assert b"hidden@example.com" not in eml.read_bytes()
    envelope = json.loads((Path(settings.outbox_dir) / f"{result.id}.envelope.json").read_text())
    assert "hidden@example.com" in envelope["rcptTo"]


@pytest.mark.slow
async def test_claim_check_round_trips_20_mb_byte_exact(
    intake: Intake, mail_queue: MailQueue, delivery: Delivery, settings: Settings
) -> None:
    blob = os.urandom(20 * 1024 * 1024)
    body = sample_request(
        attachments=[
            {
                "name": "big.bin",
                "contentType": "application/octet-stream",
                "contentBase64": b64(blob),
            }
        ]
    )
    result = await submit(intake, body)
    message = await pull(mail_queue)
    assert len(message.content.encode()) < INLINE_LIMIT
    envelope = Envelope.model_validate_json(message.content)
    assert envelope.request is None and envelope.payload_ref is not None
    assert envelope.payload_ref.container == settings.payload_container

    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "sent"
    parsed = email.message_from_bytes(
        (Path(settings.outbox_dir) / f"{result.id}.eml").read_bytes(), policy=email.policy.default
    )
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "big.bin"
    content = attachment.get_content()
    assert hashlib.sha256(content).hexdigest() == hashlib.sha256(blob).hexdigest()


async def test_tampered_claim_check_is_poisoned_not_sent(
    intake: Intake, mail_queue: MailQueue, delivery: Delivery, settings: Settings
) -> None:
    body = sample_request(attachments=[{"name": "a.bin", "contentBase64": b64(os.urandom(60_000))}])
    await submit(intake, body)
    message = await pull(mail_queue)
    ref = Envelope.model_validate_json(message.content).payload_ref
    assert ref is not None
    blob = mail_queue.blobs().get_blob_client(ref.container, ref.blob)
    await blob.upload_blob(b'{"request": {}}', overwrite=True)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "poisoned"
    assert outcome.error is not None and outcome.error.code == "mailgw/payload-missing"
    assert (
        not list(Path(settings.outbox_dir).glob("*.eml"))
        if Path(settings.outbox_dir).exists()
        else True
    )


async def test_send_at_delays_visibility(
    intake: Intake, mail_queue: MailQueue, settings: Settings
) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    result = await submit(intake, sample_request(sendAt=send_at.isoformat()))
    assert result.status == "scheduled"
    props = await mail_queue.queue().get_queue_properties()
    assert props.approximate_message_count == 1
    assert await pull(mail_queue) is None  # stored, but invisible until sendAt

    message = await wait_until_async(lambda: pull(mail_queue), timeout=15, what="scheduled message")
    assert datetime.now(UTC) >= send_at - timedelta(
        milliseconds=999
    )  # queue delays are whole seconds
    assert Envelope.model_validate_json(message.content).id == result.id


async def test_rejected_request_enqueues_nothing(intake: Intake, mail_queue: MailQueue) -> None:
    with raises_problem() as bad:
        await submit(intake, sample_request(to=["not-an-address"]))
    assert bad.value.status == 400
    with raises_problem() as forbidden:
        await submit(intake, sample_request(**{"from": "ceo@fabrikam.com"}))
    assert forbidden.value.status == 403
    assert await pull(mail_queue) is None


async def test_producer_bare_request_is_delivered_with_the_queue_message_id(
    mail_queue: MailQueue, delivery: Delivery, settings: Settings
) -> None:
    await mail_queue.queue().create_queue()
    sent = await mail_queue.queue().send_message(json.dumps(sample_request()))
    message = await pull(mail_queue)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "sent"
    assert (Path(settings.outbox_dir) / f"{sent.id}.eml").exists()


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ("this is not json", "mailgw/invalid-message", "not JSON"),
        ("[1, 2]", "mailgw/invalid-message", "not a JSON object"),
        (json.dumps(sample_request(to=["nope"])), "mailgw/invalid-request", "to[0]"),
        (
            json.dumps(sample_request(**{"from": "x@fabrikam.com"})),
            "mailgw/sender-not-allowed",
            "MAILGW_ALLOWED_SENDERS",
        ),
        (json.dumps({"mailgw": 1, "id": "x"}), "mailgw/invalid-envelope", "envelope"),
    ],
)
async def test_invalid_producer_message_goes_to_poison_with_its_error(
    mail_queue: MailQueue,
    delivery: Delivery,
    store: StateStore,
    raw: str,
    code: str,
    fragment: str,
) -> None:
    await mail_queue.queue().create_queue()
    await mail_queue.queue().send_message(raw)
    message = await pull(mail_queue)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "poisoned"
    poisoned = await pull(mail_queue, mail_queue.poison_queue_name)
    dead = Envelope.model_validate_json(poisoned.content)
    assert dead.error is not None
    assert dead.error.code == code
    assert fragment in dead.error.message
    assert dead.error.hint
    # The original is kept so the message can be fixed and replayed, never dropped.
    assert dead.raw == raw or dead.request == json.loads(raw)
    assert await pull(mail_queue) is None  # and it is not retried
    # Its record names the sender the payload claims, so an operator can find the producer.
    record = await store.get(dead.id)
    assert record is not None and record.last_error == dead.error
    assert record.sender == (dead.request or {}).get("from")


class ScriptedTransport(TransportDefaults):
    """A transport that fails as scripted, then succeeds: drives the retry policy on real queues."""

    name = "scripted"

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return SendReceipt(self.name)


def scripted_delivery(
    intake: Intake, transport: ScriptedTransport, max_attempts: int = 3
) -> Delivery:
    """A delivery on the intake's own queue and store, with the scripted transport."""
    return Delivery(
        intake.settings,
        intake.queue,
        transport,
        intake.store,
        retry=RetryPolicy(max_attempts=max_attempts, base_seconds=0.0),
    )


async def test_transient_failure_is_rescheduled_with_retry_after_then_sent(
    intake: Intake, mail_queue: MailQueue, settings: Settings
) -> None:
    transport = ScriptedTransport(transient("ServiceUnavailable", "try later", retry_after=1))
    delivery = scripted_delivery(intake, transport)
    result = await submit(intake, sample_request())
    first = await pull(mail_queue)
    outcome = await delivery.handle(first.content, queue_message_id=first.id)
    assert (outcome.action, outcome.delay) == ("retry", 1.0)
    assert await pull(mail_queue) is None  # invisible for Retry-After
    second = await wait_until_async(lambda: pull(mail_queue), timeout=10, what="the retry")
    envelope = Envelope.model_validate_json(second.content)
    assert envelope.attempt == 1
    assert envelope.error is not None and envelope.error.code == "ServiceUnavailable"
    assert (await delivery.handle(second.content, queue_message_id=second.id)).action == "sent"
    assert [m.id for m in transport.sent] == [result.id]
    assert transport.sent[0].attempt == 2


async def test_permanent_failure_is_poisoned_after_one_attempt(
    intake: Intake, mail_queue: MailQueue, settings: Settings
) -> None:
    transport = ScriptedTransport(permanent("ErrorSendAsDenied", "no", hint="grant Send As"))
    delivery = scripted_delivery(intake, transport)
    await submit(intake, sample_request())
    message = await pull(mail_queue)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "poisoned"
    dead = Envelope.model_validate_json(
        (await pull(mail_queue, mail_queue.poison_queue_name)).content
    )
    assert dead.error is not None and dead.error.hint == "grant Send As"
    assert await pull(mail_queue) is None


async def test_exhausted_attempts_end_in_poison(
    intake: Intake, mail_queue: MailQueue, settings: Settings
) -> None:
    failures = [transient("Timeout", "slow", retry_after=0) for _ in range(5)]
    transport = ScriptedTransport(*failures)
    delivery = scripted_delivery(intake, transport, max_attempts=2)
    await submit(intake, sample_request())
    actions = []
    while (message := await pull(mail_queue)) is not None:
        actions.append((await delivery.handle(message.content, queue_message_id=message.id)).action)
    assert actions == ["retry", "poisoned"]
    dead = Envelope.model_validate_json(
        (await pull(mail_queue, mail_queue.poison_queue_name)).content
    )
    assert dead.error is not None and "gave up after 2 attempts" in dead.error.message
    assert transport.sent == []


async def test_health_reports_queue_depth(intake: Intake, mail_queue: MailQueue) -> None:
    await submit(intake, sample_request())
    depth = await mail_queue.ping()
    assert depth == {mail_queue.queue_name: 1, mail_queue.poison_queue_name: 0}


async def test_a_message_graph_cannot_take_is_refused_at_intake_and_nothing_is_queued(
    settings: Settings, mail_queue: MailQueue, store: Any
) -> None:
    from dataclasses import replace

    graph = replace(settings, transport="graph", graph_mode="sendmail")
    intake = Intake(graph, mail_queue, store)
    body = sample_request(
        attachments=[{"name": "big.bin", "contentBase64": b64(os.urandom(30 * 1024 * 1024))}]
    )
    with raises_problem() as caught:
        await submit(intake, body)
    assert caught.value.status == 413
    assert await pull(mail_queue) is None
