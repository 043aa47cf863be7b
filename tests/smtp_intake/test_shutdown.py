"""``mailgw-smtp`` stops cleanly: on SIGTERM (a container stopping) it closes every client it
opened, the events sink's included, and exits 0 without aiohttp's "Unclosed client session"
on its way out (which ``make run`` would otherwise print at every Ctrl-C).

The real entry point as a process, on the test session's Azurite, with outcome events on."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from make_run_support import clean_environment

from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.smtp_intake.clients import ClientStore
from support import TEST_SEAL, depth, free_port, wait_until


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "app@contoso.com"
    message["To"] = "someone@example.com"
    message["Subject"] = "before the container stops"
    message.set_content("hello")
    return message


async def _add_client(settings: Settings) -> str:
    clients = ClientStore(settings.storage(), settings.smtp_intake.clients_table)
    try:
        _, password = await clients.add("app", ["app@contoso.com"])
    finally:
        await clients.close()
    return password


async def _events_in(settings: Settings) -> int:
    """How many events the events queue holds (none yet: the first event creates it)."""
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    try:
        return await depth(queue, settings.events_queue)
    finally:
        await queue.close()


def test_sigterm_closes_every_client_and_exits_zero(azurite: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    suffix = uuid.uuid4().hex[:12]
    port = free_port()
    env = clean_environment(
        AzureWebJobsStorage=azurite.connection_string,
        MAILGW_QUEUE=f"smtp-stop-{suffix}",
        MAILGW_PAYLOAD_CONTAINER=f"payloads-{suffix}",
        MAILGW_STATE_TABLE=f"state{suffix}",
        MAILGW_EVENTS_QUEUE=f"events-{suffix}",
        MAILGW_SMTP_INTAKE_CLIENTS_TABLE=f"clients{suffix}",
        MAILGW_SMTP_INTAKE_HOST="127.0.0.1",
        MAILGW_SMTP_INTAKE_PORT=str(port),
        MAILGW_SMTP_INTAKE_TLS_PORT="0",
        MAILGW_SMTP_INTAKE_CERT_FILE=str(pem),
        MAILGW_ALLOWED_SENDERS="*@contoso.com",
    )
    settings = Settings.from_env(env)
    password = asyncio.run(_add_client(settings))
    entry_point = Path(sys.executable).parent / "mailgw-smtp"
    process = subprocess.Popen(
        [str(entry_point)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # until it listens (or exits, which fails below)
            output.append(line)
            if "listening on" in line:
                break
        assert "listening on" in "".join(output), "".join(output)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.starttls(context=context)
            client.login("app", password)
            client.send_message(_message())
        # accepted (published once the 250 is given): the events sink's client is now open
        wait_until(lambda: asyncio.run(_events_in(settings)) == 1, what="the accepted event")
        process.terminate()
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    printed = "".join(output)
    assert process.returncode == 0, printed
    assert "shutting down" in printed
    assert "Unclosed" not in printed, printed
