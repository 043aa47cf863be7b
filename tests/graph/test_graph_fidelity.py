"""Every field of a send request arrives at Graph as sent: checked at the stand-in, in what it
received and parsed (JSON message, or the MIME message it parsed), for sendMail and draft mode."""

from __future__ import annotations

import base64
import email.policy
import os
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from graph_helpers import SENDER, SHARED, attachment, body, outbound

from mailgw.transports.graph import GraphTransport
from standins.graph import DeliveredMessage, GraphStandIn

LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
REPORT = os.urandom(120_000)
MODES = ["sendmail", "draft"]


def full_request(**overrides: Any) -> dict[str, Any]:
    """A request using every field, with non-ASCII names and subject."""
    document = body(
        to=[{"address": "ana@example.com", "name": "Ana Müller"}, "bob@example.com"],
        cc=[{"address": "carla@example.com", "name": "Carla Ñúñez"}],
        bcc=[{"address": "hidden@example.com", "name": "Hidden Auditor"}],
        replyTo=[{"address": "support@contoso.com", "name": "Support – Contoso"}],
        subject="Ihre Rechnung №42 – grüße 🧾",
        text=None,
        html='<p>Grüße <img src="cid:logo@contoso"></p>',
        attachments=[
            attachment("Rechnung 42.pdf", REPORT, "application/pdf"),
            attachment("logo.png", LOGO, "image/png", inline=True, content_id="logo@contoso"),
        ],
        headers={"X-Order-Id": "42", "X-Tenant": "t-7"},
        importance="high",
    )
    document.update(overrides)
    return document


@pytest.fixture(params=MODES)
def any_transport(
    request: pytest.FixtureRequest, transport: GraphTransport, draft_transport: GraphTransport
) -> GraphTransport:
    return transport if request.param == "sendmail" else draft_transport


def only_delivery(graph: GraphStandIn) -> DeliveredMessage:
    assert len(graph.delivered) == 1, graph.delivered
    return graph.delivered[0]


