"""Render with ``render_mime``, parse the bytes back with the stdlib, and check every field."""

from __future__ import annotations

import email
import email.policy
import json
import random
from datetime import UTC, datetime
from email.message import EmailMessage, MIMEPart
from typing import Any

import pytest
from pydantic import ValidationError
from unit_helpers import NOW, b64, valid_request

from mailgw.models import Recipient, SendRequest
from mailgw.settings import Settings
from mailgw.transports.render import envelope_recipients, message_id_for, render_mime
from mailgw.validation import validate_request
from support import raises_problem

MESSAGE_ID = "01900000-0000-7000-8000-000000000001"
PDF = bytes(random.Random(42).getrandbits(8) for _ in range(5000))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3


def request(**overrides: Any) -> SendRequest:
    return SendRequest.model_validate(valid_request(**overrides), context={"now": NOW})


def render(req: SendRequest) -> tuple[bytes, EmailMessage]:
    raw = render_mime(MESSAGE_ID, req, now=NOW).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def content(part: MIMEPart | None) -> str:
    """A text part's content with the wire's CRLF turned back into the caller's LF."""
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def structure(msg: EmailMessage) -> Any:
    """The MIME tree as nested content types, e.g. ("multipart/mixed", [..., "application/pdf"])."""
    if msg.is_multipart():
        return (msg.get_content_type(), [structure(p) for p in msg.iter_parts()])  # type: ignore[arg-type]
    return msg.get_content_type()


RICH = {
    "from": {"address": "noreply@contoso.com", "name": "Zoë Contoso"},
    "to": [
        {"address": "a@example.com", "name": "Ångström, A."},
        "b@example.com",
    ],
    "cc": [{"address": "c@example.com", "name": "Carla Cc"}],
    "bcc": ["secret.bcc@hidden.example", {"address": "other.bcc@hidden.example", "name": "Bee"}],
    "replyTo": [{"address": "help@contoso.com", "name": "Help “desk”"}],
    "subject": "Recibo nº 42 — ação concluída ✓",
    "text": "Olá, segue o recibo.",
    "html": '<p>Olá, segue o recibo.</p><img src="cid:logo@contoso">',
    "attachments": [
        {
            "name": "logo.png",
            "contentType": "image/png",
            "contentBase64": b64(PNG),
            "inline": True,
            "contentId": "logo@contoso",
        },
        {"name": "relatório.pdf", "contentType": "application/pdf", "contentBase64": b64(PDF)},
        {"name": "notes.txt", "contentType": "text/plain", "contentBase64": b64(b"a\r\nb\n")},
    ],
    "headers": {"X-Order-Id": "42", "X-Tenant": "contoso"},
    "importance": "high",
}


@pytest.fixture
def rich() -> tuple[bytes, EmailMessage]:
    return render(SendRequest.model_validate(RICH, context={"now": NOW}))


# --- addresses and headers ----------------------------------------------------------------------


def test_address_headers_with_display_names(rich: tuple[bytes, EmailMessage]) -> None:
    _, msg = rich
    sender = msg["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in sender] == [
        ("Zoë Contoso", "noreply@contoso.com")
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Ångström, A.", "a@example.com"),
        ("", "b@example.com"),
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["Cc"].addresses] == [
        ("Carla Cc", "c@example.com")
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["Reply-To"].addresses] == [
        ("Help “desk”", "help@contoso.com")
    ]


def test_subject_non_ascii(rich: tuple[bytes, EmailMessage]) -> None:
    raw, msg = rich
    assert msg["Subject"] == "Recibo nº 42 — ação concluída ✓"
    assert b"Subject: Recibo =?utf-8?" in raw  # encoded words, not raw 8-bit, in an ASCII message


def test_date_is_present_and_parseable(rich: tuple[bytes, EmailMessage]) -> None:
    _, msg = rich
    assert msg["Date"].datetime == NOW


def test_date_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    msg = email.message_from_bytes(
        render_mime(MESSAGE_ID, request()).as_bytes(), policy=email.policy.default
    )
    assert before <= msg["Date"].datetime <= datetime.now(UTC)


def test_message_id_uses_the_id_and_the_sender_domain(rich: tuple[bytes, EmailMessage]) -> None:
    _, msg = rich
    assert msg["Message-ID"] == f"<{MESSAGE_ID}@contoso.com>"
    assert len(msg.get_all("Message-ID") or []) == 1


def test_message_id_of_an_idn_domain_is_ascii() -> None:
    assert message_id_for("m1", "noreply@bücher.de") == "<m1@xn--bcher-kva.de>"


def test_custom_x_headers(rich: tuple[bytes, EmailMessage]) -> None:
    _, msg = rich
    assert msg["X-Order-Id"] == "42"
    assert msg["X-Tenant"] == "contoso"


@pytest.mark.parametrize(
    ("importance", "header", "priority"),
    [("high", "High", "1"), ("low", "Low", "5"), ("normal", None, None)],
)
def test_importance(importance: str, header: str | None, priority: str | None) -> None:
    _, msg = render(request(importance=importance))
    assert msg["Importance"] == header
    assert msg["X-Priority"] == priority


