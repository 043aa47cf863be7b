"""What reaches Exchange Online over SMTP, byte for byte: client submission (STARTTLS + XOAUTH2 as
the ``from`` mailbox) and the relay connector (STARTTLS, no AUTH), through the gateway's
SmtpTransport.

The received DATA is parsed with the ``email`` package as a receiving MTA would: every header and
MIME part is checked, the envelope carries the Bcc recipients, and the data carries no trace of
them.
"""

from __future__ import annotations

import os
from email.message import EmailMessage

import pytest
from smtp_helpers import SENDER, addresses, attachment, body, outbound, parse

from mailgw.transports.smtp import SmtpTransport
from standins.identity import IdentityStandIn
from standins.smtp import OUTLOOK_RESOURCE, Received, SmtpStandIn

PDF = b"%PDF-1.7\n" + os.urandom(3000) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
CSV = "id;name\r\n1;café\r\n".encode()
BCC = ("hidden@example.net", "secret.person@example.org")


def full_request(sender: str = SENDER) -> dict[str, object]:
    return body(
        **{"from": {"address": sender, "name": "Contoso Billing"}},
        to=["a@example.com", {"address": "b@example.com", "name": "Bé Person"}],
        cc=[{"address": "c@example.com", "name": "C"}],
        bcc=[BCC[0], {"address": BCC[1], "name": "Secret Person"}],
        replyTo=[{"address": "help@contoso.com", "name": "Help Desk"}],
        subject="Your receipt nº 42 – café",
        text="plain body ✓\nsecond line\n",
        html='<p>html body <img src="cid:logo@contoso"></p>',
        attachments=[
            attachment("r.pdf", PDF, "application/pdf"),
            attachment("logo.png", PNG, "image/png", inline=True, content_id="logo@contoso"),
            attachment("data.csv", CSV, "text/csv"),
        ],
        headers={"X-Order-Id": "42", "X-Tenant": "contoso"},
        importance="high",
    )


def text_of(part: object) -> str:
    """A text part's content with MIME's canonical CRLF line ends read as newlines."""
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def check_message(received: Received, message_id: str, sender: str = SENDER) -> EmailMessage:
    """Everything the full request says, as the receiving side reads it; Bcc nowhere in the data."""
    data = received.data
    # the envelope: MAIL FROM the mailbox, RCPT TO every recipient once, Bcc included
    assert received.mail_from == sender
    assert list(received.rcpt_tos) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        *BCC,
    ]
    # Bcc travels only in the envelope: no header, no address, no name anywhere in the bytes
    for secret in (*BCC, "Secret Person"):
        assert secret.encode() not in data
    assert b"\r\nbcc:" not in data.lower() and not data.lower().startswith(b"bcc:")
    # wire form: CRLF only, no line over RFC 5321's 998 octets
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998

    message = parse(data)
    assert "Bcc" not in message
    assert addresses(message, "From") == [("Contoso Billing", sender)]
    assert addresses(message, "To") == [("", "a@example.com"), ("Bé Person", "b@example.com")]
    assert addresses(message, "Cc") == [("C", "c@example.com")]
    assert addresses(message, "Reply-To") == [("Help Desk", "help@contoso.com")]
    assert message["Subject"] == "Your receipt nº 42 – café"
    domain = sender.rpartition("@")[2]
    assert message["Message-ID"] == f"<{message_id}@{domain}>"
    assert message["Date"] is not None and message["Date"].datetime is not None
    assert message["MIME-Version"] == "1.0"
    assert message["X-Order-Id"] == "42"
    assert message["X-Tenant"] == "contoso"
    assert message["Importance"] == "High"
    assert message["X-Priority"] == "1"
    for name in ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "Date", "X-Order-Id"):
        assert len(message.get_all(name, [])) == 1, name

    # structure: mixed[alternative[text, related[html, inline image]], pdf, csv]
    assert message.get_content_type() == "multipart/mixed"
    top = list(message.iter_parts())
    assert [p.get_content_type() for p in top] == [
        "multipart/alternative",
        "application/pdf",
        "text/csv",
    ]
    alternative = list(top[0].iter_parts())
    assert [p.get_content_type() for p in alternative] == ["text/plain", "multipart/related"]
    related = list(alternative[1].iter_parts())
    assert [p.get_content_type() for p in related] == ["text/html", "image/png"]
    assert alternative[1].get_param("type") == "text/html"

    text, html, logo = alternative[0], related[0], related[1]
    assert text_of(text) == "plain body ✓\nsecond line\n"
    assert text_of(html).strip() == '<p>html body <img src="cid:logo@contoso"></p>'
    assert isinstance(logo, EmailMessage)
    assert logo.get_content() == PNG
    assert logo["Content-ID"] == "<logo@contoso>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_filename() == "logo.png"

    pdf, csv = top[1], top[2]
    assert isinstance(pdf, EmailMessage) and isinstance(csv, EmailMessage)
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_filename() == "r.pdf"
    assert pdf.get_content() == PDF  # byte-exact
    assert csv.get_filename() == "data.csv"
    assert csv.get_content_disposition() == "attachment"
    assert csv.get_payload(decode=True) == CSV  # byte-exact, CRLFs and all
    return message


