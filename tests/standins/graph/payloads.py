"""Graph's message JSON as Exchange reads it: property names in any case normalised to camelCase,
recipients, bodies, headers and file attachments checked; and a MIME message read into the same
fields. Every refusal is a :class:`GraphError` with the code Graph answers."""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from standins.graph.errors import GraphError
from standins.graph.records import DeliveredAttachment, Recorded

__all__ = [
    "MAX_INTERNET_HEADERS",
    "canonical",
    "check_sendable",
    "extended_property_key",
    "file_attachment",
    "json_body",
    "message_from_mime",
    "mime_body",
    "normalize_message",
    "parse_bool",
]

MAX_INTERNET_HEADERS = 5

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
_PROPERTY_ID = re.compile(r"^\s*(\w+)\s+(\{[0-9a-fA-F-]{36}\})\s+Name\s+(\S.*?)\s*$")
_ADDRESS_RE = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+$")


def canonical(obj: Any, allowed: Iterable[str], type_name: str) -> dict[str, Any]:
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
    recipient = canonical(value, ["emailAddress"], "microsoft.graph.recipient")
    address = canonical(
        recipient.get("emailAddress", {}), ["address", "name"], "microsoft.graph.emailAddress"
    )
    for key in ("address", "name"):
        if key in address and not isinstance(address[key], str):
            raise GraphError(400, "RequestBodyRead", f"emailAddress.{key} must be a string.")
    recipient["emailAddress"] = address
    return recipient


def parse_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Cannot convert the literal '{value}' to the expected type "
            f"'Edm.Boolean' for '{name}'.",
        )
    return value


def file_attachment(value: Any, source: str) -> DeliveredAttachment:
    raw = canonical(value, _ATTACHMENT_PROPS, "microsoft.graph.fileAttachment")
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
    is_inline = parse_bool(raw.get("isInline", False), "isInline")
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


def extended_property_key(property_id: str) -> tuple[str, str, str] | None:
    """``String {GUID} Name name`` → its parts as Exchange compares them (type and GUID in any
    case, the name as is), or None if malformed."""
    found = _PROPERTY_ID.match(property_id)
    if found is None:
        return None
    kind, guid, name = found.groups()
    return kind.lower(), guid.lower(), name


def _extended_properties(value: Any) -> list[dict[str, str]]:
    """``[{"id": "String {GUID} Name x", "value": "..."}]``: ids must be well formed."""
    if not isinstance(value, list):
        raise GraphError(400, "RequestBodyRead", "'singleValueExtendedProperties' must be a list.")
    properties = []
    for entry in value:
        prop = canonical(
            entry, ["id", "value"], "microsoft.graph.singleValueLegacyExtendedProperty"
        )
        if (
            not isinstance(prop.get("value"), str)
            or extended_property_key(str(prop.get("id", ""))) is None
        ):
            raise GraphError(
                400, "ErrorInvalidProperty", f"Invalid extended property: {prop.get('id')!r}."
            )
        properties.append(prop)
    return properties


def normalize_message(value: Any, source: str) -> tuple[dict[str, Any], list[DeliveredAttachment]]:
    message = canonical(value, _MESSAGE_PROPS, "microsoft.graph.message")
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
        body = canonical(message["body"], ["contentType", "content"], "microsoft.graph.itemBody")
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
    if "singleValueExtendedProperties" in message:
        message["singleValueExtendedProperties"] = _extended_properties(
            message["singleValueExtendedProperties"]
        )
    if "internetMessageHeaders" in message:
        headers = message["internetMessageHeaders"]
        if not isinstance(headers, list):
            raise GraphError(400, "RequestBodyRead", "'internetMessageHeaders' must be a list.")
        headers = [
            canonical(h, ["name", "value"], "microsoft.graph.internetMessageHeader")
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
        attachments = [file_attachment(a, source) for a in message.pop("attachments")]
    return message, attachments


def check_sendable(message: Mapping[str, Any]) -> None:
    recipients = [r for key in _RECIPIENT_LISTS[:3] for r in message.get(key) or []]
    if not recipients:
        raise GraphError.canned("ErrorInvalidRecipients")
    for recipient in recipients + list(message.get("replyTo") or []):
        address = recipient["emailAddress"].get("address")
        if not isinstance(address, str) or not _ADDRESS_RE.match(address):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient isn't valid., Recipient '{address}' isn't resolved. "
                "All recipients must be resolved before a message can be submitted.",
            )


def message_from_mime(mime: bytes) -> tuple[dict[str, Any], list[DeliveredAttachment]]:
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
    if parsed.get("Message-ID"):
        message["internetMessageId"] = str(parsed["Message-ID"]).strip()
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


# --- request bodies -----------------------------------------------------------------------------


def _check_request_size(rec: Recorded, max_request_bytes: int) -> None:
    if len(rec.body) > max_request_bytes:
        raise GraphError.canned("RequestEntityTooLarge")


def json_body(rec: Recorded, max_request_bytes: int) -> Any:
    """The JSON body of a Graph call; Graph reads nothing else where it expects JSON."""
    _check_request_size(rec, max_request_bytes)
    content_type = rec.media_type()
    if content_type != "application/json":
        raise GraphError(
            415, "UnsupportedMediaType", f"Content-Type '{content_type}' is not supported."
        )
    if rec.json is None:
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    return rec.json


def mime_body(rec: Recorded, max_request_bytes: int) -> bytes | None:
    """The MIME message of a ``text/plain`` (Base64 MIME) request, None for JSON requests.

    Graph takes MIME on sendMail and on message creation (a draft from MIME)."""
    if rec.media_type() != "text/plain":
        return None
    _check_request_size(rec, max_request_bytes)
    try:
        return base64.b64decode(b"".join(rec.body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GraphError(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        ) from exc