def test_no_header_is_duplicated_when_the_caller_sets_x_priority() -> None:
    """importance=high sets X-Priority itself; a caller's own X-Priority must not make a second:
    the caller's header is taken as given, and ``importance`` still sets Importance."""
    req = request(importance="high", headers={"X-Priority": "5"})
    _, msg = render(req)
    assert msg.get_all("X-Priority") == ["5"]
    assert msg["Importance"] == "High"


# --- Bcc ----------------------------------------------------------------------------------------


def test_bcc_is_nowhere_in_the_message(rich: tuple[bytes, EmailMessage]) -> None:
    raw, msg = rich
    assert "Bcc" not in msg
    assert b"bcc:" not in raw.lower()
    assert b"hidden.example" not in raw.lower()
    assert b"secret.bcc" not in raw.lower()
    assert b"Bee" not in raw


def test_envelope_recipients_include_bcc_once_each() -> None:
    req = request(
        to=["a@example.com", "b@example.com"],
        cc=["c@example.com", "a@example.com"],
        bcc=["d@example.com", "b@example.com", {"address": "d@example.com", "name": "D"}],
    )
    assert envelope_recipients(req) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]


def test_envelope_recipients_of_a_bcc_only_message() -> None:
    req = request(to=[], bcc=["x@example.com"])
    assert envelope_recipients(req) == ["x@example.com"]
    raw, msg = render(req)
    assert "To" not in msg
    assert b"x@example.com" not in raw


# --- body structure -----------------------------------------------------------------------------


def test_text_and_html_are_multipart_alternative() -> None:
    _, msg = render(request(text="plain body", html="<p>html body</p>"))
    assert structure(msg) == ("multipart/alternative", ["text/plain", "text/html"])
    assert content(msg.get_body(("plain",))) == "plain body\n"
    assert content(msg.get_body(("html",))) == "<p>html body</p>\n"


def test_text_only_is_text_plain() -> None:
    _, msg = render(request(text="only text"))
    assert structure(msg) == "text/plain"
    assert content(msg) == "only text\n"
    assert msg.get_content_charset() == "utf-8"


def test_html_only_is_text_html() -> None:
    _, msg = render(request(text=None, html="<p>only html</p>"))
    assert structure(msg) == "text/html"
    assert content(msg) == "<p>only html</p>\n"


def test_non_ascii_bodies_survive() -> None:
    _, msg = render(request(text="Ação ✓ 日本語", html="<p>Ação ✓ 日本語</p>"))
    assert content(msg.get_body(("plain",))) == "Ação ✓ 日本語\n"
    assert content(msg.get_body(("html",))) == "<p>Ação ✓ 日本語</p>\n"


def test_inline_image_is_related_to_the_html(rich: tuple[bytes, EmailMessage]) -> None:
    _, msg = rich
    assert structure(msg) == (
        "multipart/mixed",
        [
            (
                "multipart/alternative",
                ["text/plain", ("multipart/related", ["text/html", "image/png"])],
            ),
            "application/pdf",
            "text/plain",
        ],
    )
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo@contoso>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_payload(decode=True) == PNG
    assert "cid:logo@contoso" in html.get_content()


def test_inline_image_of_an_html_only_message() -> None:
    att = {
        "name": "logo.png",
        "contentType": "image/png",
        "contentBase64": b64(PNG),
        "inline": True,
        "contentId": "logo",
    }
    _, msg = render(request(text=None, html='<img src="cid:logo">', attachments=[att]))
    assert structure(msg) == ("multipart/related", ["text/html", "image/png"])
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo>"


def test_a_file_before_an_inline_image_of_an_html_only_message() -> None:
    """The inline image relates to the html even when a file comes first in the request (the
    html part was the root, and the file made the root multipart/mixed)."""
    files = [
        {"name": "r.pdf", "contentType": "application/pdf", "contentBase64": b64(PDF)},
        {"name": "logo.png", "contentType": "image/png", "contentBase64": b64(PNG),
         "inline": True, "contentId": "logo"},
    ]  # fmt: skip
    _, msg = render(request(text=None, html='<img src="cid:logo">', attachments=files))
    assert structure(msg) == (
        "multipart/mixed",
        [("multipart/related", ["text/html", "image/png"]), "application/pdf"],
    )


def test_attachments_are_byte_exact(rich: tuple[bytes, EmailMessage]) -> None:
    _, msg = rich
    files = {a.get_filename(): a for a in msg.iter_attachments()}
    assert set(files) == {"relatório.pdf", "notes.txt"}
    pdf = files["relatório.pdf"]
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_payload(decode=True) == PDF
    notes = files["notes.txt"]
    assert notes.get_content_type() == "text/plain"
    assert notes.get_payload(decode=True) == b"a\r\nb\n"  # line endings untouched


@pytest.mark.parametrize("size", [0, 1, 2, 3, 57, 58, 1000, 100_003])
def test_binary_attachment_round_trip(size: int) -> None:
    data = random.Random(size).randbytes(size)
    att = {
        "name": "blob.bin",
        "contentType": "application/octet-stream",
        "contentBase64": b64(data),
    }
    _, msg = render(request(attachments=[att]))
    (part,) = list(msg.iter_attachments())
    assert part.get_payload(decode=True) == data
    assert part.get_content_type() == "application/octet-stream"


