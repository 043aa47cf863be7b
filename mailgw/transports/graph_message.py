"""A send request as Microsoft Graph wants it: a JSON ``message`` or, when needed, a MIME message.

Graph's JSON message has ONE body (text or html). A request with both is sent as MIME (Graph's
``sendMail`` and draft creation accept Base64 MIME as ``text/plain``), rendered by the same
renderer as the outbox and SMTP, so the recipient gets multipart/alternative with both parts.
The cost, documented in the README: a MIME send is always saved to Sent Items.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.importance import Importance as GraphImportance
from msgraph.generated.models.internet_message_header import InternetMessageHeader
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient as GraphRecipient

from mailgw.models import Attachment, Importance, Recipient, SendRequest
from mailgw.render import render_mime

#: Graph refuses requests over 4 MB; Base64 inflates by 4/3, and the JSON needs room too.
MAX_INLINE_ATTACHMENT_BYTES = 2_800_000
#: An upload session takes attachments of 3 MB and more (and only those).
UPLOAD_SESSION_MIN_BYTES = 3 * 1024 * 1024

_IMPORTANCE = {
    Importance.low: GraphImportance.Low,
    Importance.normal: GraphImportance.Normal,
    Importance.high: GraphImportance.High,
}


def needs_mime(request: SendRequest) -> bool:
    """Both bodies given: only MIME keeps them both."""
    return bool(request.text and request.html)


def _recipients(recipients: Sequence[Recipient]) -> list[GraphRecipient]:
    return [
        GraphRecipient(email_address=EmailAddress(address=r.address, name=r.name))
        for r in recipients
    ]


def file_attachment(attachment: Attachment) -> FileAttachment:
    return FileAttachment(
        odata_type="#microsoft.graph.fileAttachment",
        name=attachment.name,
        content_type=attachment.content_type,
        content_bytes=attachment.content(),
        is_inline=attachment.inline,
        content_id=attachment.content_id,
    )


def graph_message(request: SendRequest, attachments: Sequence[Attachment] | None = None) -> Message:
    """The JSON message. ``attachments`` defaults to all of the request's."""
    html = bool(request.html)
    return Message(
        subject=request.subject,
        body=ItemBody(
            content_type=BodyType.Html if html else BodyType.Text,
            content=request.html if html else request.text,
        ),
        from_=GraphRecipient(
            email_address=EmailAddress(address=request.sender.address, name=request.sender.name)
        ),
        to_recipients=_recipients(request.to),
        cc_recipients=_recipients(request.cc),
        bcc_recipients=_recipients(request.bcc),
        reply_to=_recipients(request.reply_to),
        importance=_IMPORTANCE[request.importance],
        internet_message_headers=[
            InternetMessageHeader(name=name, value=value) for name, value in request.headers.items()
        ]
        or None,
        attachments=[
            file_attachment(a)
            for a in (request.attachments if attachments is None else attachments)
        ]
        or None,
    )


def mime_message(message_id: str, request: SendRequest, attachments: Sequence[Attachment]) -> bytes:
    """The MIME form, Bcc included: Graph takes a MIME message's recipients from its headers
    (Exchange removes Bcc before delivery, as any submission server does)."""
    partial = request.model_copy(update={"attachments": list(attachments)})
    return render_mime(message_id, partial, include_bcc=True).as_bytes()


def split_attachments(request: SendRequest) -> tuple[list[Attachment], list[Attachment]]:
    """(sent inside the first request, added to the draft afterwards).

    Everything goes inline while it fits one request; otherwise attachments of 3 MB and more go
    through upload sessions and the smaller ones are added one request each.
    """
    if sum(a.size for a in request.attachments) <= MAX_INLINE_ATTACHMENT_BYTES:
        return list(request.attachments), []
    return [], list(request.attachments)
