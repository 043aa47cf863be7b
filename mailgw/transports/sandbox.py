"""Sandbox "transport": what a ``"sandbox": true`` message goes through instead of the real one.

A caller tests an integration against a production gateway without mailing anyone (SendGrid's
sandbox mode). Everything but the hand-over runs: validation, the sender policy, the state, and
the rendering, so a message the renderer would refuse fails here exactly as it would for real.
"""

from __future__ import annotations

from mailgw.transports.base import OutboundMessage, SendReceipt
from mailgw.transports.render import rendered_bytes


class SandboxTransport:
    name = "sandbox"

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if message.mime is not None:
            return await self.send_mime(message)
        data = rendered_bytes(message.id, message.request, include_bcc=True)
        return SendReceipt(self.name, f"sandbox: {len(data)} bytes rendered, not sent")

    async def send_mime(self, message: OutboundMessage) -> SendReceipt:
        assert message.mime is not None
        size = len(message.mime.data)
        return SendReceipt(self.name, f"sandbox: {size} bytes of MIME, not sent")

    async def probe(self, mailbox: str | None) -> str:
        return "sandbox messages are rendered, never sent"

    async def aclose(self) -> None:
        return None
