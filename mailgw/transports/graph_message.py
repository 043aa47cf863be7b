"""A send request as Microsoft Graph wants it: a JSON ``message`` or, when needed, a MIME message.

Graph's JSON message has ONE body (text or html). A request with both is sent as MIME (Graph's
``sendMail`` and draft creation accept Base64 MIME as ``text/plain``), rendered by the same
renderer as the outbox and SMTP, so the recipient gets multipart/alternative with both parts.
The cost, documented in the README: a MIME send is always saved to Sent Items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailgw.models import Attachment, Recipient, SendRequest
from mailgw.render import render_mime

#: Graph refuses requests over 4 MB; Base64 inflates by 4/3, and the JSON needs room too.
MAX_INLINE_ATTACHMENT_BYTES = 2_800_000
#: An upload session takes attachments of 3 MB and more (and only those).
UPLOAD_SESSION_MIN_BYTES = 3 * 1024 * 1024


def needs_mime(request: SendRequest) -> bool:
    """Both bodies given: only MIME keeps them both."""
    return bool(request.text and request.html)


def _recipients(recipients: Sequence[Recipient]) -> list[dict[str, Any]]:
    return [
        {"emailAddress": {"address": r.address, **({"name": r.name} if r.name else {})}}
        for r in recipients
    ]


def file_attachment(attachment: Attachment) -> dict[str, Any]:
    """A ``fileAttachment``; the request's Base64 goes through as is (no decode, no re-encode)."""
    item: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": attachment.name,
        "contentType": attachment.content_type,
        "contentBytes": attachment.content_base64,
        "isInline": attachment.inline,
    }
    if attachment.content_id:
        item["contentId"] = attachment.content_id
    return item


def graph_message(
    request: SendRequest, attachments: Sequence[Attachment] | None = None
) -> dict[str, Any]:
    """The JSON ``message`` resource. ``attachments`` defaults to all of the request's.

    Plain JSON rather than msgraph-sdk's model classes: building those costs about 0.5 ms of CPU
    per message (their backing store tracks every property), a fifth of the delivery budget at
    Graph's concurrency; the SDK still sends it (auth, middleware, error mapping).
    """
    html = bool(request.html)
    message: dict[str, Any] = {
        "subject": request.subject,
        "body": {
            "contentType": "html" if html else "text",
            "content": request.html if html else request.text,
        },
        "from": _recipients([request.sender])[0],
        "toRecipients": _recipients(request.to),
        "ccRecipients": _recipients(request.cc),
        "bccRecipients": _recipients(request.bcc),
        "replyTo": _recipients(request.reply_to),
        "importance": request.importance.value,
    }
    if request.headers:
        message["internetMessageHeaders"] = [
            {"name": name, "value": value} for name, value in request.headers.items()
        ]
    chosen = request.attachments if attachments is None else attachments
    if chosen:
        message["attachments"] = [file_attachment(a) for a in chosen]
    return message


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
