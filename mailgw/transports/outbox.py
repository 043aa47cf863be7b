"""Outbox transport: writes each message as ``<id>.eml`` for local development and tests.

Writing is atomic (temporary file, then rename) and keyed by the message id, so a redelivered
message overwrites its own file instead of producing a second one. The SMTP envelope (Bcc included,
which never appears in the headers) goes beside it as ``<id>.envelope.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.render import envelope_recipients, rendered_bytes


class OutboxTransport:
    name = "outbox"

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if message.mime is not None:
            return await self.send_mime(message)
        data = rendered_bytes(message.id, message.request)
        envelope = {
            "id": message.id,
            "mailFrom": message.request.sender.address,
            "rcptTo": envelope_recipients(message.request),
            "saveToSentItems": message.request.save_to_sent_items,
        }
        path = await asyncio.to_thread(self._write, message.id, data, envelope)
        return SendReceipt(self.name, str(path))

    async def send_mime(self, message: OutboundMessage) -> SendReceipt:
        """A raw MIME message (SMTP intake): written byte for byte as submitted."""
        assert message.mime is not None
        mime = message.mime
        envelope = {
            "id": message.id,
            "mailFrom": mime.mail_from,
            "rcptTo": list(mime.rcpt_to),
            "smtpUtf8": mime.utf8,
        }
        path = await asyncio.to_thread(self._write, message.id, mime.data, envelope)
        return SendReceipt(self.name, str(path))

    def _write(self, message_id: str, data: bytes, envelope: dict[str, object]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.directory / f"{message_id}.envelope.json", json.dumps(envelope).encode())
        target = self.directory / f"{message_id}.eml"
        _atomic_write(target, data)
        return target

    async def probe(self, mailbox: str | None) -> str:
        await asyncio.to_thread(self._probe)
        return f"writes .eml files to {self.directory.resolve()}"

    def _probe(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".probe.")
        os.close(fd)
        Path(tmp).unlink()

    async def aclose(self) -> None:
        return None


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
