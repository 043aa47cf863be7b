"""The SMTP intake with real clients nobody here wrote: Debian's swaks and msmtp (installed by
``make smtp-tools``, which ``make test`` runs), and smtplib for a 25 MB message.

Each client verifies the intake's certificate against the test CA, authenticates, and is
answered ``250 2.0.0 Ok: queued as <id>``; delivery then writes exactly what it sent.
"""

from __future__ import annotations

import asyncio
import email.policy
import os
import re
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from intake_support import IntakeServer, in_thread, smtp_session

from mailgw.models import MessageStatus

QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})")


@pytest.fixture(autouse=True)
def real_clients() -> None:
    missing = [tool for tool in ("swaks", "msmtp") if shutil.which(tool) is None]
    if missing:  # make test installs them (make smtp-tools); never skipped silently
        pytest.fail(f"{', '.join(missing)} not installed: run `make smtp-tools`")


async def run(*command: str, stdin: bytes | None = None) -> tuple[int, str]:
    """A client process, awaited beside the server (its answer comes from this event loop)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(stdin), timeout=120)
    return process.returncode or 0, output.decode("utf-8", errors="replace")


def swaks(
    server: IntakeServer,
    *args: str,
    implicit: bool = False,
    user: str = "scanner",
    password: str | None = None,
) -> list[str]:
    port = server.tls_port if implicit else server.starttls_port
    return [
        "swaks",
        "--server",
        f"127.0.0.1:{port}",
        "--tlsc" if implicit else "--tls",
        "--tls-verify",
        "--tls-ca-path",
        str(server.ca_file),
        "--auth-user",
        user,
        "--auth-password",
        password or server.passwords.get(user, "x"),
        "--from",
        "scanner@contoso.com",
        "--to",
        "a@example.com",
        *args,
    ]


async def delivered(server: IntakeServer, output: str) -> bytes:
    """The message the output says was queued, delivered to the outbox: its bytes."""
    found = QUEUED.search(output)
    assert found, output
    assert await server.deliver_all() == ["sent"]
    record = await server.store.get(found.group(1))
    assert record is not None and record.status is MessageStatus.sent
    return (server.outbox / f"{found.group(1)}.eml").read_bytes()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_swaks_sends_through_the_intake(
    intake_server: IntakeServer, scanner: str, implicit: bool, mechanism: str
) -> None:
    code, output = await run(
        *swaks(
            intake_server,
            "--auth",
            mechanism,
            "--header",
            "Subject: swaks test",
            "--body",
            "Grüße from swaks ✓",
            implicit=implicit,
        )
    )
    assert code == 0, output
    data = await delivered(intake_server, output)
    assert b"Subject: swaks test" in data
    assert "Grüße from swaks ✓".encode() in data  # 8-bit body kept as sent


async def test_swaks_wrong_password_disallowed_sender_and_no_auth(
    intake_server: IntakeServer,
    scanner: str,
) -> None:
    code, output = await run(*swaks(intake_server, "--auth", "PLAIN", password="wrong"))
    assert code != 0 and "535 5.7.8" in output, output
    code, output = await run(
        *swaks(intake_server, "--auth", "PLAIN")[:-4],
        "--from",
        "boss@fabrikam.com",
        "--to",
        "a@example.com",
    )
    assert code != 0 and "550 5.7.1" in output, output
    port = str(intake_server.starttls_port)
    code, output = await run(
        "swaks",
        "--server",
        f"127.0.0.1:{port}",
        "--tls",
        "--from",
        "scanner@contoso.com",
        "--to",
        "a@example.com",
    )
    assert code != 0 and "530 5.7.0" in output, output
    assert await intake_server.deliver_all() == []


async def test_swaks_revoked_client_is_refused(intake_server: IntakeServer, scanner: str) -> None:
    await intake_server.clients.revoke("scanner")
    code, output = await run(*swaks(intake_server, "--auth", "LOGIN"))
    assert code != 0 and "535 5.7.8" in output, output


def msmtp(server: IntakeServer, tmp_path: Path, *, implicit: bool, auth: str) -> list[str]:
    secret = tmp_path / "password"
    secret.write_text(server.passwords["scanner"])
    return [
        "msmtp",
        "--debug",
        "--host=127.0.0.1",
        f"--port={server.tls_port if implicit else server.starttls_port}",
        "--tls=on",
        f"--tls-starttls={'off' if implicit else 'on'}",
        f"--tls-trust-file={server.ca_file}",
        f"--auth={auth}",
        "--user=scanner",
        f"--passwordeval=cat {secret}",
        "--from=scanner@contoso.com",
        "--",
        "a@example.com",
        "hidden@example.com",
    ]


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("auth", ["plain", "login"])
async def test_msmtp_sends_through_the_intake(
    intake_server: IntakeServer, scanner: str, tmp_path: Path, implicit: bool, auth: str
) -> None:
    message = (
        "From: Scanner <scanner@contoso.com>\r\nTo: a@example.com\r\nSubject: msmtp test\r\n"
        "Message-ID: <msmtp-1@contoso.com>\r\nDate: Mon, 07 Dec 2026 08:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nCafé über alles\r\n.a line with a dot\r\n"
    ).encode()
    code, output = await run(
        *msmtp(intake_server, tmp_path, implicit=implicit, auth=auth), stdin=message
    )
    assert code == 0, output
    assert await delivered(intake_server, output) == message


async def test_msmtp_is_told_storage_is_down_then_succeeds(
    intake_server: IntakeServer, scanner: str, tmp_path: Path
) -> None:
    from mailgw.errors import QueueUnavailable

    working = intake_server.handler.intake

    class Down:
        policy = working.policy

        async def submit_mime(self, *args: object, **kwargs: object) -> object:
            raise QueueUnavailable("the queue could not be written")

    intake_server.handler.intake = Down()  # type: ignore[assignment]
    message = (
        b"From: scanner@contoso.com\r\nTo: a@example.com\r\nSubject: x\r\n"
        b"Date: Mon, 07 Dec 2026 08:00:00 +0000\r\nMessage-ID: <retry@contoso.com>\r\n\r\nretry\r\n"
    )
    command = msmtp(intake_server, tmp_path, implicit=False, auth="plain")
    code, output = await run(*command, stdin=message)
    assert code != 0 and "451 4.3.0" in output, output
    intake_server.handler.intake = working
    code, output = await run(*command, stdin=message)
    assert code == 0, output
    assert (await delivered(intake_server, output)).endswith(message)


@pytest.mark.slow
async def test_a_25_mb_message(intake_server: IntakeServer, scanner: str) -> None:
    message = EmailMessage()
    message["From"] = "scanner@contoso.com"
    message["To"] = "a@example.com"
    message["Subject"] = "A large scan"
    message.set_content("See the attachment.\n")
    message.add_attachment(
        os.urandom(19 * 1024 * 1024), maintype="application", subtype="pdf", filename="scan.pdf"
    )
    data = message.as_bytes(policy=email.policy.SMTP)
    assert len(data) > 25_000_000

    def send() -> tuple[int, bytes]:
        with smtp_session(intake_server) as client:
            client.login("scanner", intake_server.passwords["scanner"])
            client.mail("scanner@contoso.com", [f"SIZE={len(data)}"])
            client.rcpt("a@example.com")
            return client.data(data)

    code, text = await in_thread(send)
    assert code == 250, text
    assert (await delivered(intake_server, f"{code} {text.decode()}")).endswith(data)
