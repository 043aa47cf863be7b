"""Graph's error answers: the canned codes, the exception handlers raise, and the JSON shape."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from aiohttp import web

from standins import json_response
from standins.graph.records import iso

__all__ = ["ERRORS", "GraphError", "error_response", "request_ids"]

#: code -> (HTTP status, message) for the canned faults; the permanent ones are the design's table.
#: ``ErrorMessageSizeExceeded`` is 400 wherever it comes from: Exchange's REST layer maps that
#: response code to Bad Request (Graph's docs give no status for it; 413 is Graph's own
#: ``RequestEntityTooLarge`` for a request body over 4 MB, before Exchange sees the message).
ERRORS: dict[str, tuple[int, str]] = {
    "ApplicationThrottled": (429, "Application is over its MailboxConcurrency limit."),
    "TooManyRequests": (429, "Too many requests."),
    "ServiceUnavailable": (503, "Service is unavailable. Please retry later."),
    "GatewayTimeout": (504, "The gateway did not receive a response within the specified time."),
    "ErrorAccessDenied": (403, "Access is denied. Check credentials and try again."),
    "ErrorSendAsDenied": (
        403,
        "The user account which was used to submit this request does not have the right to "
        "send mail on behalf of the specified sending account., Cannot submit message.",
    ),
    "MailboxNotEnabledForRESTAPI": (
        404,
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    ),
    "ErrorInvalidUser": (404, "The requested user is invalid."),
    "ErrorInvalidRecipients": (
        400,
        "At least one recipient isn't valid., A message can't be sent because it contains no "
        "recipients.",
    ),
    "ErrorMessageSizeExceeded": (400, "The message exceeds the maximum supported size."),
    "ErrorQuotaExceeded": (403, "The mailbox has exceeded its storage quota."),
    #: Exchange Online's sending limits (recipients per day), as sendMail reports them
    "ErrorExceededMessageLimit": (
        403,
        "Cannot send message because the sending limit of this mailbox has been exceeded.",
    ),
    "ErrorItemNotFound": (404, "The specified object was not found in the store."),
    "InvalidAuthenticationToken": (401, "Access token is empty."),
    "RequestEntityTooLarge": (413, "The maximum request length supported is 4MB."),
}


class GraphError(Exception):
    """Raised by a handler; the server answers it as Graph's error JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @classmethod
    def canned(cls, code: str, headers: Mapping[str, str] | None = None) -> GraphError:
        """The :data:`ERRORS` entry ``code``, with its status and message."""
        status, message = ERRORS[code]
        return cls(status, code, message, headers)


def request_ids(client_request_id: str | None) -> dict[str, str]:
    """Graph's ``request-id`` (new) and ``client-request-id`` (echoed, else the same) headers."""
    request_id = str(uuid.uuid4())
    return {"request-id": request_id, "client-request-id": client_request_id or request_id}


def error_response(
    status: int, code: str, message: str, client_request_id: str | None, **headers: str
) -> web.Response:
    """``{"error": {"code", "message", "innerError": {date, request-id, client-request-id}}}``."""
    ids = request_ids(client_request_id)
    return json_response(
        {
            "error": {
                "code": code,
                "message": message,
                "innerError": {"date": iso(time.time(), 0), **ids},
            }
        },
        status=status,
        headers={**ids, **headers},
    )