async def send_every_field(transport: SmtpTransport, server: SmtpStandIn, name: str) -> Received:
    """Send :func:`full_request` through ``transport`` (named ``name`` in its receipt); what
    ``server`` received, each field checked by :func:`check_message`."""
    message = outbound(full_request())
    receipt = await transport.send(message)
    assert receipt.transport == name
    assert receipt.detail == f"{server.host}:{server.port}"
    (received,) = server.received
    check_message(received, message.id)
    return received


async def test_submission_sends_every_field_as_the_mailbox_over_tls(
    transport: SmtpTransport, smtp: SmtpStandIn, identity: IdentityStandIn
) -> None:
    received = await send_every_field(transport, smtp, "smtp")
    # XOAUTH2 as the from mailbox, with a managed-identity token for Exchange Online
    assert received.auth_user == SENDER
    (auth,) = smtp.auth_attempts
    assert (auth.mechanism, auth.user, auth.ok) == ("XOAUTH2", SENDER, True)
    (issued,) = identity.issued
    assert issued.flow == "managed_identity"
    assert issued.resource == OUTLOOK_RESOURCE  # scope https://outlook.office365.com/.default
    assert identity.requests[0].query["resource"] == OUTLOOK_RESOURCE
    # STARTTLS with TLS 1.2 or newer, before anything was authenticated or sent
    (connection,) = smtp.connections
    assert connection.tls and connection.tls_version in ("TLSv1.2", "TLSv1.3")
    assert received.tls and received.tls_version == connection.tls_version
    assert smtp.rejections == []


async def test_relay_sends_every_field_without_auth_from_an_accepted_domain(
    relay: SmtpTransport, relay_server: SmtpStandIn
) -> None:
    assert relay.credential is None  # the connector trusts the sender: no token, no identity
    received = await send_every_field(relay, relay_server, "relay")
    assert received.auth_user is None
    assert relay_server.auth_attempts == []
    (connection,) = relay_server.connections
    assert connection.tls and connection.tls_version in ("TLSv1.2", "TLSv1.3")
    assert connection.auth_user is None
    assert received.mail_from.rpartition("@")[2] in relay_server.accepted_domains


async def test_a_shared_mailbox_authenticates_as_itself(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    """App-only XOAUTH2 names the mailbox sent from (the service principal holds SendAs or
    FullAccess on it), so MAIL FROM and the AUTH user agree and 5.7.60 cannot arise from us."""
    smtp.send_as = {}  # Exchange's send-as check on: MAIL FROM must be the authenticated user
    shared = "shared-billing@contoso.com"
    message = outbound(full_request(shared))
    await transport.send(message)

    (received,) = smtp.received
    check_message(received, message.id, sender=shared)
    assert received.auth_user == shared
    assert smtp.rejections == []


async def test_text_only_and_html_only_messages(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    await transport.send(outbound(body(subject="text only", text="just text")))
    await transport.send(outbound(body(subject="html only", text=None, html="<b>bold</b>")))

    text_only, html_only = (parse(r.data) for r in smtp.received)
    assert text_only.get_content_type() == "text/plain"
    assert text_of(text_only) == "just text\n"
    assert "Importance" not in text_only and "X-Priority" not in text_only
    assert html_only.get_content_type() == "text/html"
    assert text_of(html_only).strip() == "<b>bold</b>"


async def test_a_line_starting_with_a_dot_survives_smtp_transparency(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    text = ".\n..leading dots\n.\nend\n"
    await transport.send(outbound(body(text=text)))
    (received,) = smtp.received
    assert text_of(parse(received.data)) == text


async def test_an_8bit_body_is_declared_or_encoded(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    """RFC 6152: content with octets above 127 is sent with ``MAIL FROM:<..> BODY=8BITMIME``;
    a client that does not declare it must send 7-bit content (quoted-printable / base64)."""
    await transport.send(outbound(body(text="Olá, café ✓", subject="8bit")))
    (received,) = smtp.received
    assert text_of(parse(received.data)) == "Olá, café ✓\n"
    eight_bit = any(byte > 127 for byte in received.data)
    options = [option.upper() for option in received.mail_options]
    assert not eight_bit or "BODY=8BITMIME" in options, (
        f"8-bit content sent without BODY=8BITMIME (MAIL FROM options: {options})"
    )


@pytest.mark.parametrize(
    "addresses_",
    [
        pytest.param({"to": ["josé@example.com"]}, id="recipient"),
        pytest.param({"bcc": ["zoë@exämple.com"]}, id="bcc-idn"),
    ],
)
async def test_internationalised_addresses_go_out_with_smtputf8(
    transport: SmtpTransport, smtp: SmtpStandIn, addresses_: dict[str, list[str]]
) -> None:
    """A non-ASCII address needs ``SMTPUTF8`` on MAIL FROM (RFC 6531); the stand-in, like
    Exchange Online, advertises it. Anything but a send or a DeliveryError is a crash."""
    request = body(**addresses_)
    await transport.send(outbound(request))
    (received,) = smtp.received
    assert "SMTPUTF8" in [option.upper() for option in received.mail_options]
    (address,) = next(iter(addresses_.values()))
    local = address.partition("@")[0]  # the domain may travel as IDNA (xn--...)
    assert [r for r in received.rcpt_tos if r.startswith(f"{local}@")], received.rcpt_tos
