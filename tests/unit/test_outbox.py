"""The outbox transport: atomic ``<id>.eml`` + ``<id>.envelope.json``, idempotent per id."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import NOW, valid_request

from mailgw.models import SendRequest
from mailgw.transports.base import OutboundMessage
from mailgw.transports.outbox import OutboxTransport

MESSAGE_ID = "01900000-0000-7000-8000-0000000000aa"


def message(message_id: str = MESSAGE_ID, **overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "to": ["a@example.com"],
        "cc": ["c@example.com"],
        "bcc": ["hidden@example.net", "a@example.com"],
    }
    document = valid_request(**{**fields, **overrides})
    return OutboundMessage(message_id, SendRequest.model_validate(document, context={"now": NOW}))


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_writes_eml_and_envelope(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path / "outbox")  # created on first send
    receipt = await transport.send(message())
    await transport.aclose()

    directory = tmp_path / "outbox"
    assert listing(directory) == [f"{MESSAGE_ID}.eml", f"{MESSAGE_ID}.envelope.json"]
    assert receipt.transport == "outbox"
    assert receipt.detail == str(directory / f"{MESSAGE_ID}.eml")

    parsed = email.message_from_bytes(
        (directory / f"{MESSAGE_ID}.eml").read_bytes(), policy=email.policy.default
    )
    assert parsed["Message-ID"] == f"<{MESSAGE_ID}@contoso.com>"
    assert parsed["Subject"] == "Your receipt"
    assert "Bcc" not in parsed


async def test_envelope_has_every_recipient_once_including_bcc(tmp_path: Path) -> None:
    await OutboxTransport(tmp_path).send(message(saveToSentItems=False))
    envelope = json.loads((tmp_path / f"{MESSAGE_ID}.envelope.json").read_text("utf-8"))
    assert envelope == {
        "id": MESSAGE_ID,
        "mailFrom": "noreply@contoso.com",
        "rcptTo": ["a@example.com", "c@example.com", "hidden@example.net"],
        "saveToSentItems": False,
    }
    assert b"hidden@example.net" not in (tmp_path / f"{MESSAGE_ID}.eml").read_bytes()


async def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path)
    for n in range(5):
        await transport.send(message(f"{MESSAGE_ID[:-2]}{n:02x}"))
    names = listing(tmp_path)
    assert len(names) == 10
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


async def test_second_send_of_the_same_id_overwrites(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path)
    await transport.send(message(subject="first"))
    await transport.send(message(subject="second", bcc=["late@example.net"]))

    assert listing(tmp_path) == [f"{MESSAGE_ID}.eml", f"{MESSAGE_ID}.envelope.json"]
    parsed = email.message_from_bytes(
        (tmp_path / f"{MESSAGE_ID}.eml").read_bytes(), policy=email.policy.default
    )
    assert parsed["Subject"] == "second"
    envelope = json.loads((tmp_path / f"{MESSAGE_ID}.envelope.json").read_text("utf-8"))
    assert envelope["rcptTo"][-1] == "late@example.net"


async def test_distinct_ids_make_distinct_files(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path)
    first, second = message("id-one"), message("id-two")
    await transport.send(first)
    await transport.send(second)
    assert listing(tmp_path) == [
        "id-one.eml",
        "id-one.envelope.json",
        "id-two.eml",
        "id-two.envelope.json",
    ]


async def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file is removed when the rename fails, and the old file is kept intact."""
    transport = OutboxTransport(tmp_path)
    await transport.send(message(subject="kept"))
    before = (tmp_path / f"{MESSAGE_ID}.eml").read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("mailgw.transports.outbox.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        await transport.send(message(subject="lost"))

    assert listing(tmp_path) == [f"{MESSAGE_ID}.eml", f"{MESSAGE_ID}.envelope.json"]
    assert (tmp_path / f"{MESSAGE_ID}.eml").read_bytes() == before
