"""Transports, imported lazily: only the configured one is loaded (msgraph-sdk is large)."""

from __future__ import annotations

from mailgw.errors import FieldError, MessageTooLarge
from mailgw.models import SendRequest
from mailgw.settings import Settings
from mailgw.transports.base import OutboundMessage, SendReceipt, Transport

__all__ = [
    "OutboundMessage",
    "SendReceipt",
    "Transport",
    "check_fits",
    "check_mime_fits",
    "create_transport",
    "max_mime_bytes",
]


def create_transport(settings: Settings) -> Transport:
    if settings.transport == "graph":
        from mailgw.transports.graph import GraphTransport

        return GraphTransport(settings)
    if settings.transport in ("smtp", "relay"):
        from mailgw.transports.smtp import SmtpTransport

        return SmtpTransport(settings, relay=settings.transport == "relay")
    from mailgw.transports.outbox import OutboxTransport

    return OutboxTransport(settings.outbox_dir)


def check_fits(settings: Settings, message_id: str, request: SendRequest) -> None:
    """Refuse at intake what the configured transport can never send (``MessageTooLarge``, 413,
    with what to do), as the gateway refuses what is over its own limits: a caller should not get
    202 for a message that fails seconds later. Graph takes at most ~4 MB per request, so in
    sendmail mode the whole message must fit in one, and in any mode the body alone must."""
    if settings.transport != "graph":
        return
    from mailgw.transports.graph_message import MAX_REQUEST_BYTES, TooLarge, first_request

    body = len(request.text or "") + len(request.html or "")
    encoded = body + sum(len(a.content_base64) for a in request.attachments)
    draft = settings.graph_mode == "draft"
    if (body if draft else encoded) < MAX_REQUEST_BYTES * 0.9:
        return  # clearly fits: no need to build the request to measure it
    try:
        first_request(message_id, request, draft=draft)
    except TooLarge as large:
        if large.body_only:
            raise MessageTooLarge(
                f"The text and html alone make a {large.size}-byte request; Microsoft Graph takes "
                f"at most {MAX_REQUEST_BYTES} bytes per request.",
                [FieldError("html" if request.html else "text", "too long for Microsoft Graph")],
            ) from None
        raise MessageTooLarge(
            f"The message would be a {large.size}-byte request; in MAILGW_GRAPH_MODE=sendmail "
            f"Microsoft Graph takes at most {MAX_REQUEST_BYTES} bytes (about 3 MB of "
            "attachments). MAILGW_GRAPH_MODE=draft (needs Mail.ReadWrite) sends attachments of "
            "up to 150 MB through upload sessions.",
            [FieldError("attachments", "too large for one Graph request (sendmail mode)")],
        ) from None


def max_mime_bytes(settings: Settings) -> int:
    """The largest raw MIME message the configured transport can send: Graph takes it Base64
    in one request of at most ~4 MB (no upload sessions for MIME), so about 3 MB; the others
    take what the gateway takes (``MAILGW_MAX_REQUEST_BYTES``)."""
    if settings.transport == "graph":
        from mailgw.transports.graph_message import MAX_REQUEST_BYTES

        # Base64 (4 per 3), and room for a Bcc header Graph needs for hidden recipients.
        return min(settings.max_request_bytes, (MAX_REQUEST_BYTES - 64 * 1024) * 3 // 4)
    return settings.max_request_bytes


def check_mime_fits(settings: Settings, size: int) -> None:
    """A raw MIME message the configured transport could never send is refused at intake."""
    limit = max_mime_bytes(settings)
    if size > limit:
        raise MessageTooLarge(
            f"The message is {size} bytes; this gateway's transport ({settings.transport}) takes "
            f"MIME messages of at most {limit} bytes."
        )
