"""Messages accepted per second by the SMTP intake, against a bare aiosmtpd server that keeps
messages in memory, over 1 and over 20 concurrent connections, measured in the same run.

Both servers listen on 127.0.0.1 with the same certificate, STARTTLS and AUTH PLAIN; the bare one
accepts any password and appends each message to a list, the intake checks the client (argon2,
once per connection), the sender policy and the MIME, and answers 250 only after the durable
enqueue to Azurite. Clients are aiosmtplib sessions, each logging in once and sending
``--messages`` messages in turn (each with its own Message-ID, as most clients send). The
sides alternate round by round. Goal: the intake at least 0.5 of the bare server's rate.

A third side shows what the storage itself allows on this machine: the same bare server, but each
message put on a queue (one request, the same SDK client the intake uses) before its 250. No
intake that answers only after a durable enqueue can beat it; the intake's rate is also printed
as a fraction of it.

    .venv/bin/python bench/smtp_intake.py [--messages 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from azure.storage.queue.aio import QueueClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from mailgw.services import Services  # noqa: E402
from mailgw.settings import Settings  # noqa: E402
from mailgw.smtp_intake.clients import ClientStore  # noqa: E402
from mailgw.smtp_intake.devcert import ensure_dev_certificate  # noqa: E402
from mailgw.smtp_intake.server import (  # noqa: E402
    IntakeHandler,
    Listener,
    SmtpIntakeServer,
    server_tls_context,
)
from mailgw.storage import queue_client  # noqa: E402

CONCURRENCY = (1, 20)


def message(number: int) -> bytes:
    return (
        "From: Scanner <scanner@contoso.com>\r\nTo: a@example.com\r\n"
        f"Subject: Scan {number}\r\nMessage-ID: <{uuid.uuid4().hex}@contoso.com>\r\n"
        "Date: Mon, 07 Dec 2026 08:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n"
        + "A scanned page, as text, one line of several.\r\n"
        * 20
    ).encode()


class MemoryHandler:
    """The baseline: every message kept in a list."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 2.0.0 Ok: kept in memory"


class EnqueueHandler(MemoryHandler):
    """The ceiling: one queue put per message before the 250, nothing else."""

    def __init__(self, queue: QueueClient) -> None:
        super().__init__()
        self.queue = queue

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # the client's encode policy Base64-encodes it, as it does the intake's envelopes
        await self.queue.send_message((envelope.original_content or b"").decode("utf-8", "replace"))
        self.messages.append(b"")
        return "250 2.0.0 Ok: queued"


def _accept_any(*args: Any) -> AuthResult:
    return AuthResult(success=True)


async def bare_server(
    tls: ssl.SSLContext, handler: MemoryHandler | None = None
) -> tuple[asyncio.Server, MemoryHandler]:
    handler = handler or MemoryHandler()
    loop = asyncio.get_running_loop()

    def make() -> SMTP:
        return SMTP(
            handler,
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            authenticator=_accept_any,
            loop=loop,
        )

    return await loop.create_server(make, "127.0.0.1", 0), handler


async def send_over(port: int, user: str, password: str, count: int, connections: int) -> float:
    """Messages per second: ``connections`` sessions sending ``count`` messages in all."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench's own self-signed certificate

    async def session(share: int) -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=True, tls_context=context, timeout=60
        )
        await client.connect()
        await client.login(user, password)
        for n in range(share):
            await client.sendmail("scanner@contoso.com", ["a@example.com"], message(n))
        await client.quit()

    shares = [
        count // connections + (1 if i < count % connections else 0) for i in range(connections)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(session(share) for share in shares if share))
    return count / (time.perf_counter() - started)


async def measure(connection_string: str, count: int, rounds: int) -> dict[str, list[float]]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": connection_string,
            "MAILGW_QUEUE": f"bench-smtp-{suffix}",
            "MAILGW_STATE_TABLE": f"bench{suffix}",
            "MAILGW_SMTP_INTAKE_CLIENTS_TABLE": f"clients{suffix}",
            "MAILGW_SMTP_INTAKE_PER_MINUTE": "1000000",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_TRANSPORT": "outbox",
        }
    )
    services = Services(settings)
    clients = ClientStore(settings.storage(), settings.smtp_intake.clients_table)
    _, password = await clients.add("bench", ["*@contoso.com"])
    with tempfile.TemporaryDirectory() as scratch:
        cert = ensure_dev_certificate(Path(scratch) / "bench.pem")
        tls = server_tls_context(str(cert))
        handler = IntakeHandler(services.intake, clients, settings.smtp_intake)
        intake = SmtpIntakeServer(handler, tls, [Listener("127.0.0.1", 0, implicit_tls=False)])
        ((_, intake_port),) = await intake.start()
        bare, kept = await bare_server(tls)
        bare_port = int(bare.sockets[0].getsockname()[1])
        ceiling_queue = queue_client(settings.storage(), f"bench-ceiling-{suffix}")
        await ceiling_queue.create_queue()
        ceiling, _ = await bare_server(tls, EnqueueHandler(ceiling_queue))
        ceiling_port = int(ceiling.sockets[0].getsockname()[1])
        # warm-up: the queue and tables exist, connection pools are open
        await send_over(intake_port, "bench", password, 20, 2)
        await send_over(bare_port, "any", "any", 20, 2)
        await send_over(ceiling_port, "any", "any", 20, 2)
        rates: dict[str, list[float]] = {}
        for round_number in range(rounds):
            for connections in CONCURRENCY:
                sides = [
                    ("bare", bare_port, "any", "any"),
                    ("intake", intake_port, "bench", password),
                    ("ceiling", ceiling_port, "any", "any"),
                ]
                if round_number % 2:
                    sides.reverse()
                for name, port, user, secret in sides:
                    rate = await send_over(port, user, secret, count, connections)
                    rates.setdefault(f"{name}/{connections}", []).append(rate)
                    await services.intake.drain()
        await intake.stop(grace=10)
        for server in (bare, ceiling):
            server.close()
            await server.wait_closed()
        await ceiling_queue.close()
    assert kept.messages, "the baseline kept nothing"
    await services.intake.drain()
    await clients.close()
    await services.queue.close()
    await services.store.close()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="per side, round and concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with Azurite(project_dir=ROOT) as azurite:
        rates = asyncio.run(measure(azurite.connection_string, args.messages, args.rounds))
    print(f"messages per side, round and concurrency: {args.messages}; rounds: {args.rounds}")
    for connections in CONCURRENCY:
        bare = statistics.median(rates[f"bare/{connections}"])
        intake = statistics.median(rates[f"intake/{connections}"])
        ceiling = statistics.median(rates[f"ceiling/{connections}"])
        print(
            f"{connections:>2} connection(s): bare aiosmtpd {bare:8.1f} msg/s, "
            f"SMTP intake {intake:8.1f} msg/s, ratio {intake / bare:.2f} (goal >= 0.5)"
        )
        print(
            f"{'':>16}bare aiosmtpd + one queue put {ceiling:8.1f} msg/s "
            f"(ratio {ceiling / bare:.2f}: the most any durable intake can reach here); "
            f"the intake reaches {intake / ceiling:.2f} of it"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