def parse_mime(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed


def assert_every_field(delivered: DeliveredMessage) -> None:
    assert delivered.mailbox == SENDER
    assert delivered.sender == SENDER
    assert delivered.named("toRecipients") == [
        ("ana@example.com", "Ana Müller"),
        ("bob@example.com", None),
    ]
    assert delivered.named("ccRecipients") == [("carla@example.com", "Carla Ñúñez")]
    assert delivered.named("bccRecipients") == [("hidden@example.com", "Hidden Auditor")]
    assert delivered.named("replyTo") == [("support@contoso.com", "Support – Contoso")]
    assert delivered.subject == "Ihre Rechnung №42 – grüße 🧾"
    assert delivered.importance == "high"
    assert delivered.headers["X-Order-Id"] == "42"
    assert delivered.headers["X-Tenant"] == "t-7"
    pdf, logo = delivered.attachment("Rechnung 42.pdf"), delivered.attachment("logo.png")
    assert (pdf.content, pdf.content_type, pdf.is_inline) == (REPORT, "application/pdf", False)
    assert (logo.content, logo.content_type) == (LOGO, "image/png")
    assert (logo.is_inline, logo.content_id) == (True, "logo@contoso")
    assert len(delivered.attachments) == 2


async def test_json_message_carries_every_field(
    any_transport: GraphTransport, graph: GraphStandIn
) -> None:
    await any_transport.send(outbound(full_request()))

    delivered = only_delivery(graph)
    assert_every_field(delivered)
    assert (delivered.body_type, delivered.body_content) == (
        "html",
        '<p>Grüße <img src="cid:logo@contoso"></p>',
    )
    assert delivered.headers == {"X-Order-Id": "42", "X-Tenant": "t-7"}
    assert delivered.via == ("sendMail" if any_transport.mode == "sendmail" else "draft")
    # JSON, not MIME: the stand-in got Graph's message object
    assert all(
        (r.header("Content-Type") or "").startswith("application/json")
        for r in graph.requests
        if r.body
    )


async def test_text_only_body(any_transport: GraphTransport, graph: GraphStandIn) -> None:
    await any_transport.send(outbound(body(text="Hallo Welt,\nzweite Zeile. ✓", html=None)))

    delivered = only_delivery(graph)
    assert delivered.body_type == "text"
    assert delivered.body_content == "Hallo Welt,\nzweite Zeile. ✓"
    assert delivered.mime is None


async def test_html_only_body(any_transport: GraphTransport, graph: GraphStandIn) -> None:
    await any_transport.send(outbound(body(text=None, html="<h1>Olá</h1>")))

    delivered = only_delivery(graph)
    assert (delivered.body_type, delivered.body_content) == ("html", "<h1>Olá</h1>")


def alternatives(message: EmailMessage) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html") and not part.is_attachment():
            assert isinstance(part, EmailMessage)
            found[part.get_content_type()] = part.get_content().strip()
    return found


async def test_text_and_html_go_as_mime_with_both_alternatives(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    await transport.send(outbound(full_request(text="Grüße (plain)"), message_id="m-42"))

    delivered = only_delivery(graph)
    assert delivered.via == "mime"
    (wire,) = graph.requests_for("sendMail")
    assert (wire.header("Content-Type") or "").startswith("text/plain")
    assert delivered.mime is not None
    mime = parse_mime(delivered.mime)
    assert alternatives(mime) == {
        "text/plain": "Grüße (plain)",
        "text/html": '<p>Grüße <img src="cid:logo@contoso"></p>',
    }
    assert any(p.get_content_type() == "multipart/alternative" for p in mime.walk())
    assert mime["Message-ID"] == "<m-42@contoso.com>"  # stable across retries: receivers dedup
    # Graph takes a MIME message's recipients from its headers: Bcc must be there, and it is what
    # the stand-in (as Exchange) parsed out of it.
    assert "hidden@example.com" in str(mime["Bcc"])
    assert delivered.bcc == ["hidden@example.com"]
    assert_every_field(delivered)
    assert delivered.body_type == "html"  # what Exchange shows as the message body


async def test_draft_mode_builds_the_draft_from_mime_with_both_alternatives(
    draft_transport: GraphTransport, graph: GraphStandIn
) -> None:
    await draft_transport.send(outbound(full_request(text="Grüße (plain)")))

    delivered = only_delivery(graph)
    assert delivered.via == "draft"
    (create,) = graph.requests_for("createMessage")
    assert (create.header("Content-Type") or "").startswith("text/plain")
    mime = parse_mime(base64.b64decode(create.body))
    assert alternatives(mime) == {
        "text/plain": "Grüße (plain)",
        "text/html": '<p>Grüße <img src="cid:logo@contoso"></p>',
    }
    assert delivered.bcc == ["hidden@example.com"]
    assert_every_field(delivered)
    assert graph.requests_for("send")[0].message_id == create.message_id


@pytest.mark.parametrize("importance", ["low", "normal", "high"])
async def test_importance(
    any_transport: GraphTransport, graph: GraphStandIn, importance: str
) -> None:
    await any_transport.send(outbound(body(importance=importance)))
    assert only_delivery(graph).importance == importance


@pytest.mark.parametrize("importance", ["low", "high"])
async def test_importance_in_mime(
    transport: GraphTransport, graph: GraphStandIn, importance: str
) -> None:
    await transport.send(outbound(body(html="<p>x</p>", importance=importance)))
    delivered = only_delivery(graph)
    assert (delivered.via, delivered.importance) == ("mime", importance)


@pytest.mark.parametrize("save", [True, False])
async def test_save_to_sent_items_is_passed_on(
    transport: GraphTransport, graph: GraphStandIn, save: bool
) -> None:
    await transport.send(outbound(body(saveToSentItems=save)))

    (wire,) = graph.requests_for("sendMail")
    assert {k.lower(): v for k, v in wire.json.items()}["savetosentitems"] is save
    assert only_delivery(graph).save_to_sent_items is save


async def test_draft_mode_always_keeps_a_copy_in_sent_items(
    draft_transport: GraphTransport, graph: GraphStandIn
) -> None:
    """Documented limit (README): a sent draft is always saved, whatever saveToSentItems says
    (the gateway does not, say, delete it from Sent Items afterwards)."""
    await draft_transport.send(outbound(body(subject="kept", saveToSentItems=False)))
    assert only_delivery(graph).via == "draft"
    assert [r.operation for r in graph.requests] == ["createMessage", "send"]
    sent_items = graph.drafts.in_folder(SENDER, "SentItems")
    assert [item.message["subject"] for item in sent_items] == ["kept"]


async def test_custom_headers_are_internet_message_headers(
    any_transport: GraphTransport, graph: GraphStandIn
) -> None:
    headers = {f"X-Custom-{i}": f"value {i} ✓" for i in range(5)}  # Graph's maximum
    await any_transport.send(outbound(body(headers=headers)))
    assert only_delivery(graph).headers == headers


async def test_attachments_are_byte_exact(
    any_transport: GraphTransport, graph: GraphStandIn
) -> None:
    files = {
        "empty.txt": (b"", "text/plain"),
        "zeros.bin": (bytes(1000), "application/octet-stream"),
        "random.dat": (os.urandom(300_001), "application/x-custom"),
        "tabelle ü.csv": ("a;b\r\n1;ä\r\n".encode(), "text/csv"),
    }
    await any_transport.send(
        outbound(body(attachments=[attachment(n, d, t) for n, (d, t) in files.items()]))
    )

    delivered = only_delivery(graph)
    assert sorted(a.name for a in delivered.attachments) == sorted(files)
    for name, (data, content_type) in files.items():
        got = delivered.attachment(name)
        assert (got.content, got.content_type, got.is_inline) == (data, content_type, False)


@pytest.mark.parametrize("mode", MODES)
async def test_sends_as_a_shared_mailbox_through_that_mailbox(
    transport: GraphTransport, draft_transport: GraphTransport, graph: GraphStandIn, mode: str
) -> None:
    graph.send_as = {}  # Exchange: the from must be the mailbox the request goes through
    chosen = transport if mode == "sendmail" else draft_transport
    await chosen.send(outbound(body(**{"from": {"address": SHARED, "name": "Billing"}})))

    delivered = only_delivery(graph)
    assert (delivered.mailbox, delivered.sender) == (SHARED, SHARED)
    assert delivered.message["from"]["emailAddress"] == {"address": SHARED, "name": "Billing"}
    assert graph.requests and all(r.mailbox == SHARED for r in graph.requests)
    assert all(r.path.startswith(f"/v1.0/users/{SHARED}/") for r in graph.requests)


async def test_the_mailbox_in_the_url_is_the_from_of_each_message(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    senders = [SENDER, SHARED, "alerts@contoso.com"]
    for sender in senders:
        await transport.send(outbound(body(**{"from": sender})))
    assert [r.mailbox for r in graph.requests] == senders
    assert [(d.mailbox, d.sender) for d in graph.delivered] == [(s, s) for s in senders]


async def test_unicode_names_and_subject_in_mime(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    await transport.send(
        outbound(
            body(
                **{"from": {"address": SENDER, "name": "Zoë Ärger"}},
                to=[{"address": "li@example.com", "name": "李小龍"}],
                subject="Ünïcödé ✉ 件名",
                html="<p>本文</p>",
                text="本文",
            )
        )
    )
    delivered = only_delivery(graph)
    assert delivered.via == "mime"
    assert delivered.subject == "Ünïcödé ✉ 件名"
    assert delivered.named("toRecipients") == [("li@example.com", "李小龍")]
    assert delivered.message["from"]["emailAddress"] == {"address": SENDER, "name": "Zoë Ärger"}
    assert alternatives(parse_mime(delivered.mime or b"")) == {
        "text/plain": "本文",
        "text/html": "<p>本文</p>",
    }
