"""Raw MIME (the SMTP intake's payload) through intake → Azurite → delivery → outbox."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mailgw.delivery import Delivery
from mailgw.errors import SenderNotAllowed
from mailgw.intake import Intake
from mailgw.mime import Submission, parse_submission
from mailgw.models import Envelope, MessageStatus
from mailgw.operations import Operations
from mailgw.policy import SenderPolicy
from mailgw.queue import INLINE_LIMIT, MailQueue
from mailgw.settings import Settings
from mailgw.store import StateStore
from support import depth, pull


def message(*headers: str, body: bytes = b"Hello from the scanner\r\n") -> bytes:
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + body


def submission(data: bytes, rcpt: list[str] | None = None, client: str = "scanner") -> Submission:
    return parse_submission(
        data,
        "scanner@contoso.com",
        rcpt or ["a@example.com", "hidden@example.com"],
        max_bytes=200 * 1024 * 1024,
        client=client,
    )


SCAN = message(
    "From: Scanner <scanner@contoso.com>",
    "To: a@example.com",
    "Subject: Scan 42",
    "Message-ID: <scan-42@contoso.com>",
)


async def deliver_one(mail_queue: MailQueue, delivery: Delivery) -> Any:
    queued = await pull(mail_queue)
    assert queued is not None
    return await delivery.handle(queued.content, queue_message_id=queued.id)


async def test_mime_is_delivered_byte_for_byte_to_the_envelope(
    intake: Intake,
    mail_queue: MailQueue,
    delivery: Delivery,
    store: StateStore,
    settings: Settings,
) -> None:
    result = await intake.submit_mime(submission(SCAN))
    await intake.drain()
    outcome = await deliver_one(mail_queue, delivery)
    assert outcome.action == "sent"
    outbox = Path(settings.outbox_dir)
    assert (outbox / f"{result.id}.eml").read_bytes() == SCAN
    envelope = json.loads((outbox / f"{result.id}.envelope.json").read_text())
    assert envelope["mailFrom"] == "scanner@contoso.com"
    assert envelope["rcptTo"] == ["a@example.com", "hidden@example.com"]
    record = await store.get(result.id)
    assert record is not None
    assert record.status is MessageStatus.sent
    assert record.source == "smtp"
    assert record.sender == "scanner@contoso.com"
    assert record.metadata["smtpClient"] == "scanner"


async def test_same_client_and_message_id_is_one_message(
    intake: Intake, mail_queue: MailQueue
) -> None:
    first = await intake.submit_mime(submission(SCAN))
    again = await intake.submit_mime(submission(SCAN))
    assert again.id == first.id
    assert await depth(mail_queue) == 1
    other_client = await intake.submit_mime(submission(SCAN, client="printer"))
    assert other_client.id != first.id
    assert await depth(mail_queue) == 2


async def test_a_message_without_message_id_gets_one_naming_its_id(
    intake: Intake, mail_queue: MailQueue, delivery: Delivery, settings: Settings
) -> None:
    data = message("From: scanner@contoso.com", "To: a@example.com", "Subject: no id")
    result = await intake.submit_mime(submission(data))
    await intake.drain()
    assert (await deliver_one(mail_queue, delivery)).action == "sent"
    written = (Path(settings.outbox_dir) / f"{result.id}.eml").read_bytes()
    assert written == f"Message-ID: <{result.id}@contoso.com>\r\n".encode() + data


@pytest.mark.parametrize(
    "headers",
    [("From: boss@fabrikam.com",), ("From: scanner@contoso.com", "Sender: boss@fabrikam.com")],
)
async def test_a_disallowed_header_sender_is_refused_and_nothing_queued(
    intake: Intake, mail_queue: MailQueue, headers: tuple[str, ...]
) -> None:
    with pytest.raises(SenderNotAllowed):
        await intake.submit_mime(submission(message(*headers, "To: a@example.com")))
    assert await depth(mail_queue) == 0


async def test_the_clients_own_senders_are_enforced(intake: Intake, mail_queue: MailQueue) -> None:
    with pytest.raises(SenderNotAllowed):
        await intake.submit_mime(submission(SCAN), allowed=SenderPolicy(["printer@contoso.com"]))
    assert await depth(mail_queue) == 0
    await intake.submit_mime(submission(SCAN), allowed=SenderPolicy(["scanner@contoso.com"]))
    assert await depth(mail_queue) == 1


async def test_large_mime_goes_through_the_claim_check_and_replays(
    intake: Intake,
    mail_queue: MailQueue,
    delivery: Delivery,
    store: StateStore,
    settings: Settings,
) -> None:
    body = os.urandom(3 * 1024 * 1024).hex().encode()  # 6 MB of text, as a scanner might send
    data = message("From: scanner@contoso.com", "To: a@example.com", body=body)
    result = await intake.submit_mime(submission(data))
    await intake.drain()
    queued = await pull(mail_queue)
    assert len(queued.content.encode()) < INLINE_LIMIT
    envelope = Envelope.model_validate_json(queued.content)
    assert envelope.mime is None and envelope.payload_ref is not None
    # Make it fail permanently at delivery (the gateway's policy changed), then replay it.
    strict = Delivery(
        Settings.from_env({**_env(settings), "MAILGW_ALLOWED_SENDERS": "*@fabrikam.com"}),
        mail_queue,
        delivery.transport,
        store,
    )
    outcome = await strict.handle(queued.content, queue_message_id=queued.id)
    assert outcome.action == "poisoned"
    assert outcome.error is not None and outcome.error.code == "mailgw/sender-not-allowed"
    await Operations(mail_queue, store).replay(result.id)
    assert (await deliver_one(mail_queue, delivery)).action == "sent"
    expected = f"Message-ID: <{result.id}@contoso.com>\r\n".encode() + data
    assert (Path(settings.outbox_dir) / f"{result.id}.eml").read_bytes() == expected


def _env(settings: Settings) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": settings.storage().connection_string or "",
        "MAILGW_QUEUE": settings.queue,
        "MAILGW_PAYLOAD_CONTAINER": settings.payload_container,
        "MAILGW_TRANSPORT": "outbox",
        "MAILGW_OUTBOX_DIR": str(settings.outbox_dir),
    }
