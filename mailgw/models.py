"""Pydantic models of the public contracts: the send request, the queue envelope, the message state.

The send request is validated twice: at intake (HTTP) and again at delivery (a queue producer may
have enqueued it directly). Every rule lives here once, so both paths reject exactly the same input.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

MAX_RECIPIENTS = 500
MAX_CUSTOM_HEADERS = 5
MAX_SCHEDULE_AHEAD = timedelta(days=7)
DEFAULT_MAX_ATTACHMENT_BYTES = 150 * 1024 * 1024
MAX_METADATA_ENTRIES = 32
MAX_METADATA_VALUE = 1024
#: All keys and values together: the metadata lives in the message's state record, one Azure Table
#: property of at most 32K characters (which also holds the JSON around it).
MAX_METADATA_TOTAL = 8192
#: An error's message and hint are stored with the state; a reason this long is cut.
MAX_ERROR_TEXT = 2000
#: Messages in one ``POST /api/v1/messages:batch`` (Postmark's batch limit).
MAX_BATCH = 500
#: A template's name: what ``mailgw templates put NAME`` accepts, and ``template`` refers to.
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

# Matched with fullmatch: `$` would also match before a trailing newline.
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field-name: printable ASCII except ':'
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*/[A-Za-z0-9][A-Za-z0-9_.+-]*")
_CONTENT_ID = re.compile(r"[!-;=?-~]+")  # printable ASCII without '<', '>' and spaces
_B64_WHITESPACE = re.compile(r"\s+")


def _unsafe_in_header(char: str) -> bool:
    """A control character (C0, DEL, C1) other than TAB, or a Unicode line/paragraph separator
    (everything ``str.splitlines()`` splits on is among them). In a header any of these could
    start a new header line, or make the renderer refuse the message on every attempt. (A lone
    surrogate pydantic refuses in any string.)"""
    return char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp")


def _no_line_breaks(value: str) -> str:
    """Header injection guard for any text that ends up in a header."""
    if "\r" in value or "\n" in value:
        raise PydanticCustomError("header_injection", "must not contain CR or LF characters")
    if "\x00" in value:
        raise PydanticCustomError("header_injection", "must not contain NUL characters")
    bad = next((c for c in value if _unsafe_in_header(c)), None)
    if bad is not None:
        raise PydanticCustomError(
            "header_injection",
            "must not contain control characters or line separators (found U+{code})",
            {"code": f"{ord(bad):04X}"},
        )
    return value


HeaderText = Annotated[str, AfterValidator(_no_line_breaks)]


@lru_cache(maxsize=4096)
def _normalise_address(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise PydanticCustomError(
            "address", "is not a valid email address: {reason}", {"reason": str(exc)}
        ) from None
    # The ASCII (IDNA) domain keeps a message plain ASCII unless the local part itself is not.
    return f"{result.local_part}@{result.ascii_domain}"


def _check_address(value: str) -> str:
    _no_line_breaks(value)
    return _normalise_address(value.strip())


EmailAddress = Annotated[str, AfterValidator(_check_address)]


def _at_most(kind: str, count: int, limit: int, message: str, **context: str) -> None:
    """The request's count limits (headers, metadata, recipients) as one rule: over ``limit``, a
    ``kind`` error whose ``message`` may name ``{limit}`` and ``{count}``; ``context``: where it
    points (``field``)."""
    if count > limit:
        raise PydanticCustomError(kind, message, {**context, "limit": limit, "count": count})


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Recipient(_Model):
    """A mailbox: ``"a@example.com"`` or ``{"address": "a@example.com", "name": "A"}``."""

    address: EmailAddress
    name: HeaderText | None = Field(default=None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"address": data}
        if not isinstance(data, dict | Recipient):
            raise PydanticCustomError(
                "recipient",
                "must be an email address string or an object with 'address' and optional 'name'",
            )
        return data


class Attachment(_Model):
    """A file, or with ``inline`` and ``contentId`` an image the HTML refers to as ``cid:``."""

    name: HeaderText = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    content_base64: str
    inline: StrictBool = False
    content_id: HeaderText | None = Field(default=None, max_length=255)

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        if not _MIME_TYPE.fullmatch(value):
            raise PydanticCustomError(
                "content_type", "must be a MIME type such as 'application/pdf'"
            )
        return value.lower()

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        compact = _B64_WHITESPACE.sub("", value)
        try:
            base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise PydanticCustomError(
                "base64", "is not valid Base64 (standard alphabet, with padding)"
            ) from None
        return compact

    @field_validator("content_id")
    @classmethod
    def _content_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().removeprefix("<").removesuffix(">")
        if not value or not _CONTENT_ID.fullmatch(value):
            raise PydanticCustomError(
                "content_id", "must be printable ASCII without spaces or angle brackets"
            )
        return value

    @model_validator(mode="after")
    def _inline_needs_content_id(self) -> Attachment:
        if self.inline and not self.content_id:
            raise PydanticCustomError(
                "content_id",
                "an inline attachment needs a contentId (the HTML refers to it as cid:<contentId>)",
                {"field": "contentId"},
            )
        return self

    @property
    def size(self) -> int:
        """Decoded size in bytes, computed from the Base64 length without decoding."""
        data = self.content_base64
        return len(data) * 3 // 4 - data[-2:].count("=")

    def content(self) -> bytes:
        return base64.b64decode(self.content_base64)


class Importance(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"


class SendRequest(_Model):
    """The body of ``POST /api/v1/messages`` and what a queue producer may enqueue."""

    sender: Recipient = Field(alias="from")
    to: list[Recipient] = Field(default_factory=list)
    cc: list[Recipient] = Field(default_factory=list)
    bcc: list[Recipient] = Field(default_factory=list)
    reply_to: list[Recipient] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: HeaderText = Field(default="", max_length=998)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, HeaderText] = Field(default_factory=dict)
    importance: Importance = Importance.normal
    save_to_sent_items: StrictBool = True
    send_at: AwareDatetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    #: run everything but the transport: validated, rendered, recorded, reported as sent
    sandbox: StrictBool = False
    #: a stored template (``mailgw templates put``) instead of subject/text/html, rendered at
    #: intake with ``template_data``
    template: str | None = Field(default=None, pattern=TEMPLATE_NAME_PATTERN)
    template_data: dict[str, Any] | None = None

    @field_validator("headers")
    @classmethod
    def _custom_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        _at_most(
            "headers",
            len(headers),
            MAX_CUSTOM_HEADERS,
            "at most {limit} custom headers are allowed (Graph's limit); got {count}",
        )
        seen: set[str] = set()
        for name, value in headers.items():
            if any(c in name for c in "\r\n\x00"):
                raise PydanticCustomError(
                    "header_injection",
                    "header names must not contain CR, LF or NUL characters",
                    {"key": name.replace("\r", "\\r").replace("\n", "\\n")},
                )
            if name.lower() == "x-":
                raise PydanticCustomError(
                    "headers", "custom header names need a name after 'X-'", {"key": name}
                )
            if not name.lower().startswith("x-"):
                raise PydanticCustomError(
                    "headers",
                    "custom header names must start with 'X-'; got '{name}'",
                    {"name": name, "key": name},
                )
            if not _HEADER_NAME.fullmatch(name) or len(name) > 76:
                raise PydanticCustomError(
                    "headers",
                    "header name '{name}' is not a valid RFC 5322 field name",
                    {"name": name, "key": name},
                )
            if name.lower() in seen:
                raise PydanticCustomError(
                    "headers", "header '{name}' is given twice", {"name": name, "key": name}
                )
            if len(value) > 998:
                raise PydanticCustomError(
                    "headers",
                    "header '{name}' is longer than 998 characters",
                    {"name": name, "key": name},
                )
            seen.add(name.lower())
        return headers

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, str]) -> dict[str, str]:
        _at_most(
            "metadata",
            len(metadata),
            MAX_METADATA_ENTRIES,
            "at most {limit} metadata entries are allowed",
        )
        for key, value in metadata.items():
            if not key or len(key) > 64:
                raise PydanticCustomError("metadata", "metadata keys must be 1-64 characters")
            if len(value) > MAX_METADATA_VALUE:
                raise PydanticCustomError(
                    "metadata",
                    "metadata value of '{key}' is longer than {limit} characters",
                    {"key": key, "limit": MAX_METADATA_VALUE},
                )
        total = sum(len(key) + len(value) for key, value in metadata.items())
        _at_most(
            "metadata",
            total,
            MAX_METADATA_TOTAL,
            "metadata keys and values total {count} characters, over the limit of {limit}",
        )
        return metadata

    @field_validator("send_at")
    @classmethod
    def _schedule_window(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        now = (info.context or {}).get("now") or datetime.now(UTC)
        if value - now > MAX_SCHEDULE_AHEAD:
            raise PydanticCustomError(
                "send_at",
                "must be at most 7 days ahead (the storage queue's visibility limit)",
            )
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _whole_message(self, info: ValidationInfo) -> SendRequest:
        count = len(self.to) + len(self.cc) + len(self.bcc)
        if count == 0:
            raise PydanticCustomError(
                "recipients",
                "at least one recipient in to, cc or bcc is required",
                {"field": "to"},
            )
        _at_most(
            "recipients",
            count,
            MAX_RECIPIENTS,
            "at most {limit} recipients in to, cc and bcc together; got {count}",
            field="to",
        )
        self._template_rules(info)
        if self.template is None and not self.text and not self.html:
            raise PydanticCustomError(
                "body", "at least one of text or html is required", {"field": "text"}
            )
        limit = (info.context or {}).get("max_attachment_bytes", DEFAULT_MAX_ATTACHMENT_BYTES)
        total = sum(a.size for a in self.attachments)
        if total > limit:
            raise PydanticCustomError(
                "too_large",
                "attachments total {total} bytes, over the limit of {limit} bytes",
                {"field": "attachments", "total": total, "limit": limit},
            )
        content_ids = [a.content_id for a in self.attachments if a.content_id]
        if len(content_ids) != len(set(content_ids)):
            raise PydanticCustomError(
                "content_id", "contentId values must be unique", {"field": "attachments"}
            )
        return self

    def _template_rules(self, info: ValidationInfo) -> None:
        """A template replaces subject, text and html; only the HTTP intake renders one (a queue
        producer's message carries its own subject and body)."""
        if self.template is None:
            if self.template_data is not None:
                raise PydanticCustomError(
                    "template", "templateData needs a template", {"field": "templateData"}
                )
            return
        if not (info.context or {}).get("templates", False):
            raise PydanticCustomError(
                "template",
                "templates are rendered by the HTTP API; a queued message carries subject, text "
                "and html itself",
                {"field": "template"},
            )
        given = [name for name in ("subject", "text", "html") if getattr(self, name)]
        if given:
            raise PydanticCustomError(
                "template",
                "a template replaces subject, text and html: send either template or {given}",
                {"field": "template", "given": ", ".join(given)},
            )

    def recipients(self) -> list[Recipient]:
        """Everyone the message goes to: the SMTP envelope (Bcc included)."""
        return [*self.to, *self.cc, *self.bcc]

    def to_json(self) -> dict[str, Any]:
        """The wire form (camelCase aliases, no defaults dropped), suitable to validate again."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class MessageStatus(StrEnum):
    scheduled = "scheduled"
    queued = "queued"
    sending = "sending"
    retrying = "retrying"
    sent = "sent"
    failed = "failed"
    #: canceled by its sender before any attempt to send it (``DELETE /api/v1/messages/{id}``)
    canceled = "canceled"


class TemplateRef(BaseModel):
    """Which stored template (and which of its versions) a message was rendered from."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int


def _storable(text: str, limit: int) -> str:
    """Text that can always be stored and logged: cut to ``limit`` characters, and a lone
    surrogate (JSON can carry one in a field name a producer made up) replaced."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", errors="replace").decode("utf-8")


class ErrorInfo(BaseModel):
    """The last error of a message, with what an operator should do about it."""

    model_config = ConfigDict(frozen=True)

    code: Annotated[str, AfterValidator(lambda v: _storable(v, 200))]
    message: Annotated[str, AfterValidator(lambda v: _storable(v, MAX_ERROR_TEXT))]
    hint: Annotated[str, AfterValidator(lambda v: _storable(v, MAX_ERROR_TEXT))] = ""


class PayloadRef(_Model):
    """Claim check: where a payload too large for a queue message is kept in Blob storage."""

    container: str
    blob: str
    sha256: str
    size: int


class MimePayload(_Model):
    """A message submitted as raw MIME (SMTP intake): the SMTP envelope and the bytes as
    submitted. Only the gateway writes it (its envelopes are sealed); a producer's bare send
    request never has this form."""

    mail_from: str = Field(min_length=3, max_length=320)
    rcpt_to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    #: the message, Base64
    data: str
    #: the transaction asked for SMTPUTF8 (RFC 6531): addresses or headers in UTF-8
    utf8: bool = False
    #: the SMTP client (``mailgw smtp-clients``) that submitted it
    client: str | None = Field(default=None, max_length=64)

    def content(self) -> bytes:
        return base64.b64decode(self.data)


class Envelope(_Model):
    """The gateway's own queue message. A producer's bare send request has no ``mailgw`` key."""

    mailgw: Literal[1] = 1
    id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(default=0, ge=0)
    created_at: datetime
    traceparent: str | None = None
    request: dict[str, Any] | None = None
    raw: str | None = None
    #: a raw MIME message (SMTP intake) instead of a send request
    mime: MimePayload | None = None
    payload_ref: PayloadRef | None = None
    error: ErrorInfo | None = None
    source: Literal["api", "queue", "smtp"] = "api"
    #: throttled retries so far (they do not count as attempts)
    throttled: int = Field(default=0, ge=0)
    #: an attempt ended without knowing whether the message went out
    ambiguous: bool = False
    #: set when an Idempotency-Key made this message: the request's fingerprint, so a losing
    #: duplicate's copy can never pass for the winner's message
    request_hash: str | None = None
    #: the replay this envelope belongs to (0: the original)
    replay: int = Field(default=0, ge=0)
    #: the Entra ID app that sent it (it alone may read its state: Viewer)
    owner: str | None = Field(default=None, max_length=128)
    #: a producer's request that came back unfinished and carries on sealed (its holder crashed)
    adopted: bool = False
    #: deferred by pacing until this time: its wait does not age it (MAILGW_MAX_AGE_SECONDS)
    paced_until: datetime | None = None
    #: the gateway's seal (mailgw/seal.py): an HMAC only the gateway can compute
    sig: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_payload(self) -> Envelope:
        payloads = (self.request, self.raw, self.mime, self.payload_ref)
        present = [x for x in payloads if x is not None]
        if len(present) != 1:
            raise ValueError("an envelope carries exactly one of request, raw, mime or payloadRef")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SubmitResult(BaseModel):
    """The 202 body of ``POST /api/v1/messages``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    status: MessageStatus
    status_url: str
