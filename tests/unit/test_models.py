"""The contract models: round trips, normalisation, sizes, the schedule window, envelopes, ids."""

from __future__ import annotations

import base64
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from unit_helpers import NOW, b64, valid_request

from mailgw import ids
from mailgw.models import (
    Attachment,
    Envelope,
    ErrorInfo,
    Importance,
    PayloadRef,
    Recipient,
    SendRequest,
)

CONTEXT = {"now": NOW}

FULL_REQUEST: dict[str, Any] = {
    "from": {"address": "noreply@contoso.com", "name": "Contoso"},
    "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
    "cc": ["c@example.com"],
    "bcc": [{"address": "d@example.com"}],
    "replyTo": [{"address": "help@contoso.com", "name": "Help desk"}],
    "subject": "Your receipt — nº 42",
    "text": "plain body",
    "html": '<p>html body <img src="cid:logo"></p>',
    "attachments": [
        {"name": "r.pdf", "contentType": "application/pdf", "contentBase64": b64(b"%PDF-1.7")},
        {
            "name": "logo.png",
            "contentType": "image/png",
            "contentBase64": b64(b"\x89PNG\r\n"),
            "inline": True,
            "contentId": "logo",
        },
    ],
    "headers": {"X-Order-Id": "42"},
    "importance": "high",
    "saveToSentItems": False,
    "sendAt": "2026-06-03T08:00:00Z",
    "metadata": {"orderId": "42"},
}


def validate(document: dict[str, Any]) -> SendRequest:
    return SendRequest.model_validate(document, context=CONTEXT)


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        FULL_REQUEST,
        valid_request(),
        valid_request(to=[], bcc=["x@example.com"], text=None, html="<b>hi</b>"),
        valid_request(attachments=[{"name": "empty.bin", "contentBase64": ""}]),
    ],
    ids=["full", "minimal", "bcc-only-html-only", "empty-attachment"],
)
def test_to_json_validates_again_to_an_equal_model(document: dict[str, Any]) -> None:
    model = validate(document)
    wire = model.to_json()
    again = validate(wire)
    assert again == model
    assert again.to_json() == wire


def test_to_json_uses_the_wire_names() -> None:
    wire = validate(FULL_REQUEST).to_json()
    assert "from" in wire
    assert "sender" not in wire
    assert {"replyTo", "saveToSentItems", "sendAt"} <= wire.keys()
    assert wire["attachments"][1]["contentId"] == "logo"
    assert wire["sendAt"] == "2026-06-03T08:00:00Z"
    assert wire["importance"] == "high"


def test_full_request_fields() -> None:
    model = validate(FULL_REQUEST)
    assert model.sender == Recipient(address="noreply@contoso.com", name="Contoso")
    assert model.importance is Importance.high
    assert model.save_to_sent_items is False
    assert model.metadata == {"orderId": "42"}
    assert [r.address for r in model.recipients()] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]


def test_defaults() -> None:
    model = validate(valid_request())
    assert model.importance is Importance.normal
    assert model.save_to_sent_items is True
    assert model.cc == model.bcc == model.reply_to == []
    assert model.attachments == []
    assert model.headers == {} and model.metadata == {}
    assert model.send_at is None


def test_models_are_frozen() -> None:
    model = validate(valid_request())
    with pytest.raises(ValidationError):
        model.subject = "changed"


# --- addresses and recipients -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_address", "normalised"),
    [
        ("a@example.com", "a@example.com"),
        ("  a@example.com  ", "a@example.com"),
        ("Alice@EXAMPLE.COM", "Alice@example.com"),  # the domain is case-insensitive, local not
        # International domains are kept in their ASCII (IDNA) form: the message stays plain ASCII.
        ("user@Bücher.de", "user@xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
    ],
)
def test_address_normalisation(given_address: str, normalised: str) -> None:
    assert Recipient.model_validate(given_address).address == normalised
    assert Recipient.model_validate({"address": given_address}).address == normalised


@pytest.mark.parametrize(
    "bad", ["", "a", "a@", "@example.com", "a@@example.com", "a b@example.com", "a@example..com"]
)
def test_invalid_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not a valid email address"):
        Recipient.model_validate(bad)


def test_recipient_string_and_object_forms_are_equal() -> None:
    from_string = Recipient.model_validate("a@example.com")
    from_object = Recipient.model_validate({"address": "a@example.com"})
    assert from_string == from_object
    assert from_string.name is None
    named = Recipient.model_validate({"address": "a@example.com", "name": "Ä Person"})
    assert named.name == "Ä Person"
    assert named != from_string


def test_recipient_object_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Recipient.model_validate({"address": "a@example.com", "email": "b@example.com"})


def test_recipient_forms_inside_a_request() -> None:
    model = validate(valid_request(to=["a@example.com", {"address": "a@example.com"}]))
    assert model.to[0] == model.to[1]


# --- attachments --------------------------------------------------------------------------------


@settings(database=None)  # no example database: nothing is saved between runs
@given(st.binary(max_size=3000))
def test_attachment_size_is_the_decoded_length(data: bytes) -> None:
    attachment = Attachment(name="f.bin", content_base64=b64(data))
    assert attachment.size == len(data)
    assert attachment.content() == data


@settings(database=None)
@given(st.binary(max_size=3000), st.sampled_from([76, 64, 4]), st.sampled_from(["\n", "\r\n"]))
def test_attachment_size_ignores_line_wrapping(data: bytes, width: int, newline: str) -> None:
    """MIME-style Base64 (wrapped lines) is accepted and measured without the line breaks."""
    wrapped = newline.join(textwrap.wrap(b64(data), width)) + newline
    attachment = Attachment(name="f.bin", content_base64=wrapped)
    assert attachment.size == len(data)
    assert attachment.content() == data


