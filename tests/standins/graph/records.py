"""What the Graph stand-in records: every request, and every message Exchange accepted.

Their ``to_json()`` forms are what ``GET /_standin/requests`` and ``GET /_standin/delivered``
answer (documented in :mod:`standins.graph`); keep those keys stable, add rather than rename.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from standins.admin import camel_json, utc_iso
from standins.identity import TokenClaims

__all__ = [
    "DeliveredAttachment",
    "DeliveredMessage",
    "Operation",
    "Recorded",
    "Via",
    "iso",
    "new_id",
]

Operation = Literal[
    "sendMail",
    "createMessage",
    "listMessages",
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
#: how a message reached Exchange: sendMail with JSON, sendMail with MIME, or a sent draft
Via = Literal["sendMail", "mime", "draft"]


def new_id(prefix: str) -> str:
    """An Exchange-looking item id (``AAMkAD...``: regular, ``AAkALg...``: immutable)."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=") + "AAA="


def iso(ts: float, digits: int = 7) -> str:
    """Graph's timestamps: UTC, ``Z``, seven fraction digits by default (none with ``digits=0``)."""
    return utc_iso(ts, digits)


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

    def media_type(self) -> str:
        """The ``Content-Type`` without parameters, lower case ("" when there is none)."""
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def to_json(self, max_body: int = 65_536) -> dict[str, Any]:
        data = {**camel_json(self, omit=["body"]), "bodySize": len(self.body)}
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
    id: str = field(default_factory=lambda: new_id("AAMkAGAtt"))

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


def _addresses(kind: str) -> Any:
    """A read-only property: the addresses of the message's ``kind`` recipient list."""

    def addresses(self: DeliveredMessage) -> list[str]:
        value = self.message.get(kind)
        return [r["emailAddress"]["address"] for r in value] if isinstance(value, list) else []

    return property(addresses)


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

    to = _addresses("toRecipients")
    cc = _addresses("ccRecipients")
    bcc = _addresses("bccRecipients")
    reply_to = _addresses("replyTo")

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

    @property
    def size(self) -> int:
        """Bytes of the MIME message when it came as MIME; else of the message's JSON without its
        attachments plus the attachments' content (what the size limit is checked against)."""
        if self.mime is not None:
            return len(self.mime)
        fields = {k: v for k, v in self.message.items() if k != "attachments"}
        return len(json.dumps(fields)) + sum(a.size for a in self.attachments)

    def attachment(self, name: str) -> DeliveredAttachment:
        for attachment in self.attachments:
            if attachment.name == name:
                return attachment
        raise KeyError(f"no attachment named {name!r}: {[a.name for a in self.attachments]}")

    def to_json(self) -> dict[str, Any]:
        return {
            **camel_json(self, omit=["mime", "attachments"]),
            "receivedAt": utc_iso(self.wall_time),
            "from": self.sender or self.mailbox,
            "to": self.to,
            "cc": self.cc,
            "bcc": self.bcc,
            "subject": self.subject,
            "size": self.size,
            "mimeBase64": None if self.mime is None else base64.b64encode(self.mime).decode(),
            "attachments": [a.to_json() for a in self.attachments],
        }
