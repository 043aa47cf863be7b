"""The SMTP intake with Python's smtplib: every answer the issue names, and what is queued."""

from __future__ import annotations

import asyncio
import base64
import email.policy
import json
import smtplib
import ssl
import time
from email.message import EmailMessage

import pytest
from intake_support import IntakeServer, in_thread, smtp_session

from mailgw.intake import Intake
from mailgw.models import MessageStatus
from mailgw.queue import MailQueue
from support import DEAD_STORAGE, TEST_SEAL, depth


def scan(sender: str = "scanner@contoso.com", **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "a@example.com"
    message["Subject"] = "Scan 42"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("A scanned page.\n")
    return message.as_bytes(policy=email.policy.SMTP)  # CRLF, as on the wire


def queued_id(reply: tuple[int, bytes]) -> str:
    code, text = reply
    assert code == 250, reply
    prefix = b"2.0.0 Ok: queued as "
    assert text.startswith(prefix), text
    return text[len(prefix) :].decode()


def send(
    server: IntakeServer,
    user: str,
    data: bytes,
    *,
    implicit: bool = False,
    mechanism: str = "PLAIN",
    sender: str = "scanner@contoso.com",
    rcpt: tuple[str, ...] = ("a@example.com",),
) -> str:
    with smtp_session(server, implicit=implicit) as client:
        client.user, client.password = user, server.passwords[user]
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert code == 235
        code, _ = client.mail(sender)
        assert code == 250
        for address in rcpt:
            assert client.rcpt(address)[0] == 250
        return queued_id(client.data(data))


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_a_message_is_queued_under_the_gateways_id_and_delivered(
    intake_server: IntakeServer, scanner: str, implicit: bool, mechanism: str
) -> None:
    data = scan()
    message_id = await in_thread(
        send,
        intake_server,
        "scanner",
        data,
        implicit=implicit,
        mechanism=mechanism,
        rcpt=("a@example.com", "hidden@example.com"),
    )
    await intake_server.intake.drain()  # without a Message-ID its record follows the enqueue
    record = await intake_server.store.get(message_id)
    assert record is not None and record.source == "smtp"
    assert await intake_server.deliver_all() == ["sent"]
    record = await intake_server.store.get(message_id)
    assert record is not None and record.status is MessageStatus.sent
    written = (intake_server.outbox / f"{message_id}.eml").read_bytes()
    # the message is kept as received, a Message-ID added
    assert written.endswith(data)
    assert written.startswith(f"Message-ID: <{message_id}@contoso.com>\r\n".encode())


async def test_the_same_message_id_again_is_the_same_message(
    intake_server: IntakeServer, scanner: str
) -> None:
    data = scan(Message_ID="<scan-42@contoso.com>")
    first = await in_thread(send, intake_server, "scanner", data)
    again = await in_thread(send, intake_server, "scanner", data)
    assert again == first
    assert await depth(intake_server.queue) == 1


async def test_no_auth_is_530(intake_server: IntakeServer) -> None:
    def scenario() -> tuple[int, bytes]:
        with smtp_session(intake_server) as client:
            return client.mail("scanner@contoso.com")

    assert await in_thread(scenario) == (530, b"5.7.0 Authentication required")


async def test_auth_before_starttls_is_refused(intake_server: IntakeServer) -> None:
    def scenario() -> None:
        with smtplib.SMTP("127.0.0.1", intake_server.starttls_port, timeout=30) as client:
            client.ehlo()
            assert not client.has_extn("auth")  # not even offered in clear text
            code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a\0b").decode())
            assert (code, text[:5]) == (530, b"5.7.0")
            assert client.mail("scanner@contoso.com")[0] == 530

    await in_thread(scenario)


async def test_wrong_password_is_535_and_slowed_down(
    intake_server: IntakeServer, scanner: str
) -> None:
    def attempt() -> tuple[tuple[int, bytes | str], float]:
        with smtp_session(intake_server) as client:
            started = time.monotonic()
            client.user, client.password = "scanner", "not the password"
            try:
                client.auth("PLAIN", client.auth_plain)  # one mechanism, one failure
            except smtplib.SMTPAuthenticationError as error:
                return (error.smtp_code, error.smtp_error), time.monotonic() - started
        raise AssertionError("a wrong password was accepted")

    first, first_took = await in_thread(attempt)
    assert first == (535, b"5.7.8 Authentication credentials invalid")
    _, second_took = await in_thread(attempt)
    _, third_took = await in_thread(attempt)
    # each failure is answered later than the one before: 0.2 s, 0.4 s, 0.8 s (and argon2)
    assert second_took >= 0.2 and third_took >= 0.4 and third_took > first_took
    assert intake_server.handler.throttle.delay("scanner", "127.0.0.1") == pytest.approx(0.8)


async def test_unknown_user_and_revoked_client_are_535(intake_server: IntakeServer) -> None:
    password = await intake_server.add_client("scanner")
    await intake_server.clients.revoke("scanner")

    def login(user: str, secret: str) -> int:
        with smtp_session(intake_server) as client:
            try:
                client.login(user, secret)
            except smtplib.SMTPAuthenticationError as error:
                return error.smtp_code
        return 235

    assert await in_thread(login, "scanner", password) == 535
    assert await in_thread(login, "nobody", password) == 535


async def test_an_ip_outside_the_clients_allowlist_cannot_log_in(
    intake_server: IntakeServer,
) -> None:
    await intake_server.add_client("office", networks=["10.0.0.0/8"])
    await intake_server.add_client("local", networks=["127.0.0.0/8"])

    def login(user: str) -> int:
        with smtp_session(intake_server) as client:
            try:
                return client.login(user, intake_server.passwords[user])[0]
            except smtplib.SMTPAuthenticationError as error:
                return error.smtp_code

    assert await in_thread(login, "office") == 535
    assert await in_thread(login, "local") == 235


async def test_a_sender_not_allowed_is_550_571(intake_server: IntakeServer, scanner: str) -> None:
    def scenario() -> list[tuple[int, bytes]]:
        with smtp_session(intake_server) as client:
            client.login("scanner", intake_server.passwords["scanner"])
            answers = [client.mail("boss@contoso.com")]  # in the gateway's policy, not its own
            client.rset()
            answers.append(client.mail("x@fabrikam.com"))  # in neither
            client.rset()
            client.mail("scanner@contoso.com")
            client.rcpt("a@example.com")
            answers.append(client.data(scan(sender="boss@contoso.com")))  # the From header
            return answers

    answers = await in_thread(scenario)
    assert [code for code, _ in answers] == [550, 550, 550]
    assert all(text.startswith(b"5.7.1 Sender not allowed") for _, text in answers)
    assert await depth(intake_server.queue) == 0


async def test_too_large_is_552_534_at_mail_and_at_data(intake_server: IntakeServer) -> None:
    await intake_server.add_client("scanner", max_message_bytes=10_000)

    def scenario() -> list[tuple[int, bytes]]:
        with smtp_session(intake_server) as client:
            assert "size" in client.esmtp_features
            client.login("scanner", intake_server.passwords["scanner"])
            answers = [client.mail("scanner@contoso.com", ["SIZE=20000"])]
            client.rset()
            client.mail("scanner@contoso.com")
            client.rcpt("a@example.com")
            big = scan() + (b"x" * 70 + b"\r\n") * 300
            answers.append(client.data(big))
            return answers

    answers = await in_thread(scenario)
    assert [code for code, _ in answers] == [552, 552]
    assert all(text.startswith(b"5.3.4") for _, text in answers)
    assert await depth(intake_server.queue) == 0


async def test_storage_down_is_451_430_and_the_client_retries(
    intake_server: IntakeServer,
    scanner: str,
) -> None:
    working = intake_server.handler.intake
    dead = MailQueue.__new__(MailQueue)
    from mailgw.settings import Settings
    from mailgw.storage import StorageConnection

    dead.__init__(  # type: ignore[misc]
        StorageConnection.from_settings("S", {"S": DEAD_STORAGE}),
        intake_server.settings.queue,
        intake_server.settings.payload_container,
        TEST_SEAL,
    )
    intake_server.handler.intake = Intake(intake_server.settings, dead, intake_server.store)
    data = scan(Message_ID="<retry-1@contoso.com>")

    def attempt() -> tuple[int, bytes]:
        with smtp_session(intake_server) as client:
            client.login("scanner", intake_server.passwords["scanner"])
            client.mail("scanner@contoso.com")
            client.rcpt("a@example.com")
            return client.data(data)

    try:
        code, text = await in_thread(attempt)
    finally:
        await dead.close()
    assert (code, text[:5]) == (451, b"4.3.0")
    intake_server.handler.intake = working
    message_id = queued_id(await in_thread(attempt))
    assert await intake_server.deliver_all() == ["sent"]
    assert (intake_server.outbox / f"{message_id}.eml").exists()
    assert isinstance(intake_server.settings, Settings)


async def test_over_the_clients_rate_is_451(intake_server: IntakeServer) -> None:
    await intake_server.add_client("scanner", per_minute=2)

    def scenario() -> list[int]:
        codes = []
        with smtp_session(intake_server) as client:
            client.login("scanner", intake_server.passwords["scanner"])
            for _ in range(3):
                codes.append(client.mail("scanner@contoso.com")[0])
                client.rset()
        return codes

    assert await in_thread(scenario) == [250, 250, 451]


async def test_smtputf8_and_8bitmime(intake_server: IntakeServer, scanner: str) -> None:
    data = (
        "From: scanner@contoso.com\r\nTo: josé@example.com\r\nSubject: Grüße\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Café ✓\r\n"
    ).encode()

    def scenario() -> str:
        with smtp_session(intake_server) as client:
            assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
            client.login("scanner", intake_server.passwords["scanner"])
            client.mail("scanner@contoso.com", ["SMTPUTF8", "BODY=8BITMIME"])
            assert client.rcpt("josé@example.com")[0] == 250
            return queued_id(client.data(data))

    message_id = await in_thread(scenario)
    assert await intake_server.deliver_all() == ["sent"]
    written = (intake_server.outbox / f"{message_id}.eml").read_bytes()
    assert written.endswith(data)
    envelope = json.loads((intake_server.outbox / f"{message_id}.envelope.json").read_text())
    assert envelope["rcptTo"] == ["josé@example.com"] and envelope["smtpUtf8"] is True


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_below_1_2_is_refused(intake_server: IntakeServer) -> None:
    context = intake_server.client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1

    def connect() -> None:
        smtplib.SMTP_SSL("127.0.0.1", intake_server.tls_port, context=context, timeout=10)

    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        await in_thread(connect)


async def test_shutdown_answers_421_to_open_sessions(
    intake_server: IntakeServer, scanner: str
) -> None:
    client = await in_thread(smtp_session, intake_server)
    await in_thread(client.login, "scanner", intake_server.passwords["scanner"])
    await intake_server.server.stop(grace=5)
    code, text = await in_thread(client.getreply)
    assert code == 421 and text.startswith(b"4.3.2"), (code, text)
    client.close()


def refusal(
    server: IntakeServer, data: bytes, rcpt: tuple[str, ...] = ("a@example.com",)
) -> tuple[int, bytes]:
    """What DATA answers to ``data`` from the logged-in client "scanner"."""
    with smtp_session(server) as client:
        client.login("scanner", server.passwords["scanner"])
        assert client.mail("scanner@contoso.com")[0] == 250
        for address in rcpt:
            assert client.rcpt(address)[0] == 250
        try:
            return client.data(data)
        except smtplib.SMTPDataError as error:
            text = error.smtp_error
            return error.smtp_code, text if isinstance(text, bytes) else text.encode()


SPOOFS = {
    # one parser reads scanner@, another (and the recipient's client) the CEO
    "display name that is an address": b"From: scanner@contoso.com <ceo@contoso.com>\r\n",
    "two angle addresses": b"From: <scanner@contoso.com> <ceo@contoso.com>\r\n",
    # "From :" is obsolete syntax Exchange reads; Python's parser takes it for the body
    "a second From with a space before the colon": (
        b"From: scanner@contoso.com\r\nFrom : ceo@contoso.com\r\n"
    ),
    "Resent-From": b"From: scanner@contoso.com\r\nResent-From: ceo@contoso.com\r\n",
}


@pytest.mark.parametrize("header", SPOOFS.values(), ids=SPOOFS.keys())
async def test_a_from_that_parsers_read_differently_is_refused(
    intake_server: IntakeServer, scanner: str, header: bytes
) -> None:
    data = header + b"To: a@example.com\r\nSubject: x\r\n\r\nhello\r\n"
    code, text = await in_thread(refusal, intake_server, data)
    assert code == 550 and text.startswith(b"5."), (code, text)
    assert await depth(intake_server.queue) == 0


async def test_header_recipients_outside_the_envelope_are_refused(
    intake_server: IntakeServer,
    scanner: str,
) -> None:
    """Graph's MIME send delivers to the headers' recipients: they must all be envelope ones.
    (A Bcc header is removed at submission: test_a_bcc_header_is_not_delivered.)"""
    for name in ("To", "Cc"):
        extra = f"{name}: someone@evil.example\r\n".encode() if name != "To" else b""
        to = (
            b"To: a@example.com, someone@evil.example\r\n"
            if name == "To"
            else b"To: a@example.com\r\n"
        )
        data = b"From: scanner@contoso.com\r\n" + to + extra + b"Subject: x\r\n\r\nhi\r\n"
        code, text = await in_thread(refusal, intake_server, data)
        assert (code, text[:5]) == (550, b"5.6.0"), (name, code, text)
        assert b"not envelope recipients" in text
    assert await depth(intake_server.queue) == 0


async def test_a_bcc_header_is_not_delivered(intake_server: IntakeServer, scanner: str) -> None:
    data = scan(Bcc="hidden@example.com")
    message_id = await in_thread(
        send, intake_server, "scanner", data, rcpt=("a@example.com", "hidden@example.com")
    )
    assert await intake_server.deliver_all() == ["sent"]
    written = (intake_server.outbox / f"{message_id}.eml").read_bytes()
    assert b"hidden@example.com" not in written.split(b"\r\n\r\n", 1)[0]
    envelope = json.loads((intake_server.outbox / f"{message_id}.envelope.json").read_text())
    assert "hidden@example.com" in envelope["rcptTo"]


async def test_another_message_reusing_a_message_id_is_refused_not_dropped(
    intake_server: IntakeServer,
    scanner: str,
) -> None:
    first = scan(Message_ID="<scan-7@contoso.com>")
    await in_thread(send, intake_server, "scanner", first)
    other = first.replace(b"Scan 42", b"Scan 43")
    code, text = await in_thread(refusal, intake_server, other)
    assert (code, text[:5]) == (554, b"5.6.0") and b"Message-ID" in text
    assert await depth(intake_server.queue) == 1


async def test_a_client_revoked_during_a_session_sends_nothing_more(
    intake_server: IntakeServer,
    scanner: str,
) -> None:
    def session() -> tuple[int, bytes]:
        with smtp_session(intake_server) as client:
            client.login("scanner", intake_server.passwords["scanner"])
            assert client.mail("scanner@contoso.com")[0] == 250
            assert client.rcpt("a@example.com")[0] == 250
            queued_id(client.data(scan()))
            revoked = asyncio.run_coroutine_threadsafe(
                intake_server.clients.revoke("scanner"), loop
            )
            revoked.result(timeout=30)
            return client.mail("scanner@contoso.com")

    loop = asyncio.get_running_loop()
    code, text = await in_thread(session)
    assert (code, text[:5]) == (535, b"5.7.8"), (code, text)
    assert await depth(intake_server.queue) == 1


async def test_a_strangers_failed_guesses_do_not_slow_the_client(
    intake_server: IntakeServer,
    scanner: str,
) -> None:
    throttle = intake_server.handler.throttle
    for _ in range(7):
        throttle.failed("scanner", "203.0.113.9")  # guesses from elsewhere: 0.2 s doubling
    slowed = throttle.delay("scanner", "127.0.0.1")
    assert slowed >= 12

    def login() -> float:
        with smtp_session(intake_server) as client:
            started = time.monotonic()
            client.login("scanner", intake_server.passwords["scanner"])
            return time.monotonic() - started

    assert await in_thread(login) < slowed  # answered without the failures' wait
