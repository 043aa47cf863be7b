"""Where the local mail viewer finds what the gateway sent, as one kind of :class:`Mail`.

Three places, each optional: the outbox transport's folder (``MAILGW_OUTBOX_DIR``: ``<id>.eml``
and ``<id>.envelope.json`` for the Bcc), and the local stand-ins ``make run`` starts for the other
transports, read through their admin endpoints: the Graph stand-in's ``/_standin/delivered``
(``MAILGW_DEV_GRAPH_ADMIN_URL``; a message as Graph's JSON, or as MIME when Graph got MIME) and the
SMTP stand-in's ``/_standin/received`` (``MAILGW_DEV_SMTP_ADMIN_URL``; the DATA and the envelope).
MIME is read with the ``email`` package. A parsed message is cached until its source changes it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger("devhost.mail")

OUTBOX_SETTING = "MAILGW_OUTBOX_DIR"
GRAPH_ADMIN_SETTING = "MAILGW_DEV_GRAPH_ADMIN_URL"
SMTP_ADMIN_SETTING = "MAILGW_DEV_SMTP_ADMIN_URL"
#: the gateway's Message-ID is ``<message id@sender's domain>`` (mailgw.render.message_id_for)
_MESSAGE_ID = re.compile(r"<([^@<>]+)@[^<>]+>")
ADMIN_TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass(frozen=True)
class Part:
    """An attachment or an inline image."""

    index: int
    filename: str | None
    content_type: str
    content_id: str | None
    inline: bool
    data: bytes


@dataclass(frozen=True)
class Mail:
    key: str  # unique in the viewer and safe in a URL: "<source>-<name or number>"
    source: str
    received: datetime
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    size: int
    gateway_id: str | None
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    parts: list[Part] = field(default_factory=list)
    raw: bytes | None = None  # the message as MIME, when it was MIME

    def part_by_cid(self, content_id: str) -> Part | None:
        return next((p for p in self.parts if p.content_id == content_id), None)


def _gateway_id(message_id: str | None) -> str | None:
    match = _MESSAGE_ID.fullmatch((message_id or "").strip())
    return match.group(1) if match else None


def _addresses(message: EmailMessage, name: str) -> list[str]:
    header = message[name]
    if isinstance(header, AddressHeader):
        return [str(address) for address in header.addresses]
    return [str(header)] if header else []


def from_mime(
    key: str,
    source: str,
    received: datetime,
    data: bytes,
    *,
    envelope: Iterable[str] = (),
    gateway_id: str | None = None,
) -> Mail:
    """A MIME message; ``envelope`` (RCPT TO) shows the Bcc that no header carries."""
    message = BytesParser(policy=default_policy).parsebytes(data)
    assert isinstance(message, EmailMessage)
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    bodies = {id(text_part), id(html_part)}
    to, cc = _addresses(message, "To"), _addresses(message, "Cc")
    bcc = _addresses(message, "Bcc")
    if not bcc:
        shown = {a.rpartition("<")[2].rstrip(">").lower() for a in to + cc}
        bcc = [r for r in envelope if r.lower() not in shown]
    parts: list[Part] = []
    for part in message.walk():
        if part.is_multipart() or id(part) in bodies:
            continue
        content_id = (part.get("Content-ID") or "").strip().strip("<>") or None
        disposition = part.get_content_disposition()
        payload = part.get_payload(decode=True)
        parts.append(
            Part(
                index=len(parts),
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                content_id=content_id,
                inline=disposition == "inline" or (bool(content_id) and disposition is None),
                data=payload if isinstance(payload, bytes) else b"",
            )
        )
    return Mail(
        key=key,
        source=source,
        received=received,
        sender=", ".join(_addresses(message, "From")),
        to=to,
        cc=cc,
        bcc=bcc,
        subject=str(message.get("Subject", "")),
        size=len(data),
        gateway_id=gateway_id or _gateway_id(message.get("Message-ID")),
        headers=[(name, str(value)) for name, value in message.items()],
        text=text_part.get_content() if isinstance(text_part, EmailMessage) else None,
        html=html_part.get_content() if isinstance(html_part, EmailMessage) else None,
        parts=parts,
        raw=data,
    )


def _graph_recipients(message: Mapping[str, Any], name: str) -> list[str]:
    found = []
    for recipient in message.get(name) or []:
        address = recipient.get("emailAddress") or {}
        shown = address.get("address", "")
        found.append(f"{address['name']} <{shown}>" if address.get("name") else shown)
    return found


def _decode(text: str | None) -> bytes:
    try:
        return base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        return b""


def from_graph(key: str, delivered: Mapping[str, Any]) -> Mail:
    """A message the Graph stand-in accepted: its MIME when Graph got MIME, else Graph's JSON
    message (which carries no Message-ID of the gateway's: Exchange assigns one)."""
    received = datetime.fromtimestamp(float(delivered.get("wallTime") or 0), UTC)
    if delivered.get("mimeBase64"):
        return from_mime(key, "Graph stand-in", received, _decode(delivered["mimeBase64"]))
    message: Mapping[str, Any] = delivered.get("message") or {}
    body = message.get("body") or {}
    content = str(body.get("content") or "")
    is_html = str(body.get("contentType", "")).lower() == "html"
    parts = [
        Part(
            index=index,
            filename=item.get("name"),
            content_type=item.get("contentType") or "application/octet-stream",
            content_id=item.get("contentId"),
            inline=bool(item.get("isInline")),
            data=_decode(item.get("contentBytes")),
        )
        for index, item in enumerate(delivered.get("attachments") or [])
    ]
    sender = _graph_recipients({"from": [message["from"]]}, "from") if message.get("from") else []
    recipients = {
        name: _graph_recipients(message, field)
        for name, field in (
            ("To", "toRecipients"),
            ("Cc", "ccRecipients"),
            ("Bcc", "bccRecipients"),
            ("Reply-To", "replyTo"),
        )
    }
    headers = [("From", ", ".join(sender))]
    headers += [(name, ", ".join(found)) for name, found in recipients.items() if found]
    headers += [("Subject", str(message.get("subject") or ""))]
    headers += [("Importance", str(message.get("importance") or "normal"))]
    headers += [(h["name"], h["value"]) for h in message.get("internetMessageHeaders") or []]
    return Mail(
        key=key,
        source="Graph stand-in",
        received=received,
        sender=", ".join(sender) or str(delivered.get("mailbox") or ""),
        to=recipients["To"],
        cc=recipients["Cc"],
        bcc=recipients["Bcc"],
        subject=str(message.get("subject") or ""),
        size=len(content.encode()) + sum(len(p.data) for p in parts),
        gateway_id=None,
        headers=headers,
        text=None if is_html else content,
        html=content if is_html else None,
        parts=parts,
    )


def from_smtp(key: str, received: Mapping[str, Any]) -> Mail:
    """A message the SMTP stand-in accepted: the DATA as it arrived, and the envelope."""
    return from_mime(
        key,
        "SMTP stand-in",
        datetime.fromtimestamp(float(received.get("wallTime") or 0), UTC),
        _decode(received.get("dataBase64")),
        envelope=received.get("rcptTos") or [],
    )


class MailSources:
    """Every message the local gateway sent, from the sources its settings name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.outbox = Path(environ.get(OUTBOX_SETTING) or "outbox").resolve()
        self.graph_admin = (environ.get(GRAPH_ADMIN_SETTING) or "").rstrip("/") or None
        self.smtp_admin = (environ.get(SMTP_ADMIN_SETTING) or "").rstrip("/") or None
        self._session: aiohttp.ClientSession | None = None
        self._parsed: dict[str, tuple[object, Mail]] = {}

    def describe(self) -> list[str]:
        found = [f"outbox {self.outbox}"]
        if self.graph_admin:
            found.append(f"Graph stand-in {self.graph_admin}")
        if self.smtp_admin:
            found.append(f"SMTP stand-in {self.smtp_admin}")
        return found

    async def collect(self) -> tuple[list[Mail], list[str]]:
        """All messages, newest first, and what could not be read (one line per source)."""
        problems: list[str] = []
        mails = await asyncio.to_thread(self._outbox)
        for url, path, parse in (
            (self.graph_admin, "delivered", from_graph),
            (self.smtp_admin, "received", from_smtp),
        ):
            if url is None:
                continue
            try:
                items = await self._admin_list(f"{url}/_standin/{path}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                problems.append(f"{url}/_standin/{path}: {type(error).__name__} {error}".strip())
                continue
            prefix = "graph" if parse is from_graph else "smtp"
            for number, item in enumerate(items):
                key = f"{prefix}-{number}"
                mails.append(self._cached(key, item.get("wallTime"), partial(parse, key, item)))
        mails.sort(key=lambda mail: mail.received, reverse=True)
        return mails, problems

    async def find(self, key: str) -> Mail | None:
        mails, _ = await self.collect()
        return next((mail for mail in mails if mail.key == key), None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _cached(self, key: str, version: object, parse: Callable[[], Mail]) -> Mail:
        """Parse once per version of a message (its file's mtime and size, or its arrival)."""
        seen = self._parsed.get(key)
        if seen is None or seen[0] != version:
            seen = (version, parse())
            self._parsed[key] = seen
        return seen[1]

    async def _admin_list(self, url: str) -> list[dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=ADMIN_TIMEOUT)
        async with self._session.get(url) as response:
            response.raise_for_status()
            items = await response.json()
        if not isinstance(items, list):
            raise ValueError("expected a JSON list")
        return items

    def _outbox(self) -> list[Mail]:
        if not self.outbox.is_dir():
            return []
        mails = []
        for path in self.outbox.glob("*.eml"):
            if path.name.startswith("."):
                continue  # a file being written (the transport renames it into place)
            try:
                stat = path.stat()
                version = (stat.st_mtime_ns, stat.st_size)
                mails.append(
                    self._cached(f"outbox-{path.stem}", version, partial(_eml, path, stat))
                )
            except OSError as error:  # gone between the listing and the read
                log.debug("outbox file %s: %s", path, error)
        return mails


def _eml(path: Path, stat: os.stat_result) -> Mail:
    envelope_file = path.with_name(f"{path.stem}.envelope.json")
    envelope: list[str] = []
    if envelope_file.is_file():
        try:
            envelope = list(json.loads(envelope_file.read_text()).get("rcptTo") or [])
        except (ValueError, AttributeError):
            envelope = []
    return from_mime(
        f"outbox-{path.stem}",
        "outbox",
        datetime.fromtimestamp(stat.st_mtime, UTC),
        path.read_bytes(),
        envelope=envelope,
        gateway_id=path.stem,
    )
