"""``POST /users/{user}/sendMail``: a message in one call, as JSON or Base64 MIME (text/plain)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from standins.graph.errors import GraphError
from standins.graph.payloads import (
    canonical,
    json_body,
    message_from_mime,
    mime_body,
    normalize_message,
    parse_bool,
)
from standins.graph.records import Recorded

if TYPE_CHECKING:
    from standins.graph.server import GraphStandIn

__all__ = ["SendMail"]


class SendMail:
    def __init__(self, graph: GraphStandIn) -> None:
        self.graph = graph

    def send_mail(self, rec: Recorded, mailbox: str) -> web.Response:
        limit = self.graph.max_request_bytes
        mime = mime_body(rec, limit)
        if mime is not None:
            message, attachments = message_from_mime(mime)
            return self.graph.submission.submit(
                rec, mailbox, message, attachments, save=True, via="mime", mime=mime
            )
        body = canonical(
            json_body(rec, limit), ["message", "saveToSentItems"], "microsoft.graph.sendMail"
        )
        if "message" not in body:
            raise GraphError(400, "ErrorInvalidParameter", "The 'message' parameter is required.")
        message, attachments = normalize_message(body["message"], "sendMail")
        save = parse_bool(body.get("saveToSentItems", True), "saveToSentItems")
        return self.graph.submission.submit(
            rec, mailbox, message, attachments, save=save, via="sendMail"
        )
