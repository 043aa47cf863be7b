"""Raw MIME (SMTP intake) over the SMTP transports: the bytes as submitted, to the envelope.

Client submission authenticates as MAIL FROM (XOAUTH2); the relay sends without AUTH. Either way
the DATA is the submitted message byte for byte, RCPT TO every envelope recipient (Bcc included),
and an 8-bit or UTF-8 message is declared as such (BODY=8BITMIME, SMTPUTF8).
"""

from __future__ import annotations

from mailgw.mime import Submission, parse_submission
from mailgw.transports.base import OutboundMessage
from mailgw.transports.smtp import SmtpTransport
from standins.smtp import SmtpStandIn

SCAN = (
    b"From: Scanner <scanner@contoso.com>\r\n"
    b"To: a@example.com\r\n"
    b"Subject: Scan\r\n"
    b"Message-ID: <scan-1@contoso.com>\r\n"
    b"\r\n"
    b"A scan.\r\n.leading dot kept\r\n"
)


def outbound(data: bytes, rcpt: list[str], utf8: bool = False) -> OutboundMessage:
    sub: Submission = parse_submission(
        data, "scanner@contoso.com", rcpt, max_bytes=10**7, utf8=utf8
    )
    return OutboundMessage(id="m-1", request=sub.summary(), mime=sub)


async def test_submission_sends_the_bytes_to_every_envelope_recipient(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    receipt = await transport.send_mime(outbound(SCAN, ["a@example.com", "hidden@example.net"]))
    assert receipt.transport == "smtp"
    (received,) = smtp.received
    assert received.data == SCAN
    assert received.mail_from == "scanner@contoso.com"
    assert received.auth_user == "scanner@contoso.com"
    assert received.rcpt_tos == ("a@example.com", "hidden@example.net")


async def test_the_relay_sends_the_bytes_too(
    relay: SmtpTransport, relay_server: SmtpStandIn
) -> None:
    await relay.send(outbound(SCAN, ["a@example.com"]))
    (received,) = relay_server.received
    assert received.data == SCAN
    assert received.auth_user is None


async def test_an_8bit_utf8_message_is_declared(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    data = "From: scanner@contoso.com\r\nTo: josé@example.com\r\nSubject: Grüße\r\n\r\nCafé\r\n"
    await transport.send_mime(outbound(data.encode(), ["josé@example.com"], utf8=True))
    (received,) = smtp.received
    assert received.data == data.encode()
    assert "SMTPUTF8" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options
    assert received.rcpt_tos == ("josé@example.com",)
