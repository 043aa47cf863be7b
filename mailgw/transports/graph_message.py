"""A send request as Microsoft Graph wants it: a JSON ``message`` or, when needed, a MIME message.

Graph's JSON message has ONE body (text or html). A request with both is sent as MIME (Graph's
``sendMail`` and draft creation accept Base64 MIME as ``text/plain``), rendered by the same
renderer as the outbox and SMTP, so the recipient gets multipart/alternative with both parts.
The cost, documented in the README: a MIME send is always saved to Sent Items.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from mailgw.mime import Submission, quoted_printable_as_base64, with_bcc
from mailgw.models import Attachment, Recipient, SendRequest
from mailgw.transports.render import rendered_bytes

#: Graph refuses requests over 4 MB. Measured on the request as sent (Base64 and JSON included),
#: and read as 4,000,000 bytes, the stricter of "4 MB" and "4 MiB".
MAX_REQUEST_BYTES = 4_000_000
#: An upload session takes attachments of 3 MiB and more (and only those).
UPLOAD_SESSION_MIN_BYTES = 3 * 1024 * 1024
#: The gateway's message id on every JSON draft: a named property in a property set of the
#: gateway's own, so that the message can be found in Sent Items (mailgw/transports/
#: graph_submission.py). Never change it: drafts in flight carry it.
STAMP_PROPERTY = "String {e221f8c2-c056-419a-90ee-56fdc5cf6c48} Name mailgwMessageId"


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
    return rendered_bytes(message_id, partial, include_bcc=True)


def request_body(
    message_id: str, request: SendRequest, attachments: Sequence[Attachment], *, send: bool
) -> tuple[bytes, str]:
    """The body of the first request: ``sendMail`` (``send``) or the draft's creation; JSON, or
    Base64 MIME (``text/plain``) when the request has both bodies."""
    if needs_mime(request):
        return base64.b64encode(mime_message(message_id, request, attachments)), "text/plain"
    message = graph_message(request, attachments)
    if not send:
        message["singleValueExtendedProperties"] = [{"id": STAMP_PROPERTY, "value": message_id}]
    document: dict[str, Any] = (
        {"message": message, "saveToSentItems": request.save_to_sent_items} if send else message
    )
    return json.dumps(document, separators=(",", ":")).encode(), "application/json"


def attachment_body(attachment: Attachment) -> bytes:
    return json.dumps(file_attachment(attachment), separators=(",", ":")).encode()


class TooLarge(Exception):
    """The message cannot go in one Graph request (sendMail mode), or its body alone is too big."""

    def __init__(self, size: int, body_only: bool):
        super().__init__(size)
        self.size = size
        self.body_only = body_only


def first_request(
    message_id: str, request: SendRequest, *, draft: bool
) -> tuple[tuple[bytes, str], list[Attachment]]:
    """The first request's body, measured as sent, and the attachments left to add afterwards.

    Everything goes in one request while it fits in ``MAX_REQUEST_BYTES``. Otherwise, in draft
    mode, attachments move out (largest first) to be added to the draft one by one; in sendMail
    mode the message cannot be sent (``TooLarge``)."""
    inline = sorted(request.attachments, key=lambda a: a.size)
    later: list[Attachment] = []
    while True:
        body = request_body(message_id, request, inline, send=not draft)
        if len(body[0]) <= MAX_REQUEST_BYTES:
            return body, later
        if not draft or not inline:
            raise TooLarge(len(body[0]), body_only=not inline)
        later.insert(0, inline.pop())


def mime_request(submission: Submission) -> tuple[bytes, str]:
    """A raw MIME message (SMTP intake) as a ``sendMail`` or draft-creation body: Base64 MIME,
    ``text/plain``. Graph takes the recipients from the headers, so envelope recipients not in
    To or Cc are added as Bcc; quoted-printable parts go as Base64 (see
    :func:`mailgw.mime.quoted_printable_as_base64`). Raises :class:`TooLarge` past 4 MB."""
    data = quoted_printable_as_base64(with_bcc(submission.data, submission.rcpt_to))
    body = base64.b64encode(data)
    if len(body) > MAX_REQUEST_BYTES:
        raise TooLarge(len(body), body_only=False)
    return body, "text/plain"
