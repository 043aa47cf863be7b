"""Helpers of the SMTP intake tests: the running server's handle, an smtplib session."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from mailgw.delivery import Delivery
from mailgw.intake import Intake
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.smtp_intake.clients import ClientStore
from mailgw.smtp_intake.server import IntakeHandler, SmtpIntakeServer
from mailgw.store import StateStore
from mailgw.transports.outbox import OutboxTransport
from support import pull


@dataclass
class IntakeServer:
    settings: Settings
    server: SmtpIntakeServer
    handler: IntakeHandler
    intake: Intake
    queue: MailQueue
    store: StateStore
    clients: ClientStore
    ca: trustme.CA
    ca_file: Path
    outbox: Path
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def starttls_port(self) -> int:
        return self.server.addresses[0][1]

    @property
    def tls_port(self) -> int:
        return self.server.addresses[1][1]

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    async def add_client(self, name: str, *senders: str, **options: Any) -> str:
        _, password = await self.clients.add(
            name, list(senders) or [f"{name}@contoso.com"], **options
        )
        self.passwords[name] = password
        return password

    async def deliver_all(self) -> list[str]:
        """Run delivery over every queued message (into the outbox); their outcomes."""
        delivery = Delivery(self.settings, self.queue, OutboxTransport(self.outbox), self.store)
        await self.intake.drain()
        actions: list[str] = []
        while (message := await pull(self.queue)) is not None:
            outcome = await delivery.handle(message.content, queue_message_id=message.id)
            actions.append(outcome.action)
        return actions


def settings_for(azurite: Any, tmp_path: Path, **extra: str) -> Settings:
    suffix = uuid.uuid4().hex[:12]
    return Settings.from_env(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "MAILGW_QUEUE": f"smtp-in-{suffix}",
            "MAILGW_PAYLOAD_CONTAINER": f"payloads-{suffix}",
            "MAILGW_STATE_TABLE": f"state{suffix}",
            "MAILGW_SMTP_INTAKE_CLIENTS_TABLE": f"clients{suffix}",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_TRANSPORT": "outbox",
            "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
            **extra,
        }
    )


def smtp_session(server: IntakeServer, *, implicit: bool = False) -> smtplib.SMTP:
    """An smtplib session, TLS established (STARTTLS, or implicit), not yet authenticated."""
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            "127.0.0.1", server.tls_port, context=server.client_context(), timeout=30
        )
    else:
        client = smtplib.SMTP("127.0.0.1", server.starttls_port, timeout=30)
        client.starttls(context=server.client_context())
    client.ehlo()
    return client


async def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """smtplib blocks: run it beside the server's event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)
