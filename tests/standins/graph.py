"""Stand-in for the Microsoft Graph v1.0 mail endpoints, for msgraph-sdk (kiota/httpx) or others.

Served under ``{url}/v1.0`` (point the client's base URL there; see ``test_standins.py`` for the
msgraph-sdk construction)::

    POST   /users/{user}/sendMail                         JSON {"message", "saveToSentItems"} -> 202
    POST   /users/{user}/sendMail   (Content-Type: text/plain, Base64 MIME)                -> 202
    POST   /users/{user}/messages                         create draft                    -> 201
    GET    /users/{user}/messages/{id}[?$expand=attachments]                              -> 200
    PATCH  /users/{user}/messages/{id}                                                    -> 200
    DELETE /users/{user}/messages/{id}                                                    -> 204
    POST   /users/{user}/messages/{id}/send                                               -> 202
    GET    /users/{user}/messages/{id}/attachments                                        -> 200
    POST   /users/{user}/messages/{id}/attachments        fileAttachment                  -> 201
    POST   /users/{user}/messages/{id}/attachments/createUploadSession                    -> 201
    PUT    <uploadUrl>   Content-Range: bytes a-b/total   (no Authorization)        -> 200 | 201
    DELETE <uploadUrl>                                                                    -> 204

What it checks, as Graph/Exchange do (codes marked "documented" or quoted messages are Graph's;
the rest are plausible stand-ins, see the end of this docstring):

- ``Authorization: Bearer`` on every Graph call, verified by a pluggable ``token_verifier``
  (default: a token from :mod:`standins.identity` whose resource is in :attr:`audiences`) -> 401
  ``InvalidAuthenticationToken``; ``/me`` with an app token -> 400.
- Property names are matched case-insensitively (kiota sends ``{"Message": ..,
  "SaveToSentItems": ..}``) and normalised to camelCase; an unknown property -> 400
  ``RequestBodyRead``. Attachments need ``@odata.type`` ``#microsoft.graph.fileAttachment``,
  a ``name`` and valid Base64 ``contentBytes``.
- Recipients: none, or a malformed address, at send time -> 400 ``ErrorInvalidRecipients``.
  ``internetMessageHeaders``: at most 5 (``InvalidInternetMessageHeaderCollection``), names
  starting with ``X-`` (``InvalidInternetMessageHeader``).
- Request bodies over ``max_request_bytes`` (4,000,000: "4 MB", the stricter reading) -> 413
  "The maximum request length supported is 4MB." (code ``RequestEntityTooLarge``: unverified).
- ``createUploadSession`` below 3 MiB -> 400 ``ErrorAttachmentSizeShouldNotBeLessThanMinimumSize``
  (documented); a message over ``max_message_bytes`` -> 400 ``ErrorMessageSizeExceeded``.
- Upload PUTs: contiguous ``Content-Range``, ``Content-Length`` equal to the range and the body,
  every fragment but the last a multiple of ``upload_chunk_multiple`` (327,680 B), at most
  ``max_upload_chunk_bytes``. Outlook says not to send ``Authorization`` there: it is recorded,
  and answered 401 when ``reject_authorization_on_upload`` is set (off by default, because here
  the upload URL shares the Graph host, so an ``allowed_hosts``-restricted client still sends it).
  The 320 KiB rule is OneDrive's and stricter than Outlook's (whose own example PUTs 2 MiB and
  which advises < 4 MB per PUT): a client passing it, e.g. 12 x 320 KiB, satisfies both.
  Intermediate fragments -> 200 ``{"ExpirationDateTime", "nextExpectedRanges": ["<next>"]}``,
  the last -> 201 with ``Location`` and an empty body, exactly as Outlook's upload endpoint.
- Per mailbox at most ``concurrency_limit`` (4) requests in flight; the next one -> 429
  ``ApplicationThrottled`` "Application is over its MailboxConcurrency limit." with
  ``Retry-After``. :attr:`GraphStandIn.max_in_flight` records the peak the client *attempted*.

Choices where Graph's behaviour is not documented: a sent draft answers GET with 404
``ErrorItemNotFound`` (Exchange moves it to Sent Items and its regular id no longer resolves);
if the draft was created with ``Prefer: IdType="ImmutableId"`` the id survives the move and GET
answers 200 with ``isDraft: false``. Status/code pairs for malformed requests and upload-range
errors are plausible, not verified against the service.

Every request is recorded (:attr:`GraphStandIn.requests`), every accepted message is in
:attr:`GraphStandIn.delivered` with its attachments as bytes. Faults are scripted FIFO, global or
per mailbox/operation: :meth:`GraphStandIn.fail_next` and helpers, and
:meth:`GraphStandIn.accept_then_fail` for ambiguous outcomes (delivered, then 504 / a slow
answer / a dropped connection).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import email.policy
import email.utils
import itertools
import json
import re
import secrets
import time
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal, cast

from aiohttp import web

from standins import (
    LOOPBACK,
    RemoteAdmin,
    StandInServer,
    json_response,
    poll_until,
    poll_until_async,
)
from standins.identity import (
    DEFAULT_SIGNING_KEY,
    GRAPH_RESOURCE,
    InvalidToken,
    TokenClaims,
    verify_token,
)

__all__ = [
    "ERRORS",
    "GRAPH_AUDIENCES",
    "DeliveredAttachment",
    "DeliveredMessage",
    "Fault",
    "GraphStandIn",
    "Recorded",
    "RemoteGraphStandIn",
    "TokenVerifier",
    "accept_any_token",
    "standin_token_verifier",
]

#: Graph's audiences: its resource URI and its application id
GRAPH_AUDIENCES = (GRAPH_RESOURCE, "00000003-0000-0000-c000-000000000000")
MAX_REQUEST_BYTES = 4_000_000
MIN_UPLOAD_SESSION_BYTES = 3 * 1024 * 1024
UPLOAD_CHUNK_MULTIPLE = 320 * 1024
MAX_UPLOAD_CHUNK_BYTES = 60 * 1024 * 1024
MAX_MESSAGE_BYTES = 150 * 1024 * 1024
MAX_INTERNET_HEADERS = 5

#: code -> (HTTP status, message) for the canned faults; the permanent ones are the design's table
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
    "ErrorMessageSizeExceeded": (413, "The message exceeds the maximum supported size."),
    "ErrorQuotaExceeded": (403, "The mailbox has exceeded its storage quota."),
    "ErrorItemNotFound": (404, "The specified object was not found in the store."),
    "InvalidAuthenticationToken": (401, "Access token is empty."),
    "RequestEntityTooLarge": (413, "The maximum request length supported is 4MB."),
}

Operation = Literal[
    "sendMail",
    "createMessage",
    "getMessage",
    "updateMessage",
    "deleteMessage",
    "send",
    "listAttachments",
    "addAttachment",
    "createUploadSession",
    "upload",
    "cancelUpload",
    "unknown",
]
Via = Literal["sendMail", "mime", "draft"]
FaultMode = Literal["respond", "accept_then_status", "accept_then_delay", "accept_then_drop"]

TokenVerifier = Callable[[str], TokenClaims]
"""Return the token's claims or raise :class:`standins.identity.InvalidToken` (-> 401)."""