def test_inline_attachment_without_html_is_still_attached() -> None:
    att = {"name": "i.png", "contentType": "image/png", "contentBase64": b64(PNG), "inline": True,
           "contentId": "i"}  # fmt: skip
    _, msg = render(request(text="t", attachments=[att]))
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert image.get_payload(decode=True) == PNG
    assert image["Content-ID"] == "<i>"


# --- wire format --------------------------------------------------------------------------------


def test_lines_are_crlf_and_at_most_998_octets() -> None:
    req = request(
        subject="Ação " + "x" * 990,
        text="a" * 5000 + "\n" + "word " * 2000,
        html="<p>" + "é" * 4000 + "</p>",
        headers={"X-Long": "v" * 998, "X-Spaced": ("w " * 499).strip()},
        attachments=[{"name": "n" * 200 + ".bin", "contentBase64": b64(PDF)}],
    )
    raw, msg = render(req)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert msg["X-Long"] == "v" * 998
    assert content(msg.get_body(("plain",))).startswith("a" * 5000 + "\nword word")


def test_mime_version_appears_once(rich: tuple[bytes, EmailMessage]) -> None:
    raw, msg = rich
    assert raw.count(b"MIME-Version:") == 1
    assert msg["MIME-Version"] == "1.0"


def test_non_ascii_local_part_is_accepted_and_rendered() -> None:
    """An address the model accepts must render, or the 202 is a promise delivery cannot keep.

    email-validator accepts internationalised local parts (SMTPUTF8); the stdlib's
    ``Address(addr_spec=...)`` refuses them, so rendering builds addresses from their parts.
    """
    req = request(to=[{"address": "josé@example.com", "name": "José"}])
    raw = render_mime(MESSAGE_ID, req, now=NOW).as_bytes()
    assert "josé@example.com".encode() in raw
    msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("José", "josé@example.com")
    ]
    assert envelope_recipients(req) == ["josé@example.com"]


def test_non_ascii_domain_renders() -> None:
    """An international domain is rendered in its IDNA form, so the message needs no SMTPUTF8."""
    req = request(to=[{"address": "user@bücher.de", "name": "Bücher"}])
    raw = render_mime(MESSAGE_ID, req, now=NOW).as_bytes()
    msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    ((name, domain),) = [(a.display_name, a.domain) for a in msg["To"].addresses]
    assert name == "Bücher"
    assert domain == "xn--bcher-kva.de"
    assert raw.isascii()
    assert envelope_recipients(req) == ["user@xn--bcher-kva.de"]


# --- injection ----------------------------------------------------------------------------------

INJECTIONS = [
    ("subject", {"subject": "Hi\r\nBcc: victim@evil.example"}, "subject"),
    ("subject-lf", {"subject": "Hi\nBcc: victim@evil.example"}, "subject"),
    (
        "display-name",
        {"to": [{"address": "a@example.com", "name": "A\r\nBcc: victim@evil.example"}]},
        "to[0].name",
    ),
    ("header-value", {"headers": {"X-Foo": "1\r\nBcc: victim@evil.example"}}, "headers.X-Foo"),
    (
        "header-name",
        {"headers": {"X-Foo: 1\r\nBcc": "victim@evil.example"}},
        r"headers.X-Foo: 1\r\nBcc",
    ),
    (
        "attachment-name",
        {"attachments": [{"name": "a\r\nBcc: v@evil.example", "contentBase64": ""}]},
        "attachments[0].name",
    ),
]


@pytest.mark.parametrize(
    ("where", "overrides", "field"), INJECTIONS, ids=[row[0] for row in INJECTIONS]
)
def test_crlf_injection_is_blocked_before_rendering(
    where: str, overrides: dict[str, Any], field: str
) -> None:
    """A request that would smuggle a Bcc header cannot become a model, so it is never rendered."""
    document = valid_request(**overrides)
    with pytest.raises(ValidationError):
        SendRequest.model_validate(document, context={"now": NOW})
    with raises_problem() as caught:
        validate_request(json.loads(json.dumps(document)), Settings(), now=NOW)
    assert caught.value.status == 400
    assert field in [e.field for e in caught.value.errors]


def test_recipient_model_refuses_crlf_in_name() -> None:
    with pytest.raises(ValidationError, match="CR or LF"):
        Recipient(address="a@example.com", name="A\r\nBcc: victim@evil.example")


def test_renderer_also_refuses_crlf_if_validation_were_bypassed() -> None:
    """Defence in depth: even an unvalidated model (model_construct) cannot inject a header."""
    valid = request()
    smuggled = valid.model_copy(update={"subject": "Hi\r\nBcc: victim@evil.example"})
    with pytest.raises(ValueError, match=r"linefeed|carriage return|CR or LF"):
        render_mime(MESSAGE_ID, smuggled, now=NOW).as_bytes()
