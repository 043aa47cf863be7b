"""Raw MIME as SMTP clients submit it: read once, by the same rules at intake and at delivery.

An SMTP client hands over an envelope (MAIL FROM, RCPT TO) and a message it wrote itself. The
gateway delivers that message as submitted; what it checks is who it claims to be from: the
envelope sender and every address in the ``From``, ``Sender``, ``Resent-From`` and
``Resent-Sender`` headers must be allowed senders (a producer may only send as an allowed
mailbox, docs/trust-model.md). The envelope recipients, Bcc included, are the recipients, and
the only ones: an address in the To, Cc or Bcc headers that is not in the envelope is refused
(Graph's MIME send takes its recipients from the headers). ``Bcc`` and ``Return-Path`` headers
are removed, as a submission server may (RFC 6409 §8).

Headers are read strictly, because what this parser reads must be what Exchange reads: every
header line is ``Name: value`` or a continuation, and an address field must parse without
defects and name the same addresses as ``email.utils.getaddresses`` (``From: a@x <b@x>`` is
refused, not read as a@x).
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

from pydantic import ValidationError

from mailgw.errors import FieldError, InvalidRequest, MessageTooLarge, SenderNotAllowed
from mailgw.models import MAX_RECIPIENTS, MimePayload, Recipient, SendRequest
from mailgw.policy import SenderPolicy

#: what the summary of a MIME message says instead of a body (it is never rendered)
SUMMARY_TEXT = "(raw MIME, delivered as submitted)"
#: the longest Message-ID that keys idempotency (as an Idempotency-Key: printable ASCII)
MAX_MESSAGE_ID = 255
#: the headers whose addresses claim who the message is from
SENDER_HEADERS = ("From", "Sender", "Resent-From", "Resent-Sender")
#: the headers whose addresses Graph's MIME send would deliver to
RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
#: removed at submission: hidden recipients travel in the envelope; Return-Path is the receiver's
STRIPPED_HEADERS = (b"bcc", b"return-path")
#: a header line that starts a field: printable ASCII but the colon, then the colon at once
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


@dataclass(frozen=True)
class Submission:
    """A MIME message with its SMTP envelope, checked: valid addresses, a readable ``From``."""

    data: bytes
    mail_from: str
    rcpt_to: tuple[str, ...]
    utf8: bool
    #: the ``Message-ID`` header (None: it has none; intake adds one)
    message_id: str | None
    #: every address in the ``From`` and ``Sender`` headers
    header_senders: tuple[str, ...]
    client: str | None = None

    def senders(self) -> tuple[str, ...]:
        """Every address the message claims to be from: the envelope's and the headers'."""
        return (self.mail_from, *self.header_senders)

    def payload(self) -> MimePayload:
        return MimePayload(
            mail_from=self.mail_from,
            rcpt_to=list(self.rcpt_to),
            data=base64.b64encode(self.data).decode("ascii"),
            utf8=self.utf8,
            client=self.client,
        )

    def summary(self) -> SendRequest:
        """The message as a send request, for its state record, events and limits: the mailbox
        (MAIL FROM), the recipients, who submitted it. Never rendered: the MIME is what goes."""
        metadata = {"smtpClient": self.client} if self.client else {}
        if self.message_id:
            metadata["messageId"] = self.message_id[:1024]
        return SendRequest.model_validate(
            {
                "from": self.mail_from,
                "to": list(self.rcpt_to),
                "text": SUMMARY_TEXT,
                "metadata": metadata,
            }
        )


def _address(value: str, field: str) -> str:
    try:
        return Recipient.model_validate(value).address
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise InvalidRequest(f"{field} <{value}> {reason}", [FieldError(field, reason)]) from None


def parse_submission(
    data: bytes,
    mail_from: str,
    rcpt_to: Sequence[str],
    *,
    max_bytes: int,
    utf8: bool = False,
    client: str | None = None,
) -> Submission:
    """The message, or :class:`InvalidRequest` / :class:`MessageTooLarge` saying why not."""
    if len(data) > max_bytes:
        raise MessageTooLarge(f"The message is {len(data)} bytes; the limit is {max_bytes} bytes.")
    if not rcpt_to:
        raise InvalidRequest("The message has no recipients.", [FieldError("rcptTo", "empty")])
    if len(rcpt_to) > MAX_RECIPIENTS:
        raise InvalidRequest(
            f"At most {MAX_RECIPIENTS} recipients per message; got {len(rcpt_to)}.",
            [FieldError("rcptTo", "too many recipients")],
        )
    sender = _address(mail_from, "MAIL FROM")
    recipients = tuple(dict.fromkeys(_address(r, "RCPT TO") for r in rcpt_to))
    data = _without_fields(data, STRIPPED_HEADERS)
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(data)
    from_fields = headers.get_all("From") or []
    if len(from_fields) != 1:
        raise InvalidRequest(
            "The message needs exactly one From header (RFC 5322).",
            [FieldError("From", "missing" if not from_fields else "given more than once")],
        )
    by_header = {name: _header_addresses(headers, name) for name in SENDER_HEADERS}
    header_senders = [address for found in by_header.values() for address in found]
    if not by_header["From"]:
        raise InvalidRequest(
            "The From header names no mailbox.", [FieldError("From", "no address in it")]
        )
    envelope = {r.lower() for r in recipients}
    for name in RECIPIENT_HEADERS:
        stray = [a for a in _header_addresses(headers, name) if a.lower() not in envelope]
        if stray:
            raise InvalidRequest(
                f"The {name} header names {len(stray)} address(es) that are not envelope "
                "recipients (RCPT TO): every recipient must be in the envelope.",
                [FieldError(name, "not an envelope recipient")],
            )
    return Submission(
        data=data,
        mail_from=sender,
        rcpt_to=recipients,
        utf8=utf8,
        message_id=_message_id(headers.get_all("Message-ID") or []),
        header_senders=tuple(header_senders),
        client=client,
    )


def read_payload(payload: MimePayload, *, max_bytes: int) -> Submission:
    """A queued MIME payload, checked again (delivery trusts nothing it reads)."""
    try:
        data = payload.content()
    except ValueError:
        raise InvalidRequest("The queued MIME message is not Base64.") from None
    return parse_submission(
        data,
        payload.mail_from,
        payload.rcpt_to,
        max_bytes=max_bytes,
        utf8=payload.utf8,
        client=payload.client,
    )


def _header_lines(data: bytes) -> list[bytes]:
    """The header lines (with their line ends, up to the blank line); refused unless every
    line starts a field (``Name:``) or continues one: a line the parser would take for the body
    (``From : x``) could hide a header from the checks that Exchange still reads."""
    lines: list[bytes] = []
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        line = data[offset:end]
        if line in (b"\r\n", b"\n"):
            return lines
        starts = _FIELD_START.match(line) is not None
        if not starts and not (lines and line[:1] in (b" ", b"\t")):
            raise InvalidRequest(
                f"Header line {len(lines) + 1} is not 'Name: value' nor a continuation.",
                [FieldError("headers", "malformed header line")],
            )
        lines.append(line)
        offset = end
    return lines


def _without_fields(data: bytes, names: Sequence[bytes]) -> bytes:
    """``data`` without the header fields ``names`` (lowercase), continuations included."""
    lines = _header_lines(data)
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] not in (b" ", b"\t"):
            dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    if len(kept) == len(lines):
        return data
    headers_end = sum(len(line) for line in lines)  # then the blank line, then the body
    return b"".join(kept) + data[headers_end:]


def _utf8(text: str) -> str:
    """Header text as the bytes parser left it (raw 8-bit bytes as surrogates), as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: defects that only say a header holds raw UTF-8 (8BITMIME, SMTPUTF8): checked by the cross-read