def standin_token_verifier(
    audiences: Iterable[str] = GRAPH_AUDIENCES, key: bytes = DEFAULT_SIGNING_KEY
) -> TokenVerifier:
    """Accept tokens issued by :class:`standins.identity.IdentityStandIn` for ``audiences``."""
    allowed = {a.rstrip("/") for a in audiences}

    def verify(token: str) -> TokenClaims:
        claims = verify_token(token, key=key)
        if claims.resource.rstrip("/") not in allowed:
            raise InvalidToken(f"Invalid audience '{claims.resource}'.")
        return claims

    return verify


def accept_any_token(token: str) -> TokenClaims:
    """A verifier for using the Graph stand-in without the identity stand-in."""
    return TokenClaims(
        kind="any", client_id="", resource=GRAPH_RESOURCE, tenant="", expires_on=0, serial=0
    )


# --- recorded data ------------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the server received it. ``time`` is ``time.monotonic()`` at arrival (the
    same clock in every process of the machine), ``responded`` when the answer was produced."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    time: float
    wall_time: float
    operation: Operation
    mailbox: str | None
    message_id: str | None = None
    token: TokenClaims | None = None
    status: int | None = None
    error_code: str | None = None
    fault: str | None = None
    throttled: bool = False
    responded: float | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def to_json(self, max_body: int = 65_536) -> dict[str, Any]:
        data: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": self.json,
            "bodySize": len(self.body),
            "time": self.time,
            "wallTime": self.wall_time,
            "operation": self.operation,
            "mailbox": self.mailbox,
            "messageId": self.message_id,
            "token": None if self.token is None else self.token.__dict__,
            "status": self.status,
            "errorCode": self.error_code,
            "fault": self.fault,
            "throttled": self.throttled,
            "responded": self.responded,
        }
        if self.json is None and len(self.body) <= max_body:
            data["bodyBase64"] = base64.b64encode(self.body).decode()
        return data


@dataclass
class DeliveredAttachment:
    name: str
    content_type: str | None
    content: bytes
    is_inline: bool
    content_id: str | None
    #: how it reached the message: "sendMail", "createMessage", "addAttachment", "upload", "mime"
    source: str
    id: str = field(default_factory=lambda: _new_id("AAMkAGAtt"))

    @property
    def size(self) -> int:
        return len(self.content)

    def to_json(self) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": self.id,
            "name": self.name,
            "contentType": self.content_type,
            "size": self.size,
            "isInline": self.is_inline,
            "contentId": self.content_id,
            "contentBytes": base64.b64encode(self.content).decode(),
        }


def _addresses(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [r["emailAddress"]["address"] for r in value]


@dataclass
class DeliveredMessage:
    """A message Exchange accepted. ``message`` is the Graph message JSON with camelCase keys and
    ``attachments`` (including uploaded ones) carrying ``contentBytes``."""

    mailbox: str
    message: dict[str, Any]
    save_to_sent_items: bool
    via: Via
    time: float
    wall_time: float
    attachments: list[DeliveredAttachment]
    message_id: str | None = None
    mime: bytes | None = None
    token: TokenClaims | None = None

    @property
    def subject(self) -> str | None:
        return cast("str | None", self.message.get("subject"))

    @property
    def body(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self.message.get("body") or {})

    @property
    def body_type(self) -> str | None:
        value = self.body.get("contentType")
        return None if value is None else str(value).lower()

    @property
    def body_content(self) -> str | None:
        return cast("str | None", self.body.get("content"))

    @property
    def to(self) -> list[str]:
        return _addresses(self.message.get("toRecipients"))

    @property
    def cc(self) -> list[str]:
        return _addresses(self.message.get("ccRecipients"))

    @property
    def bcc(self) -> list[str]:
        return _addresses(self.message.get("bccRecipients"))

    @property
    def reply_to(self) -> list[str]:
        return _addresses(self.message.get("replyTo"))

    def named(self, kind: str = "toRecipients") -> list[tuple[str, str | None]]:
        """``[(address, display name or None)]`` of ``toRecipients``/``ccRecipients``/..."""
        return [
            (r["emailAddress"]["address"], r["emailAddress"].get("name"))
            for r in self.message.get(kind) or []
        ]

    @property
    def sender(self) -> str | None:
        """The ``from`` address, if the client set one."""
        value = self.message.get("from")
        return None if not value else cast("str", value["emailAddress"]["address"])

    @property
    def headers(self) -> dict[str, str]:
        return {h["name"]: h["value"] for h in self.message.get("internetMessageHeaders") or []}

    @property
    def importance(self) -> str:
        return str(self.message.get("importance") or "normal").lower()

    def attachment(self, name: str) -> DeliveredAttachment:
        for attachment in self.attachments:
            if attachment.name == name:
                return attachment
        raise KeyError(f"no attachment named {name!r}: {[a.name for a in self.attachments]}")

    def to_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "via": self.via,
            "saveToSentItems": self.save_to_sent_items,
            "time": self.time,
            "wallTime": self.wall_time,
            "messageId": self.message_id,
            "message": self.message,
            "mimeBase64": None if self.mime is None else base64.b64encode(self.mime).decode(),
            "token": None if self.token is None else self.token.__dict__,
            "attachments": [a.to_json() for a in self.attachments],
        }


@dataclass
class Fault:
    """A scripted answer; consumed FIFO by the first request that matches it."""

    status: int
    code: str
    message: str
    remaining: int = 1
    retry_after: str | None = None
    mailbox: str | None = None
    operation: str | None = None
    mode: FaultMode = "respond"
    delay_seconds: float = 0.0
    raw_body: bytes | None = None
    content_type: str = "application/json"

    def matches(self, mailbox: str | None, operation: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.mailbox is not None and self.mailbox != mailbox:
            return False
        if self.operation is None:
            return operation not in ("upload", "cancelUpload")
        return self.operation == operation


class GraphError(Exception):
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


# --- message normalisation -----------------------------------------------------------------------

_MESSAGE_PROPS = [
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "uniqueBody",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
    "attachments",
    "extensions",
    "multiValueExtendedProperties",
    "singleValueExtendedProperties",
]
_RECIPIENT_LISTS = ("toRecipients", "ccRecipients", "bccRecipients", "replyTo")
_ATTACHMENT_PROPS = [
    "id",
    "name",
    "contentType",
    "contentBytes",
    "contentId",
    "contentLocation",
    "isInline",
    "size",
    "lastModifiedDateTime",
]
_ADDRESS_RE = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+$")


def _canonical(obj: Any, allowed: Iterable[str], type_name: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise GraphError(
            400, "RequestBodyRead", f"Cannot read a value of type '{type_name}' from {obj!r}."
        )
    lookup = {name.lower(): name for name in allowed}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key.startswith("@"):
            out[key] = value
            continue
        canonical = lookup.get(key.lower())
        if canonical is None:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{key}' does not exist on type '{type_name}'. Make sure to only "
                "use property names that are defined by the type or mark the type as open type.",
            )
        if value is not None:
            out[canonical] = value
    return out


def _recipient(value: Any) -> dict[str, Any]:
    recipient = _canonical(value, ["emailAddress"], "microsoft.graph.recipient")
    address = _canonical(
        recipient.get("emailAddress", {}), ["address", "name"], "microsoft.graph.emailAddress"
    )
    for key in ("address", "name"):
        if key in address and not isinstance(address[key], str):
            raise GraphError(400, "RequestBodyRead", f"emailAddress.{key} must be a string.")
    recipient["emailAddress"] = address
    return recipient


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{value}' to the expected type "
            f"'Edm.Boolean' for '{name}'.",
        )
    return value