@pytest.mark.parametrize("length", range(0, 20))
def test_attachment_size_small_lengths(length: int) -> None:
    """Every padding case (0, 1 and 2 '=') at each length; runs even without hypothesis."""
    data = bytes(range(length))
    assert Attachment(name="f", content_base64=b64(data)).size == length


def test_attachment_defaults_and_normalisation() -> None:
    attachment = Attachment.model_validate(
        {"name": "a.PDF", "contentType": "Application/PDF", "contentBase64": b64(b"x")}
    )
    assert attachment.content_type == "application/pdf"
    assert attachment.inline is False
    assert attachment.content_id is None
    default = Attachment.model_validate({"name": "a", "contentBase64": b64(b"x")})
    assert default.content_type == "application/octet-stream"


def test_content_id_angle_brackets_around_are_stripped() -> None:
    attachment = Attachment.model_validate(
        {"name": "a", "contentBase64": b64(b"x"), "inline": True, "contentId": " <logo@x> "}
    )
    assert attachment.content_id == "logo@x"


def test_urlsafe_base64_is_rejected() -> None:
    data = b"\xfb\xff\xfe"  # encodes to "+//+" in the standard alphabet, "-__-" url-safe
    assert base64.urlsafe_b64encode(data) == b"-__-"
    with pytest.raises(ValidationError, match="not valid Base64"):
        Attachment(name="a", content_base64="-__-")


# --- sendAt -------------------------------------------------------------------------------------


def test_send_at_is_converted_to_utc() -> None:
    model = validate(valid_request(sendAt="2026-06-02T10:00:00+02:00"))
    assert model.send_at == datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
    assert model.send_at is not None
    assert model.send_at.utcoffset() == timedelta(0)
    assert model.to_json()["sendAt"] == "2026-06-02T08:00:00Z"


def test_send_at_window_is_measured_from_the_context_clock() -> None:
    east = timezone(timedelta(hours=5))
    limit = (NOW + timedelta(days=7)).astimezone(east)
    assert validate(valid_request(sendAt=limit.isoformat())).send_at == NOW + timedelta(days=7)
    with pytest.raises(ValidationError, match="at most 7 days ahead"):
        validate(valid_request(sendAt=(limit + timedelta(seconds=1)).isoformat()))


def test_send_at_in_the_past_is_allowed() -> None:
    """A past sendAt means "now": producers' clocks drift and a retry may arrive late."""
    model = validate(valid_request(sendAt="2020-01-01T00:00:00Z"))
    assert model.send_at == datetime(2020, 1, 1, tzinfo=UTC)


# --- envelope -----------------------------------------------------------------------------------

REF = PayloadRef(container="mail-payloads", blob="x.json", sha256="0" * 64, size=70000)


@pytest.mark.parametrize(
    "payload",
    [{"request": {"from": "a@example.com"}}, {"raw": "not json"}, {"payload_ref": REF}],
    ids=["request", "raw", "payloadRef"],
)
def test_envelope_with_exactly_one_payload(payload: dict[str, Any]) -> None:
    envelope = Envelope(id="m1", created_at=NOW, **payload)
    wire = envelope.to_json()
    assert wire["mailgw"] == 1
    assert wire["createdAt"].startswith("2026-06-01T12:00:00")
    assert Envelope.model_validate(wire) == envelope


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"request": {"a": 1}, "raw": "x"},
        {"raw": "x", "payload_ref": REF},
        {"request": {"a": 1}, "raw": "x", "payload_ref": REF},
    ],
    ids=["none", "request+raw", "raw+ref", "all-three"],
)
def test_envelope_without_exactly_one_payload_is_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of request, raw, mime or payloadRef"):
        Envelope(id="m1", created_at=NOW, **payload)


def test_envelope_carries_error_and_attempts() -> None:
    envelope = Envelope(
        id="m1",
        created_at=NOW,
        raw="{",
        attempt=3,
        source="queue",
        error=ErrorInfo(code="invalid", message="bad", hint="fix the producer"),
    )
    again = Envelope.model_validate(envelope.to_json())
    assert again.attempt == 3
    assert again.error is not None and again.error.hint == "fix the producer"
    with pytest.raises(ValidationError):
        Envelope(id="m1", created_at=NOW, raw="x", attempt=-1)


# --- ids ----------------------------------------------------------------------------------------


def test_message_ids_are_uuid_v7() -> None:
    before = datetime.now(UTC)
    value = ids.new_message_id()
    after = datetime.now(UTC)
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    millis = parsed.int >> 80
    stamp = datetime.fromtimestamp(millis / 1000, UTC)
    assert before - timedelta(milliseconds=1) <= stamp <= after


def test_message_ids_are_unique() -> None:
    many = {ids.new_message_id() for _ in range(2000)}
    assert len(many) == 2000


def test_message_ids_sort_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids made in later milliseconds sort after earlier ones, as strings (how tables list them)."""
    start = 1_780_000_000_000  # ms, mid-2026
    ticks: Iterator[int] = iter((start + step * 7) * 1_000_000 for step in range(300))
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: next(ticks)))
    made = [ids.new_message_id() for _ in range(300)]
    assert sorted(made) == made
    assert [uuid.UUID(m).int >> 80 for m in made] == [start + step * 7 for step in range(300)]