_UTF8_DEFECTS = ("UndecodableBytesDefect", "NonASCIILocalPartDefect")


def _header_addresses(headers: email.message.Message, name: str) -> list[str]:
    """Every address in the ``name`` fields, read the strict way: a field with parse defects, or
    whose raw text another parser (``email.utils.getaddresses``) reads as other addresses, is
    refused rather than guessed at (``From: a@x <b@x>`` is read as a@x by one, b@x by another)."""
    found: list[str] = []
    values: list[Any] = headers.get_all(name) or []
    raws = [raw for field, raw in headers.raw_items() if field.lower() == name.lower()]
    for value, raw in zip(values, raws, strict=False):
        try:
            addresses = value.addresses
            defects = [type(d).__name__ for d in getattr(value, "defects", ())]
        except (AttributeError, ValueError, IndexError) as exc:
            raise InvalidRequest(
                f"The {name} header cannot be read: {exc}", [FieldError(name, "unreadable")]
            ) from None
        parsed = sorted(_utf8(a.addr_spec).lower() for a in addresses)
        other = sorted(a.lower() for _, a in email.utils.getaddresses([_utf8(str(raw))]) if a)
        if parsed != other or any(d not in _UTF8_DEFECTS for d in defects):
            raise InvalidRequest(
                f"The {name} header is ambiguous: write each address as addr@domain or "
                "Name <addr@domain>, separated by commas.",
                [FieldError(name, "ambiguous address list")],
            )
        found.extend(_address(_utf8(a.addr_spec), name) for a in addresses)
    return found


