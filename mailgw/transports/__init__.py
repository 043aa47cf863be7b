"""Transports, imported lazily: only the configured one is loaded (msgraph-sdk is large)."""

from __future__ import annotations

from mailgw.settings import Settings
from mailgw.transports.base import OutboundMessage, SendReceipt, Transport

__all__ = ["OutboundMessage", "SendReceipt", "Transport", "create_transport"]


def create_transport(settings: Settings) -> Transport:
    if settings.transport == "graph":
        from mailgw.transports.graph import GraphTransport

        return GraphTransport(settings)
    if settings.transport in ("smtp", "relay"):
        from mailgw.transports.smtp import SmtpTransport

        return SmtpTransport(settings, relay=settings.transport == "relay")
    from mailgw.transports.outbox import OutboxTransport

    return OutboxTransport(settings.outbox_dir)
