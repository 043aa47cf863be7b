"""Raw MIME (SMTP intake) through Graph: sendMail with Base64 MIME, and draft mode exactly once.

Checked at the Graph stand-in, in what it received: the mailbox is MAIL FROM, hidden envelope
recipients arrive as Bcc, quoted-printable parts as Base64 with the same content, and a lost
answer to ``/send`` in draft mode is found by the message's own Message-ID, not sent again.
"""

from __future__ import annotations

import base64
import email.policy
from collections.abc import Callable
from email.parser import BytesParser

import pytest
from graph_helpers import Pipeline

from mailgw.intake import Intake
from mailgw.mime import Submission, parse_submission
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports.base import OutboundMessage
from mailgw.transports.graph import GraphTransport
from mailgw.transports.graph_submission import PENDING
from standins.graph import GraphStandIn

QP_BODY = "Caf=C3=A9 total =3D 42, a line long enough to need a soft break here=\r\nAB12 end\r\n"
SCAN = (
    "From: Scanner <scanner@contoso.com>\r\n"
    "To: Ana <ana@example.com>\r\n"
    "Subject: Scan 42\r\n"
    "Message-ID: <scan-42@contoso.com>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: text/plain; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n" + QP_BODY
).encode()


def scan(rcpt: list[str] | None = None) -> Submission:
    return parse_submission(
        SCAN,
        "scanner@contoso.com",
        rcpt or ["ana@example.com", "hidden@example.com"],
        max_bytes=10**7,
        client="scanner",
    )


def outbound(submission: Submission, message_id: str = "m-1") -> OutboundMessage:
    return OutboundMessage(id=message_id, request=submission.summary(), mime=submission)


@pytest.fixture(params=["sendmail", "draft"])
def any_transport(
    request: pytest.FixtureRequest, transport: GraphTransport, draft_transport: GraphTransport
) -> GraphTransport:
    return transport if request.param == "sendmail" else draft_transport


async def test_mime_arrives_as_submitted_with_hidden_recipients_as_bcc(
    any_transport: GraphTransport, graph: GraphStandIn
) -> None:
    receipt = await any_transport.send_mime(outbound(scan()))
    assert receipt.transport == "graph"
    (delivered,) = graph.delivered
    assert delivered.via == ("draft" if any_transport.mode == "draft" else "mime")
    assert delivered.mailbox == "scanner@contoso.com"
    assert delivered.to == ["ana@example.com"]
    assert delivered.bcc == ["hidden@example.com"]
    assert delivered.message["internetMessageId"] == "<scan-42@contoso.com>"
    assert delivered.mime is not None
    sent = BytesParser(policy=email.policy.default).parsebytes(delivered.mime)
    original = BytesParser(policy=email.policy.default).parsebytes(SCAN)
    assert sent["Content-Transfer-Encoding"] == "base64"  # QP is not left to Graph to re-encode
    assert sent.get_payload(decode=True) == original.get_payload(decode=True)
    assert sent.get_content() == original.get_content()
    request = graph.requests[-1] if any_transport.mode == "sendmail" else None
    if request is not None:
        assert request.media_type() == "text/plain"
        assert base64.b64decode(request.body) == delivered.mime


async def test_no_bcc_header_when_every_recipient_is_in_to_or_cc(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    await transport.send_mime(outbound(scan(["ana@example.com"])))
    (delivered,) = graph.delivered
    assert delivered.mime is not None and b"Bcc:" not in delivered.mime


async def test_draft_mode_finds_a_lost_send_by_the_message_id_and_sends_once(
    draft_with_grace: Callable[[int], GraphTransport],
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    queue_settings: Settings,
    store: StateStore,
) -> None:
    graph.submit_lag_seconds = 3600  # Exchange holds the draft "being sent" until told
    graph.accept_then_fail(mode="status", status=504, operation="send")
    pipeline = make_pipeline(draft_with_grace(20))
    intake = Intake(queue_settings, pipeline.queue, store)
    result = await intake.submit_mime(scan())
    await intake.drain()

    first = await pipeline.step()
    assert first.outcome.error is not None and first.outcome.error.code == PENDING
    graph.submission.complete_pending()
    await pipeline.run()
    assert pipeline.actions[-1] == "sent"
    assert len(graph.requests_for("send")) == 1
    assert len(graph.requests_for("createMessage")) == 1
    (delivered,) = graph.delivered
    assert delivered.message["internetMessageId"] == "<scan-42@contoso.com>"
    record = await store.get(result.id)
    assert record is not None and record.status == "sent"


async def test_mime_over_graphs_request_limit_is_refused_at_intake(
    graph_settings: Callable[..., Settings],
) -> None:
    from mailgw.errors import MessageTooLarge
    from mailgw.transports import check_mime_fits, max_mime_bytes

    settings = graph_settings()
    assert max_mime_bytes(settings) < 3_000_000
    check_mime_fits(settings, 2_000_000)
    with pytest.raises(MessageTooLarge, match="graph"):
        check_mime_fits(settings, 3_500_000)
