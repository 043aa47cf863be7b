"""The SMTP intake served in-process on 127.0.0.1 (free ports), on Azurite, with a certificate
from a test CA (trustme); clients are real (smtplib, swaks, msmtp).

``intake_server``: the running server (``.starttls_port``, ``.tls_port``, ``.ca_file``,
``.add_client(...)``, ``.deliver_all()`` to run delivery into the outbox). ``scanner``: the
client most tests send as, registered on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from intake_support import IntakeServer, settings_for

from mailgw.intake import Intake
from mailgw.queue import MailQueue
from mailgw.smtp_intake.clients import ClientStore
from mailgw.smtp_intake.limits import LoginThrottle
from mailgw.smtp_intake.server import IntakeHandler, Listener, SmtpIntakeServer
from mailgw.store import StateStore
from support import TEST_SEAL


@pytest.fixture
async def intake_server(azurite: Any, tmp_path: Path) -> AsyncIterator[IntakeServer]:
    settings = settings_for(azurite, tmp_path)
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    store = StateStore(settings.storage(), settings.state_table)
    clients = ClientStore(settings.storage(), settings.smtp_intake.clients_table)
    intake = Intake(settings, queue, store)
    handler = IntakeHandler(
        intake, clients, settings.smtp_intake, throttle=LoginThrottle(base_seconds=0.2)
    )
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    from mailgw.smtp_intake.server import server_tls_context

    server = SmtpIntakeServer(
        handler,
        server_tls_context(str(pem)),
        [Listener("127.0.0.1", 0, implicit_tls=False), Listener("127.0.0.1", 0, implicit_tls=True)],
        hostname="mailgw.test",
    )
    await server.start()
    running = IntakeServer(
        settings,
        server,
        handler,
        intake,
        queue,
        store,
        clients,
        ca,
        ca_file,
        Path(settings.outbox_dir),
    )
    try:
        yield running
    finally:
        await server.stop(grace=5)
        await intake.drain()
        await clients.close()
        await queue.close()
        await store.close()


@pytest.fixture
async def scanner(intake_server: IntakeServer) -> str:
    """The client most tests send as, registered on ``intake_server`` as ``scanner`` (allowed to
    send as scanner@contoso.com): its password, also in ``intake_server.passwords``."""
    return await intake_server.add_client("scanner")
