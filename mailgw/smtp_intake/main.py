"""``mailgw-smtp``: both listeners with the gateway's settings, until SIGTERM or Ctrl-C.

On SIGTERM (a container stopping) it stops listening, lets the messages being queued finish,
answers ``421`` to every open session, and exits: a client keeps any message not yet answered
with 250 and retries it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Mapping

from mailgw.services import Services
from mailgw.settings import Settings, SettingsError
from mailgw.smtp_intake.clients import ClientStore
from mailgw.smtp_intake.server import (
    IntakeHandler,
    Listener,
    SmtpIntakeServer,
    server_tls_context,
)

log = logging.getLogger("mailgw.smtp_intake")


def listeners(settings: Settings) -> list[Listener]:
    config = settings.smtp_intake
    found = []
    if config.port:
        found.append(Listener(config.host, config.port, implicit_tls=False))
    if config.tls_port:
        found.append(Listener(config.host, config.tls_port, implicit_tls=True))
    return found


def build(settings: Settings) -> tuple[SmtpIntakeServer, Services, ClientStore]:
    """The server wired from the settings (the same intake, queue and state as the HTTP API)."""
    config = settings.smtp_intake
    if not config.cert_file:
        raise SettingsError(
            "MAILGW_SMTP_INTAKE_CERT_FILE is required: the PEM certificate (and key, or "
            "MAILGW_SMTP_INTAKE_KEY_FILE) the listeners present; SMTP AUTH needs TLS"
        )
    if not listeners(settings):
        raise SettingsError("MAILGW_SMTP_INTAKE_PORT and _TLS_PORT are both 0: nothing to serve")
    services = Services(settings)
    clients = ClientStore(settings.storage(), config.clients_table)
    handler = IntakeHandler(services.intake, clients, config)
    tls = server_tls_context(config.cert_file, config.key_file)
    server = SmtpIntakeServer(handler, tls, listeners(settings), hostname=config.hostname)
    return server, services, clients


async def serve(settings: Settings) -> None:
    server, services, clients = build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    addresses = await server.start()
    for listener, (host, port) in zip(server.listeners, addresses, strict=True):
        kind = "implicit TLS" if listener.implicit_tls else "STARTTLS required before AUTH"
        print(f"mailgw-smtp: listening on {host}:{port} ({kind})", flush=True)
    try:
        await stop.wait()
    finally:
        print("mailgw-smtp: shutting down (421 to open sessions)", flush=True)
        await server.stop()
        await services.intake.drain()
        await clients.close()
        await services.events.close()  # accepted went to the events sinks: their clients too
        await services.queue.close()
        await services.store.close()


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: one line per command
    try:
        settings = Settings.from_env(env)
    except SettingsError as error:
        print(f"mailgw-smtp: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except SettingsError as error:
        print(f"mailgw-smtp: {error}", file=sys.stderr)
        return 2
    return 0