def _file_attachment(value: Any, source: str) -> DeliveredAttachment:
    raw = _canonical(value, _ATTACHMENT_PROPS, "microsoft.graph.fileAttachment")
    odata_type = next((v for k, v in raw.items() if k.lower() == "@odata.type"), None)
    if not isinstance(odata_type, str) or odata_type.lstrip("#").lower() != (
        "microsoft.graph.fileattachment"
    ):
        raise GraphError(
            400,
            "RequestBodyRead",
            'An attachment must declare "@odata.type": "#microsoft.graph.fileAttachment" '
            f"(the stand-in supports file attachments only); got {odata_type!r}.",
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise GraphError(400, "ErrorInvalidParameter", "The attachment name is required.")
    content_b64 = raw.get("contentBytes")
    if not isinstance(content_b64, str):
        raise GraphError(400, "ErrorInvalidParameter", "contentBytes is required.")
    try:
        content = base64.b64decode(content_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GraphError(
            400, "RequestBodyRead", f"contentBytes is not valid Base64: {exc}."
        ) from exc
    is_inline = _bool(raw.get("isInline", False), "isInline")
    content_id = raw.get("contentId")
    content_type = raw.get("contentType")
    return DeliveredAttachment(
        name=name,
        content_type=content_type if isinstance(content_type, str) else None,
        content=content,
        is_inline=is_inline,
        content_id=content_id if isinstance(content_id, str) else None,
        source=source,
    )


def _normalize_message(value: Any, source: str) -> tuple[dict[str, Any], list[DeliveredAttachment]]:
    message = _canonical(value, _MESSAGE_PROPS, "microsoft.graph.message")
    for key in _RECIPIENT_LISTS:
        if key in message:
            if not isinstance(message[key], list):
                raise GraphError(400, "RequestBodyRead", f"'{key}' must be a collection.")
            message[key] = [_recipient(r) for r in message[key]]
    for key in ("from", "sender"):
        if key in message:
            message[key] = _recipient(message[key])
    if "subject" in message and not isinstance(message["subject"], str):
        raise GraphError(400, "RequestBodyRead", "'subject' must be a string.")
    if "body" in message:
        body = _canonical(message["body"], ["contentType", "content"], "microsoft.graph.itemBody")
        content_type = str(body.get("contentType", "text")).lower()
        if content_type not in ("text", "html"):
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The value '{body.get('contentType')}' is not valid for microsoft.graph.bodyType.",
            )
        body["contentType"] = content_type
        message["body"] = body
    if "importance" in message:
        importance = str(message["importance"]).lower()
        if importance not in ("low", "normal", "high"):
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The value '{message['importance']}' is not valid for microsoft.graph.importance.",
            )
        message["importance"] = importance
    if "internetMessageHeaders" in message:
        headers = message["internetMessageHeaders"]
        if not isinstance(headers, list):
            raise GraphError(400, "RequestBodyRead", "'internetMessageHeaders' must be a list.")
        headers = [
            _canonical(h, ["name", "value"], "microsoft.graph.internetMessageHeader")
            for h in headers
        ]
        if len(headers) > MAX_INTERNET_HEADERS:
            raise GraphError(
                400,
                "InvalidInternetMessageHeaderCollection",
                "Maximum number of headers in one message should be less than or equal to 5.",
            )
        for header in headers:
            name = header.get("name")
            if not isinstance(name, str) or not name.lower().startswith("x-"):
                raise GraphError(
                    400,
                    "InvalidInternetMessageHeader",
                    f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
                )
        message["internetMessageHeaders"] = headers
    attachments: list[DeliveredAttachment] = []
    if "attachments" in message:
        if not isinstance(message["attachments"], list):
            raise GraphError(400, "RequestBodyRead", "'attachments' must be a collection.")
        attachments = [_file_attachment(a, source) for a in message.pop("attachments")]
    return message, attachments


def _check_sendable(message: Mapping[str, Any]) -> None:
    recipients = [r for key in _RECIPIENT_LISTS[:3] for r in message.get(key) or []]
    if not recipients:
        raise GraphError(400, "ErrorInvalidRecipients", ERRORS["ErrorInvalidRecipients"][1])
    for recipient in recipients + list(message.get("replyTo") or []):
        address = recipient["emailAddress"].get("address")
        if not isinstance(address, str) or not _ADDRESS_RE.match(address):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient isn't valid., Recipient '{address}' isn't resolved. "
                "All recipients must be resolved before a message can be submitted.",
            )


