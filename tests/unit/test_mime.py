"""Raw MIME (SMTP intake): what is refused, who it claims to be from, and the Graph forms."""

from __future__ import annotations

import base64
import email.policy
from email.parser import BytesParser

import pytest

from mailgw.errors import InvalidRequest, MessageTooLarge, SenderNotAllowed
from mailgw.mime import (
    check_senders,
    parse_submission,
    quoted_printable_as_base64,
    read_payload,
    with_bcc,
)
from mailgw.models import Envelope
from mailgw.policy import SenderPolicy
from mailgw.transports.graph_message import MAX_REQUEST_BYTES, TooLarge, mime_request


def mime(*headers: str, body: str = "Hello\r\n") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


SIMPLE = mime(
    "From: Printer <printer@contoso.com>",
    "To: a@example.com",
    "Subject: Scan",
    "Message-ID: <scan-1@contoso.com>",
)


def test_a_plain_message_is_read_with_its_envelope() -> None:
    sub = parse_submission(
        SIMPLE, "printer@contoso.com", ["a@example.com", "hidden@example.com"], max_bytes=10_000
    )
    assert sub.mail_from == "printer@contoso.com"
    assert sub.rcpt_to == ("a@example.com", "hidden@example.com")
    assert sub.header_senders == ("printer@contoso.com",)
    assert sub.message_id == "<scan-1@contoso.com>"
    summary = sub.summary()
    assert summary.sender.address == "printer@contoso.com"
    assert [r.address for r in summary.recipients()] == ["a@example.com", "hidden@example.com"]


def test_the_payload_round_trips_through_an_envelope() -> None:
    sub = parse_submission(
        SIMPLE, "printer@contoso.com", ["a@example.com"], max_bytes=10_000, client="scanner"
    )
    envelope = Envelope.model_validate(
        {"id": "x", "createdAt": "2026-12-01T00:00:00Z", "mime": sub.payload().model_dump()}
    )
    assert envelope.mime is not None
    again = read_payload(envelope.mime, max_bytes=10_000)
    assert again == sub
    assert again.summary().metadata == {
        "smtpClient": "scanner",
        "messageId": "<scan-1@contoso.com>",
    }


def test_an_envelope_carries_only_one_payload() -> None:
    sub = parse_submission(SIMPLE, "printer@contoso.com", ["a@example.com"], max_bytes=10_000)
    with pytest.raises(ValueError, match="exactly one"):
        Envelope.model_validate(
            {
                "id": "x",
                "createdAt": "2026-12-01T00:00:00Z",
                "mime": sub.payload().model_dump(),
                "raw": "x",
            }
        )


@pytest.mark.parametrize(
    ("data", "mail_from", "rcpt", "field"),
    [
        (mime("To: a@example.com", "Subject: x"), "p@contoso.com", ["a@example.com"], "From"),
        (
            mime("From: p@contoso.com", "From: q@contoso.com"),
            "p@contoso.com",
            ["a@example.com"],
            "From",
        ),
        (mime("From: undisclosed:;"), "p@contoso.com", ["a@example.com"], "From"),
        (SIMPLE, "not an address", ["a@example.com"], "MAIL FROM"),
        (SIMPLE, "p@contoso.com", ["a@"], "RCPT TO"),
        (SIMPLE, "p@contoso.com", [], "rcptTo"),
        (
            mime("From: p@contoso.com", "Message-ID: <a@b>", "Message-ID: <c@d>"),
            "p@contoso.com",
            ["a@example.com"],
            "Message-ID",
        ),
        (
            mime("From: p@contoso.com", "Message-ID: <" + "x" * 300 + "@b>"),
            "p@contoso.com",
            ["a@example.com"],
            "Message-ID",
        ),
    ],
)
def test_unreadable_messages_are_refused_naming_the_field(
    data: bytes, mail_from: str, rcpt: list[str], field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_submission(data, mail_from, rcpt, max_bytes=10_000)
    assert caught.value.errors[0].field == field


def test_too_large_is_its_own_error() -> None:
    with pytest.raises(MessageTooLarge):
        parse_submission(SIMPLE, "printer@contoso.com", ["a@example.com"], max_bytes=10)


@pytest.mark.parametrize(
    ("data", "mail_from"),
    [
        (SIMPLE, "boss@fabrikam.com"),  # the envelope sender
        (mime("From: boss@fabrikam.com"), "printer@contoso.com"),  # the From header
        (mime("From: printer@contoso.com", "Sender: boss@fabrikam.com"), "printer@contoso.com"),
        (mime("From: printer@contoso.com, boss@fabrikam.com"), "printer@contoso.com"),
    ],
)
def test_every_claimed_sender_must_be_allowed(data: bytes, mail_from: str) -> None:
    sub = parse_submission(data, mail_from, ["a@example.com"], max_bytes=10_000)
    with pytest.raises(SenderNotAllowed, match="fabrikam"):
        check_senders([SenderPolicy(["*@contoso.com"])], sub)
    check_senders([SenderPolicy(["*@contoso.com", "*@fabrikam.com"])], sub)


def test_the_clients_own_policy_narrows_the_gateways() -> None:
    sub = parse_submission(SIMPLE, "printer@contoso.com", ["a@example.com"], max_bytes=10_000)
    gateway = SenderPolicy(["*@contoso.com"])
    with pytest.raises(SenderNotAllowed):
        check_senders([gateway, SenderPolicy(["scanner@contoso.com"])], sub)
    check_senders([gateway, SenderPolicy(["printer@contoso.com"])], sub)


def test_hidden_envelope_recipients_become_bcc_for_graph() -> None:
    data = mime("From: p@contoso.com", "To: A <A@example.com>", "Cc: c@example.com")
    out = with_bcc(data, ["a@example.com", "c@example.com", "h1@example.com", "h2@example.com"])
    parsed = BytesParser(policy=email.policy.default).parsebytes(out)
    assert [a.addr_spec for a in parsed["Bcc"].addresses] == ["h1@example.com", "h2@example.com"]
    assert out.endswith(data)
    assert with_bcc(data, ["a@example.com"]) == data


def test_quoted_printable_parts_go_as_base64_with_the_same_content() -> None:
    # A soft line break followed by hex-like characters: what Graph's QP re-encoding mangles.
    body = "Total =3D 42 and a very long line that needs a soft break here=\r\nAB12 end\r\n"
    data = mime(
        "From: p@contoso.com",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        body=body,
    )
    before = BytesParser(policy=email.policy.default).parsebytes(data)
    out = quoted_printable_as_base64(data)
    after = BytesParser(policy=email.policy.default).parsebytes(out)
    assert after["Content-Transfer-Encoding"] == "base64"
    assert after.get_payload(decode=True) == before.get_payload(decode=True)
    assert after["From"] == "p@contoso.com"
    assert quoted_printable_as_base64(SIMPLE) == SIMPLE  # nothing to do: untouched


def test_graph_takes_the_mime_base64_as_text_plain_within_4_mb() -> None:
    sub = parse_submission(
        SIMPLE, "printer@contoso.com", ["a@example.com", "h@example.com"], max_bytes=10**8
    )
    body, media_type = mime_request(sub)
    assert media_type == "text/plain"
    assert b"Bcc: h@example.com" in base64.b64decode(body)
    big = mime("From: p@contoso.com", body="x" * MAX_REQUEST_BYTES)
    large = parse_submission(big, "p@contoso.com", ["a@example.com"], max_bytes=10**8)
    with pytest.raises(TooLarge):
        mime_request(large)