def _message_id(values: Sequence[object]) -> str | None:
    """The Message-ID, if any: one field of printable ASCII (RFC 5322 msg-id), or refused."""
    if not values:
        return None
    text = str(values[0]).strip()
    if len(values) > 1 or not (
        0 < len(text) <= MAX_MESSAGE_ID and all(" " <= c <= "~" for c in text)
    ):
        raise InvalidRequest(
            f"The message needs at most one Message-ID of at most {MAX_MESSAGE_ID} printable "
            "ASCII characters (RFC 5322).",
            [FieldError("Message-ID", "not a usable msg-id")],
        )
    return text


def check_senders(policies: Iterable[SenderPolicy], submission: Submission) -> None:
    """Every address the message claims to be from must be allowed by every policy (the
    gateway's ``MAILGW_ALLOWED_SENDERS``, and at intake the client's own)."""
    for policy in policies:
        for address in submission.senders():
            if not policy.allows(address):
                raise SenderNotAllowed(
                    f"This gateway may not send as '{address}'.",
                    [FieldError("from", "not an allowed sender")],
                )


def with_header(data: bytes, name: str, value: str) -> bytes:
    """The message with one more header field, first (the rest byte for byte)."""
    line = f"{name}: {value}\r\n".encode()
    return line + data


def header_recipients(data: bytes) -> set[str]:
    """Every address in the To and Cc headers, lowercased."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(data)
    found: set[str] = set()
    for name in ("To", "Cc"):
        values: list[Any] = headers.get_all(name) or []
        for value in values:
            try:
                found.update(a.addr_spec.lower() for a in value.addresses)
            except (AttributeError, ValueError, IndexError):
                continue
    return found


def with_bcc(data: bytes, envelope: Sequence[str]) -> bytes:
    """For APIs that take the recipients from the headers (Graph's MIME send): envelope
    recipients not in To or Cc become a Bcc header (the submission server removes it)."""
    listed = header_recipients(data)
    hidden = [a for a in envelope if a.lower() not in listed]
    if not hidden:
        return data
    return with_header(data, "Bcc", ",\r\n ".join(hidden))


def quoted_printable_as_base64(data: bytes) -> bytes:
    """Quoted-printable parts re-encoded as Base64, the decoded content byte for byte the same:
    Graph's MIME send re-encodes QP and can corrupt a soft line break followed by hex-like
    characters (smtp-oauth-relay #93/#94). A message without QP parts is returned untouched."""
    parsed = BytesParser(policy=email.policy.compat32).parsebytes(data)
    changed = False
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() != "quoted-printable":
            continue
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):
            continue
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(base64.encodebytes(content).decode("ascii"))
        changed = True
    if not changed:
        return data
    out = io.BytesIO()
    policy = email.policy.compat32.clone(linesep="\r\n")
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=policy).flatten(parsed)
    return out.getvalue()