def _message_from_mime(mime: bytes) -> tuple[dict[str, Any], list[DeliveredAttachment]]:
    """What Exchange makes of a MIME message: the Graph fields tests assert on."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(mime)
    assert isinstance(parsed, EmailMessage)

    def recipients(header: str) -> list[dict[str, Any]]:
        values = parsed.get_all(header) or []
        return [
            {"emailAddress": {"address": addr, **({"name": name} if name else {})}}
            for name, addr in email.utils.getaddresses([str(v) for v in values])
            if addr
        ]

    message: dict[str, Any] = {"subject": str(parsed.get("Subject", ""))}
    for key, header in (
        ("toRecipients", "To"),
        ("ccRecipients", "Cc"),
        ("bccRecipients", "Bcc"),
        ("replyTo", "Reply-To"),
    ):
        if found := recipients(header):
            message[key] = found
    if sender := recipients("From"):
        message["from"] = sender[0]
    importance = str(parsed.get("Importance", "")).lower()
    if importance in ("low", "normal", "high"):
        message["importance"] = importance
    custom = [{"name": k, "value": str(v)} for k, v in parsed.items() if k.lower().startswith("x-")]
    if custom:
        message["internetMessageHeaders"] = custom
    body_part = parsed.get_body(preferencelist=("html", "plain"))
    if body_part is not None:
        assert isinstance(body_part, EmailMessage)
        message["body"] = {
            "contentType": "html" if body_part.get_content_subtype() == "html" else "text",
            "content": body_part.get_content(),
        }
    attachments: list[DeliveredAttachment] = []
    for part in parsed.walk():
        if part.is_multipart() or part is body_part:
            continue
        disposition = part.get_content_disposition()
        content_id = part.get("Content-ID")
        if disposition is None and content_id is None:
            continue
        payload = part.get_payload(decode=True)
        attachments.append(
            DeliveredAttachment(
                name=part.get_filename() or "",
                content_type=part.get_content_type(),
                content=payload if isinstance(payload, bytes) else b"",
                is_inline=disposition == "inline" or (disposition is None and bool(content_id)),
                content_id=str(content_id).strip("<>") if content_id else None,
                source="mime",
            )
        )
    return message, attachments


# --- state -------------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=") + "AAA="


def _iso(ts: float, digits: int = 7) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    fraction = f"{moment.microsecond:06d}{'0' * max(0, digits - 6)}"[:digits]
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + "Z"


@dataclass
class _Draft:
    id: str
    mailbox: str
    message: dict[str, Any]
    attachments: list[DeliveredAttachment]
    created: float
    immutable_id: bool
    sent: bool = False
    deleted: bool = False
    change_key: str = field(default_factory=lambda: secrets.token_urlsafe(12))


@dataclass
class _UploadSession:
    id: str
    token: str
    mailbox: str
    message_id: str
    name: str
    content_type: str | None
    size: int
    is_inline: bool
    content_id: str | None
    expires_at: float
    received: bytearray = field(default_factory=bytearray)


def _segments(raw_path: str) -> list[str]:
    path = raw_path.split("?", 1)[0]
    return [urllib.parse.unquote(s) for s in path.split("/") if s]


_UPLOAD_SEGMENT = re.compile(r"^AttachmentSessions\('(?P<id>[^']+)'\)$")


class GraphStandIn(StandInServer):
    """The Graph stand-in. Construct, then ``async with`` / ``start_in_thread()`` / ``run_cli()``.

    Public state: ``requests``, ``delivered``, ``max_in_flight``, ``in_flight`` (per mailbox),
    ``audiences`` (a set, may be changed while running). Knobs are attributes too:
    ``latency_seconds``, ``concurrency_limit`` (None: unlimited), ``throttle_retry_after``,
    ``max_request_bytes``, ``min_upload_session_bytes``, ``upload_chunk_multiple`` (None: any),
    ``max_upload_chunk_bytes``, ``max_message_bytes``, ``upload_session_ttl_seconds``,
    ``reject_authorization_on_upload``, ``mailboxes`` (None: every mailbox exists; else others
    are 404 ``ErrorInvalidUser``), ``send_as`` (None: any ``from``; else mailbox -> addresses it
    may send as, others 403 ``ErrorSendAsDenied``), ``mailbox_rate_limit`` (``(n, seconds)``).
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        latency_seconds: float = 0.0,
        token_verifier: TokenVerifier | None = None,
        audiences: Iterable[str] = GRAPH_AUDIENCES,
        signing_key: bytes = DEFAULT_SIGNING_KEY,
        concurrency_limit: int | None = 4,
        throttle_retry_after: int = 1,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        min_upload_session_bytes: int = MIN_UPLOAD_SESSION_BYTES,
        upload_chunk_multiple: int | None = UPLOAD_CHUNK_MULTIPLE,
        max_upload_chunk_bytes: int = MAX_UPLOAD_CHUNK_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        upload_session_ttl_seconds: float = 900.0,
        reject_authorization_on_upload: bool = False,
        mailboxes: Collection[str] | None = None,
        send_as: Mapping[str, Collection[str]] | None = None,
        mailbox_rate_limit: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.latency_seconds = latency_seconds
        self.audiences: set[str] = set(audiences)
        self.signing_key = signing_key
        self.token_verifier: TokenVerifier = token_verifier or self._verify_standin_token
        self.concurrency_limit = concurrency_limit
        self.throttle_retry_after = throttle_retry_after
        self.max_request_bytes = max_request_bytes
        self.min_upload_session_bytes = min_upload_session_bytes
        self.upload_chunk_multiple = upload_chunk_multiple
        self.max_upload_chunk_bytes = max_upload_chunk_bytes
        self.max_message_bytes = max_message_bytes
        self.upload_session_ttl_seconds = upload_session_ttl_seconds
        self.reject_authorization_on_upload = reject_authorization_on_upload
        self.mailboxes = None if mailboxes is None else {m.lower() for m in mailboxes}
        self.send_as = (
            None
            if send_as is None
            else {k.lower(): {a.lower() for a in v} for k, v in send_as.items()}
        )
        self.mailbox_rate_limit = mailbox_rate_limit

        self.requests: list[Recorded] = []
        self.delivered: list[DeliveredMessage] = []
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.drafts: dict[str, _Draft] = {}
        self.upload_sessions: dict[str, _UploadSession] = {}
        self._faults: list[Fault] = []
        self._rate_windows: dict[str, deque[float]] = {}
        self._request_ids = itertools.count(1)

    # --- addresses ----------------------------------------------------------------------------
    @property
    def graph_url(self) -> str:
        """``http://127.0.0.1:PORT/v1.0``: the client's base URL (no trailing slash)."""
        return f"{self.url}/v1.0"

    def ready_info(self) -> dict[str, Any]:
        return {"url": self.url, "graphUrl": self.graph_url}

    # --- faults -------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        n: int = 1,
        retry_after: float | str | None = None,
        mailbox: str | None = None,
        operation: str | None = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Fault:
        """Answer the next ``n`` matching Graph calls with ``status`` and
        ``{"error": {"code", "message", "innerError"}}`` (or ``raw_body``). ``operation`` is
        one of :data:`Operation` (None: any Graph call, not upload PUTs); ``mailbox`` None: any.
        ``Retry-After`` goes out as given; kiota parses whole seconds or an HTTP date only."""
        return self.add_fault(
            Fault(
                status=status,
                code=code,
                message=message or ERRORS.get(code, (status, f"Injected {code}."))[1],
                remaining=n,
                retry_after=None if retry_after is None else _retry_after(retry_after),
                mailbox=None if mailbox is None else mailbox.lower(),
                operation=operation,
                raw_body=raw_body,
                content_type=content_type,
            )
        )

    def fail_with(
        self,
        code: str,
        *,
        n: int = 1,
        retry_after: float | str | None = None,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        """A canned error from :data:`ERRORS` (status and message as Graph sends them)."""
        status, message = ERRORS[code]
        return self.fail_next(
            status,
            code,
            message,
            n=n,
            retry_after=retry_after,
            mailbox=mailbox,
            operation=operation,
        )

    def throttle(
        self,
        n: int = 1,
        retry_after: float | str | None = 1,
        *,
        code: Literal["ApplicationThrottled", "TooManyRequests"] = "ApplicationThrottled",
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.fail_with(
            code, n=n, retry_after=retry_after, mailbox=mailbox, operation=operation
        )

    def service_unavailable(
        self,
        n: int = 1,
        retry_after: float | str | None = 1,
        *,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.fail_with(
            "ServiceUnavailable", n=n, retry_after=retry_after, mailbox=mailbox, operation=operation
        )

    def gateway_timeout(
        self,
        n: int = 1,
        retry_after: float | str | None = None,
        *,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        return self.fail_with(
            "GatewayTimeout", n=n, retry_after=retry_after, mailbox=mailbox, operation=operation
        )

    def accept_then_fail(
        self,
        status: int = 504,
        *,
        n: int = 1,
        mode: Literal["status", "delay", "drop"] = "status",
        delay_seconds: float = 5.0,
        code: str | None = None,
        retry_after: float | str | None = None,
        mailbox: str | None = None,
        operation: str | None = None,
    ) -> Fault:
        """The ambiguous outcome: the request is fully processed (the message IS delivered),
        then the client gets ``status`` (mode "status"), or the success answer only after
        ``delay_seconds`` (mode "delay": past the client's timeout), or the connection is
        closed without an answer (mode "drop")."""
        code = code or {504: "GatewayTimeout", 503: "ServiceUnavailable"}.get(
            status, "UnknownError"
        )
        return self.add_fault(
            Fault(
                status=status,
                code=code,
                message=ERRORS.get(code, (status, f"Injected {code}."))[1],
                remaining=n,
                retry_after=None if retry_after is None else _retry_after(retry_after),
                mailbox=None if mailbox is None else mailbox.lower(),
                operation=operation,
                mode=cast(FaultMode, f"accept_then_{mode}"),
                delay_seconds=delay_seconds,
            )
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.remaining > 0]

    def reset(self) -> None:
        """Forget requests, deliveries, drafts, sessions, faults and concurrency peaks."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.delivered.clear()
            self.drafts.clear()
            self.upload_sessions.clear()
            self.max_in_flight.clear()
            self._rate_windows.clear()

    def _take_fault(self, mailbox: str | None, operation: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(mailbox, operation):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- queries ------------------------------------------------------------------------------
    def deliveries_for(self, mailbox: str) -> list[DeliveredMessage]:
        return [d for d in self.delivered if d.mailbox == mailbox.lower()]

    def requests_for(
        self, operation: str | None = None, mailbox: str | None = None
    ) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (operation is None or r.operation == operation)
            and (mailbox is None or r.mailbox == mailbox.lower())
        ]

    async def wait_delivered(self, count: int = 1, timeout: float = 10.0) -> list[DeliveredMessage]:
        """Wait until at least ``count`` messages were delivered; return them all."""
        await poll_until_async(
            lambda: len(self.delivered) >= count, timeout, f"{count} delivered message(s)"
        )
        return list(self.delivered)

    def wait_delivered_sync(self, count: int = 1, timeout: float = 10.0) -> list[DeliveredMessage]:
        poll_until(lambda: len(self.delivered) >= count, timeout, f"{count} delivered message(s)")
        return list(self.delivered)

    # --- server -------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=max(self.max_upload_chunk_bytes, 200 * 2**20))
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def _verify_standin_token(self, token: str) -> TokenClaims:
        return standin_token_verifier(self.audiences, self.signing_key)(token)

    def _error(
        self, rec: Recorded | None, status: int, code: str, message: str, **headers: str
    ) -> web.Response:
        request_id = str(uuid.uuid4())
        client_request_id = (rec.header("client-request-id") if rec else None) or request_id
        if rec is not None:
            rec.status, rec.error_code = status, code
        return json_response(
            {
                "error": {
                    "code": code,
                    "message": message,
                    "innerError": {
                        "date": _iso(time.time(), 0),
                        "request-id": request_id,
                        "client-request-id": client_request_id,
                    },
                }
            },
            status=status,
            headers={"request-id": request_id, "client-request-id": client_request_id, **headers},
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = _segments(request.raw_path)
        if segments[:1] == ["_standin"]:
            return await self._admin(request, segments[1:])
        if segments[:2] == ["api", "v2.0"]:
            return await self._upload(request, segments)
        if segments[:1] != ["v1.0"]:
            return web.Response(status=404, text="not a Graph v1.0 path\n")
        return await self._graph(request, segments[1:])

    async def _record(
        self, request: web.Request, operation: Operation, mailbox: str | None, mid: str | None
    ) -> Recorded:
        body = await request.read()
        parsed: Any = None
        if body and request.content_type == "application/json":
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            json=parsed,
            time=time.monotonic(),
            wall_time=time.time(),
            operation=operation,
            mailbox=mailbox,
            message_id=mid,
        )
        self.requests.append(rec)
        return rec

    @staticmethod
    def _route(method: str, rest: list[str]) -> tuple[Operation, str | None, str | None]:
        if len(rest) < 2 or rest[0].lower() != "users":
            return "unknown", None, None
        mailbox, tail = rest[1].lower(), [s.lower() for s in rest[2:]]
        mid = rest[3] if len(rest) > 3 else None
        table: dict[tuple[str, ...], dict[str, Operation]] = {
            ("sendmail",): {"POST": "sendMail"},
            ("messages",): {"POST": "createMessage"},
            ("messages", "*"): {
                "GET": "getMessage",
                "PATCH": "updateMessage",
                "DELETE": "deleteMessage",
            },
            ("messages", "*", "send"): {"POST": "send"},
            ("messages", "*", "attachments"): {"GET": "listAttachments", "POST": "addAttachment"},
            ("messages", "*", "attachments", "createuploadsession"): {
                "POST": "createUploadSession"
            },
        }
        shape = tuple(
            "*" if i == 1 and tail[0] == "messages" else part for i, part in enumerate(tail)
        )
        operation = table.get(shape, {}).get(method, "unknown")
        return operation, mailbox, mid

    async def _graph(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        operation, mailbox, mid = self._route(request.method, rest)
        rec = await self._record(request, operation, mailbox, mid)
        try:
            response = await self._graph_checked(request, rec, rest)
        except GraphError as exc:
            response = self._error(rec, exc.status, exc.code, exc.message, **exc.headers)
        rec.status = rec.status or response.status
        rec.responded = time.monotonic()
        return response

    async def _graph_checked(
        self, request: web.Request, rec: Recorded, rest: list[str]
    ) -> web.StreamResponse:
        authorization = rec.header("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        www = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline'
            '.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        }
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", www)
        try:
            rec.token = self.token_verifier(token.strip())
        except InvalidToken as exc:
            raise GraphError(401, "InvalidAuthenticationToken", str(exc), www) from exc
        if rest[:1] == ["me"]:
            raise GraphError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        mailbox = rec.mailbox
        if rec.operation == "unknown" or mailbox is None:
            raise GraphError(
                400, "BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'."
            )
        if self.mailboxes is not None and mailbox not in self.mailboxes:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{mailbox}' is invalid.")
        self._check_rate(mailbox)
        in_flight = self.in_flight.get(mailbox, 0) + 1
        self.in_flight[mailbox] = in_flight
        self.max_in_flight[mailbox] = max(self.max_in_flight.get(mailbox, 0), in_flight)
        try:
            if self.concurrency_limit is not None and in_flight > self.concurrency_limit:
                rec.throttled = True
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    ERRORS["ApplicationThrottled"][1],
                    {"Retry-After": str(self.throttle_retry_after)},
                )
            if self.latency_seconds > 0:
                await asyncio.sleep(self.latency_seconds)
            return await self._with_faults(request, rec, mailbox)
        finally:
            self.in_flight[mailbox] -= 1

    def _check_rate(self, mailbox: str) -> None:
        if self.mailbox_rate_limit is None:
            return
        limit, window = self.mailbox_rate_limit
        now = time.monotonic()
        times = self._rate_windows.setdefault(mailbox, deque())
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            retry = max(1, int(times[0] + window - now + 0.999))
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxRequests limit.",
                {"Retry-After": str(retry)},
            )
        times.append(now)

    async def _with_faults(
        self, request: web.Request, rec: Recorded, mailbox: str
    ) -> web.StreamResponse:
        fault = self._take_fault(mailbox, rec.operation)
        if fault is not None and fault.mode == "respond":
            rec.fault = fault.code
            return self._fault_response(rec, fault)
        response = await self._handle(request, rec, mailbox)
        if fault is None:
            return response
        rec.fault = f"{fault.mode}:{fault.code}"
        if fault.mode == "accept_then_status":
            return self._fault_response(rec, fault)
        if fault.mode == "accept_then_delay":
            await asyncio.sleep(fault.delay_seconds)
            return response
        # accept_then_drop: close the connection without an answer
        rec.status = 0
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats the handler as cancelled; nothing is sent

    def _fault_response(self, rec: Recorded, fault: Fault) -> web.Response:
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        if fault.raw_body is not None:
            rec.status, rec.error_code = fault.status, fault.code
            return web.Response(
                status=fault.status,
                body=fault.raw_body,
                headers={"Content-Type": fault.content_type, **headers},
            )
        return self._error(rec, fault.status, fault.code, fault.message, **headers)

    def _json_body(self, rec: Recorded) -> Any:
        if len(rec.body) > self.max_request_bytes:
            raise GraphError(413, "RequestEntityTooLarge", ERRORS["RequestEntityTooLarge"][1])
        content_type = (rec.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise GraphError(
                415, "UnsupportedMediaType", f"Content-Type '{content_type}' is not supported."
            )
        if rec.json is None:
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        return rec.json

    async def _handle(self, request: web.Request, rec: Recorded, mailbox: str) -> web.Response:
        handlers = {
            "sendMail": self._send_mail,
            "createMessage": self._create_message,
            "getMessage": self._get_message,
            "updateMessage": self._update_message,
            "deleteMessage": self._delete_message,
            "send": self._send_draft,
            "listAttachments": self._list_attachments,
            "addAttachment": self._add_attachment,
            "createUploadSession": self._create_upload_session,
        }
        response = handlers[rec.operation](rec, mailbox)
        return response

    def _check_send_as(self, mailbox: str, message: Mapping[str, Any]) -> None:
        if self.send_as is None:
            return
        for key in ("from", "sender"):
            address = (message.get(key) or {}).get("emailAddress", {}).get("address")
            if (
                address
                and address.lower() != mailbox
                and address.lower() not in self.send_as.get(mailbox, set())
            ):
                raise GraphError(403, "ErrorSendAsDenied", ERRORS["ErrorSendAsDenied"][1])

    def _deliver(
        self,
        rec: Recorded,
        mailbox: str,
        message: dict[str, Any],
        attachments: list[DeliveredAttachment],
        save: bool,
        via: Via,
        message_id: str | None = None,
        mime: bytes | None = None,
    ) -> None:
        size = sum(a.size for a in attachments) + len(json.dumps(message))
        if size > self.max_message_bytes:
            raise GraphError(400, "ErrorMessageSizeExceeded", ERRORS["ErrorMessageSizeExceeded"][1])
        full = dict(message)
        if attachments:
            full["attachments"] = [a.to_json() for a in attachments]
        self.delivered.append(
            DeliveredMessage(
                mailbox=mailbox,
                message=full,
                save_to_sent_items=save,
                via=via,
                time=time.monotonic(),
                wall_time=time.time(),
                attachments=list(attachments),
                message_id=message_id,
                mime=mime,
                token=rec.token,
            )
        )

    def _mime_body(self, rec: Recorded) -> bytes | None:
        """The MIME message of a ``text/plain`` (Base64 MIME) request, None for JSON requests.

        Graph takes MIME on sendMail and on message creation (a draft from MIME)."""
        content_type = (rec.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "text/plain":
            return None
        if len(rec.body) > self.max_request_bytes:
            raise GraphError(413, "RequestEntityTooLarge", ERRORS["RequestEntityTooLarge"][1])
        try:
            return base64.b64decode(b"".join(rec.body.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GraphError(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            ) from exc

    def _send_mail(self, rec: Recorded, mailbox: str) -> web.Response:
        mime = self._mime_body(rec)
        if mime is not None:
            message, attachments = _message_from_mime(mime)
            _check_sendable(message)
            self._check_send_as(mailbox, message)
            self._deliver(rec, mailbox, message, attachments, True, "mime", mime=mime)
            return self._accepted(rec)
        body = _canonical(
            self._json_body(rec), ["message", "saveToSentItems"], "microsoft.graph.sendMail"
        )
        if "message" not in body:
            raise GraphError(400, "ErrorInvalidParameter", "The 'message' parameter is required.")
        message, attachments = _normalize_message(body["message"], "sendMail")
        save = _bool(body.get("saveToSentItems", True), "saveToSentItems")
        _check_sendable(message)
        self._check_send_as(mailbox, message)
        self._deliver(rec, mailbox, message, attachments, save, "sendMail")
        return self._accepted(rec)

    def _accepted(self, rec: Recorded) -> web.Response:
        request_id = str(uuid.uuid4())
        rec.status = 202
        return web.Response(
            status=202,
            headers={
                "request-id": request_id,
                "client-request-id": rec.header("client-request-id") or request_id,
            },
        )

    def _draft_json(self, draft: _Draft, expand: bool = False) -> dict[str, Any]:
        message: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#users('{draft.mailbox}')/messages"
            "/$entity",
            "@odata.etag": f'W/"{draft.change_key}"',
            "id": draft.id,
            "createdDateTime": _iso(draft.created, 0),
            "lastModifiedDateTime": _iso(time.time(), 0),
            "changeKey": draft.change_key,
            "categories": [],
            "hasAttachments": bool(draft.attachments),
            "importance": "normal",
            "isRead": True,
            "isDraft": not draft.sent,
            "parentFolderId": "SentItems" if draft.sent else "Drafts",
            "toRecipients": [],
            "ccRecipients": [],
            "bccRecipients": [],
            "replyTo": [],
        }
        message.update(draft.message)
        if expand:
            message["attachments"] = [a.to_json() for a in draft.attachments]
        return message

    def _find_draft(self, mailbox: str, message_id: str | None) -> _Draft:
        draft = self.drafts.get(message_id or "")
        if (
            draft is None
            or draft.mailbox != mailbox
            or draft.deleted
            or (draft.sent and not draft.immutable_id)
        ):
            raise GraphError(404, "ErrorItemNotFound", ERRORS["ErrorItemNotFound"][1])
        return draft

    def _find_unsent_draft(self, mailbox: str, message_id: str | None) -> _Draft:
        draft = self._find_draft(mailbox, message_id)
        if draft.sent:
            raise GraphError(404, "ErrorItemNotFound", ERRORS["ErrorItemNotFound"][1])
        return draft

    def _create_message(self, rec: Recorded, mailbox: str) -> web.Response:
        mime = self._mime_body(rec)
        if mime is not None:
            message, attachments = _message_from_mime(mime)
        else:
            message, attachments = _normalize_message(self._json_body(rec), "createMessage")
        prefer = (rec.header("Prefer") or "").replace(" ", "").lower()
        immutable = 'idtype="immutableid"' in prefer
        draft = _Draft(
            id=_new_id("AAkALgAA" if immutable else "AAMkADAw"),
            mailbox=mailbox,
            message=message,
            attachments=attachments,
            created=time.time(),
            immutable_id=immutable,
        )
        self.drafts[draft.id] = draft
        rec.message_id = draft.id
        rec.status = 201
        headers = {"Preference-Applied": 'IdType="ImmutableId"'} if immutable else None
        return json_response(self._draft_json(draft), status=201, headers=headers)

    def _get_message(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_draft(mailbox, rec.message_id)
        expand = "attachments" in rec.query.get("$expand", "").lower()
        return json_response(self._draft_json(draft, expand=expand))

    def _update_message(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_unsent_draft(mailbox, rec.message_id)
        message, attachments = _normalize_message(self._json_body(rec), "updateMessage")
        draft.message.update(message)
        draft.attachments.extend(attachments)
        draft.change_key = secrets.token_urlsafe(12)
        return json_response(self._draft_json(draft))

    def _delete_message(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_draft(mailbox, rec.message_id)
        draft.deleted = True
        rec.status = 204
        return web.Response(status=204)

    def _send_draft(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_unsent_draft(mailbox, rec.message_id)
        _check_sendable(draft.message)
        self._check_send_as(mailbox, draft.message)
        self._deliver(
            rec, mailbox, draft.message, draft.attachments, True, "draft", message_id=draft.id
        )
        draft.sent = True
        return self._accepted(rec)

    def _list_attachments(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_draft(mailbox, rec.message_id)
        return json_response({"value": [a.to_json() for a in draft.attachments]})

    def _add_attachment(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_unsent_draft(mailbox, rec.message_id)
        attachment = _file_attachment(self._json_body(rec), "addAttachment")
        self._check_message_size(draft, attachment.size)
        draft.attachments.append(attachment)
        rec.status = 201
        return json_response(attachment.to_json(), status=201)

    def _check_message_size(self, draft: _Draft, extra: int) -> None:
        if sum(a.size for a in draft.attachments) + extra > self.max_message_bytes:
            raise GraphError(
                400,
                "ErrorMessageSizeExceeded",
                "The message exceeds the maximum supported size., Cannot save changes made to an "
                "item to store.",
            )

    def _create_upload_session(self, rec: Recorded, mailbox: str) -> web.Response:
        draft = self._find_unsent_draft(mailbox, rec.message_id)
        body = _canonical(
            self._json_body(rec), ["AttachmentItem"], "microsoft.graph.createUploadSession"
        )
        item = _canonical(
            body.get("AttachmentItem"),
            ["attachmentType", "name", "size", "contentType", "isInline", "contentId"],
            "microsoft.graph.attachmentItem",
        )
        if str(item.get("attachmentType", "")).lower() != "file":
            raise GraphError(400, "ErrorInvalidParameter", "attachmentType must be 'file'.")
        name, size = item.get("name"), item.get("size")
        if not isinstance(name, str) or not name:
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.name is required.")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.size is required.")
        if size < self.min_upload_session_bytes:
            raise GraphError(
                400,
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                "Attachment size must be greater than the minimum size.",
            )
        self._check_message_size(draft, size)
        session = _UploadSession(
            id=_new_id("AAMkADAS"),
            token=secrets.token_urlsafe(32),
            mailbox=mailbox,
            message_id=draft.id,
            name=name,
            content_type=item.get("contentType"),
            size=size,
            is_inline=_bool(item.get("isInline", False), "isInline"),
            content_id=item.get("contentId"),
            expires_at=time.time() + self.upload_session_ttl_seconds,
        )
        self.upload_sessions[session.id] = session
        rec.status = 201
        return json_response(
            {
                "@odata.context": f"{self.graph_url}/$metadata#microsoft.graph.uploadSession",
                "uploadUrl": self._upload_url(session),
                "expirationDateTime": _iso(session.expires_at),
                "nextExpectedRanges": ["0-"],
            },
            status=201,
        )

    def _upload_base(self, session: _UploadSession) -> str:
        quote = urllib.parse.quote
        return (
            f"{self.url}/api/v2.0/Users('{quote(session.mailbox, safe='@')}')"
            f"/Messages('{quote(session.message_id)}')"
        )

    def _upload_url(self, session: _UploadSession) -> str:
        return (
            f"{self._upload_base(session)}/AttachmentSessions('{_quote_id(session.id)}')"
            f"?authtoken={session.token}"
        )

    # --- the pre-authenticated upload URL (outlook.office.com in reality) ----------------------
    async def _upload(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        match = _UPLOAD_SEGMENT.match(segments[-1]) if len(segments) == 5 else None
        session = self.upload_sessions.get(match.group("id")) if match else None
        operation: Operation = "cancelUpload" if request.method == "DELETE" else "upload"
        rec = await self._record(
            request,
            operation,
            session.mailbox if session else None,
            session.message_id if session else None,
        )
        try:
            response = self._upload_checked(request, rec, session)
        except GraphError as exc:
            response = self._error(rec, exc.status, exc.code, exc.message, **exc.headers)
        rec.status = rec.status or response.status
        rec.responded = time.monotonic()
        return response

    def _upload_checked(
        self, request: web.Request, rec: Recorded, session: _UploadSession | None
    ) -> web.Response:
        if request.method not in ("PUT", "DELETE"):
            raise GraphError(405, "ErrorInvalidRequest", "Use PUT or DELETE on an upload URL.")
        if session is None:
            raise GraphError(404, "ErrorItemNotFound", "The upload session was not found.")
        if rec.query.get("authtoken") != session.token:
            raise GraphError(401, "InvalidAuthenticationToken", "The authtoken is not valid.")
        if self.reject_authorization_on_upload and rec.header("Authorization"):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Do not send an Authorization header to a pre-authenticated upload URL.",
            )
        if time.time() >= session.expires_at:
            raise GraphError(404, "ErrorItemNotFound", "The upload session has expired.")
        fault = self._take_fault(session.mailbox, rec.operation)
        if fault is not None:
            rec.fault = fault.code
            return self._fault_response(rec, fault)
        if request.method == "DELETE":
            del self.upload_sessions[session.id]
            rec.status = 204
            return web.Response(status=204)
        found = re.fullmatch(
            r"bytes (\d+)-(\d+)/(\d+)", (rec.header("Content-Range") or "").strip()
        )
        if found is None:
            raise GraphError(
                400, "InvalidContentRange", "Content-Range must be 'bytes {start}-{end}/{total}'."
            )
        start, end, total = (int(g) for g in found.groups())
        length = end - start + 1
        declared = rec.header("Content-Length")
        if declared is None or int(declared) != len(rec.body) or len(rec.body) != length:
            raise GraphError(
                400,
                "InvalidContentRange",
                f"Content-Length ({declared}), the body ({len(rec.body)} bytes) and Content-Range "
                f"({length} bytes) disagree.",
            )
        if total != session.size:
            raise GraphError(
                400,
                "InvalidContentRange",
                f"The total size {total} differs from the session's size {session.size}.",
            )
        if start != len(session.received) or end >= total or length <= 0:
            raise GraphError(
                416,
                "InvalidRange",
                f"The fragment {start}-{end} is not the next expected range "
                f"({len(session.received)}-).",
            )
        if length > self.max_upload_chunk_bytes:
            raise GraphError(
                413,
                "RequestEntityTooLarge",
                f"A fragment may be {self.max_upload_chunk_bytes} bytes at most.",
            )
        last = end + 1 == total
        if not last and self.upload_chunk_multiple and length % self.upload_chunk_multiple:
            raise GraphError(
                400,
                "InvalidChunkSize",
                f"Every fragment but the last must be a multiple of {self.upload_chunk_multiple} "
                f"bytes; got {length}.",
            )
        session.received += rec.body
        if not last:
            rec.status = 200
            return json_response(
                {
                    "@odata.context": f"{self._upload_base(session)}/AttachmentSessions/$entity",
                    "ExpirationDateTime": _iso(session.expires_at),
                    "nextExpectedRanges": [str(len(session.received))],
                }
            )
        del self.upload_sessions[session.id]
        draft = self.drafts.get(session.message_id)
        if draft is None or draft.sent or draft.deleted:
            raise GraphError(404, "ErrorItemNotFound", ERRORS["ErrorItemNotFound"][1])
        attachment = DeliveredAttachment(
            name=session.name,
            content_type=session.content_type,
            content=bytes(session.received),
            is_inline=session.is_inline,
            content_id=session.content_id,
            source="upload",
        )
        draft.attachments.append(attachment)
        rec.status = 201
        location = f"{self._upload_base(session)}/Attachments('{_quote_id(attachment.id)}')"
        return web.Response(status=201, headers={"Location": location})

    # --- admin endpoints (tests whose client is another process) -------------------------------
    async def _admin(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        what = "/".join(rest)
        if request.method == "GET" and what == "delivered":
            return json_response([d.to_json() for d in self.delivered])
        if request.method == "GET" and what == "requests":
            return json_response([r.to_json() for r in self.requests])
        if request.method == "GET" and what == "stats":
            return json_response(
                {
                    "maxInFlight": self.max_in_flight,
                    "inFlight": self.in_flight,
                    "delivered": len(self.delivered),
                    "requests": len(self.requests),
                    "pendingFaults": len(self.pending_faults),
                }
            )
        if request.method == "POST" and what == "faults":
            spec = await request.json()
            for item in spec if isinstance(spec, list) else [spec]:
                self._fault_from_json(item)
            return json_response({"pending": len(self.pending_faults)}, status=201)
        if request.method == "DELETE" and what == "faults":
            self.clear_faults()
            return web.Response(status=204)
        if request.method == "POST" and what == "reset":
            self.reset()
            return web.Response(status=204)
        if request.method == "POST" and what == "config":
            config = await request.json()
            if "latencySeconds" in config:
                self.latency_seconds = float(config["latencySeconds"])
            if "concurrencyLimit" in config:
                limit = config["concurrencyLimit"]
                self.concurrency_limit = None if limit is None else int(limit)
            if "audiences" in config:
                self.audiences = set(config["audiences"])
            return web.Response(status=204)
        return web.Response(status=404, text=f"unknown stand-in endpoint {what}\n")

    def _fault_from_json(self, item: Mapping[str, Any]) -> Fault:
        """``{"preset": "ErrorSendAsDenied"}`` or ``{"status", "code", "message"}``, plus
        ``n``, ``retryAfter``, ``mailbox``, ``operation``, ``mode`` ("respond" | "status" |
        "delay" | "drop"), ``delaySeconds``."""
        mode = item.get("mode", "respond")
        common: dict[str, Any] = {
            "n": int(item.get("n", 1)),
            "retry_after": item.get("retryAfter"),
            "mailbox": item.get("mailbox"),
            "operation": item.get("operation"),
        }
        if mode != "respond":
            return self.accept_then_fail(
                int(item.get("status", 504)),
                mode=mode,
                delay_seconds=float(item.get("delaySeconds", 5.0)),
                code=item.get("code"),
                **common,
            )
        if "preset" in item:
            return self.fail_with(item["preset"], **common)
        return self.fail_next(int(item["status"]), item["code"], item.get("message"), **common)


def _quote_id(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _retry_after(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


class RemoteGraphStandIn(RemoteAdmin):
    """Synchronous client of a Graph stand-in running in another process (``python -m``)."""

    def delivered(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._call("GET", "delivered"))

    def requests(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._call("GET", "requests"))

    def stats(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._call("GET", "stats"))

    def add_faults(self, *faults: Mapping[str, Any]) -> None:
        self._call("POST", "faults", list(faults))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def reset(self) -> None:
        self._call("POST", "reset")

    def configure(self, **config: Any) -> None:
        """``latencySeconds=``, ``concurrencyLimit=``, ``audiences=``."""
        self._call("POST", "config", config)

    def wait_delivered(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]]:
            found = self.delivered()
            return found if len(found) >= count else []

        return poll_until(enough, timeout, f"{count} delivered message(s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m standins.graph",
        description="Microsoft Graph mail stand-in on loopback (prints READY {json}).",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per Graph request")
    parser.add_argument(
        "--audience", action="append", default=None, help="accepted token resource (repeatable)"
    )
    parser.add_argument("--no-auth", action="store_true", help="accept any bearer token")
    parser.add_argument("--concurrency-limit", type=int, default=4, help="0: unlimited")
    parser.add_argument("--signing-key", default=None, help="shared with standins.identity")
    args = parser.parse_args(argv)
    GraphStandIn(
        port=args.port,
        latency_seconds=args.latency,
        audiences=args.audience or GRAPH_AUDIENCES,
        token_verifier=accept_any_token if args.no_auth else None,
        concurrency_limit=args.concurrency_limit or None,
        signing_key=args.signing_key.encode() if args.signing_key else DEFAULT_SIGNING_KEY,
    ).run_cli()


if __name__ == "__main__":
    main()
