"""The SMTP stand-in, proved with the real aiosmtplib client (and stdlib smtplib in a thread).

What the gateway's SMTP transports will rely on: STARTTLS against a private CA, TLS 1.2+ only,
XOAUTH2 with tokens from the identity stand-in, byte-exact recording, connection reuse and the
per-mailbox connection limit, relay attribution, and Exchange's replies reaching the client as
``SMTPResponseException`` with the right code and text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import smtplib
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from azure.identity.aio import ManagedIdentityCredential
from standin_fixtures import relay_server as relay
from standin_fixtures import smtp as submission

from standins import poll_until_async
from standins.identity import GRAPH_RESOURCE, IdentityStandIn, issue_token
from standins.smtp import (
    CANNED_REPLIES,
    OUTLOOK_RESOURCE,
    Exchange,
    RemoteSmtpStandIn,
    Reply,
    SmtpStandIn,
    xoauth2_initial_response,
)

UPN = "noreply@contoso.com"
OTHER = "alerts@contoso.com"
RCPT = "someone@example.com"
TESTS_DIR = Path(__file__).resolve().parent.parent
MESSAGE = b"From: noreply@contoso.com\r\nTo: someone@example.com\r\nSubject: hi\r\n\r\nbody\r\n"

# the stand-ins as the gateway's SMTP tests use them, served here as ``submission`` and ``relay``
__all__ = ["relay", "submission"]


def token_for(
    resource: str = OUTLOOK_RESOURCE, *, lifetime: int = 3600, client_id: str = "gateway-app"
) -> str:
    """A token as the identity stand-in issues it (same default signing key)."""
    return issue_token("app", client_id, resource, int(time.time()) + lifetime, 1, tenant="t1")


def client(server: SmtpStandIn, **options: Any) -> aiosmtplib.SMTP:
    """What the gateway's transport does: STARTTLS on the submission port, trusting the CA."""
    settings: dict[str, Any] = {
        "hostname": server.host,
        "port": server.port,
        "start_tls": True,
        "cert_bundle": server.ca_file,
        "local_hostname": "gateway.test",
        "timeout": 10,
    }
    settings.update(options)
    return aiosmtplib.SMTP(**settings)


async def connected(server: SmtpStandIn, **options: Any) -> aiosmtplib.SMTP:
    """:func:`client`, connected (``connect()`` also runs STARTTLS unless ``start_tls=False``,
    and AUTH when given a ``username``)."""
    smtp = client(server, **options)
    await smtp.connect()
    return smtp


@asynccontextmanager
async def authed(
    server: SmtpStandIn, user: str = UPN, token: str | None = None
) -> AsyncIterator[aiosmtplib.SMTP]:
    smtp = await connected(server)
    try:
        await smtp.auth_xoauth2(user, token or token_for())
        yield smtp
    finally:
        smtp.close()


# --- TLS --------------------------------------------------------------------------------------
async def test_starttls_verifies_with_the_ca_file_and_fails_without_it(
    submission: SmtpStandIn,
) -> None:
    smtp = await connected(submission)
    assert smtp.get_transport_info("sslcontext") is not None
    await smtp.ehlo()  # aiosmtplib forgets the pre-TLS EHLO and sends the next one lazily
    assert smtp.supports_extension("auth") and smtp.server_auth_methods == ["login", "xoauth2"]
    smtp.close()

    for host in ("localhost",):  # the certificate names 127.0.0.1 and localhost
        named = await connected(submission, hostname=host)
        named.close()

    untrusting = client(submission, cert_bundle=None)
    with pytest.raises(ssl.SSLCertVerificationError):
        await untrusting.connect()
    await poll_until_async(lambda: not submission.open_connections, what="connections closed")
    assert [c.tls for c in submission.connections] == [True, True, False]


async def test_tls_below_1_2_is_refused_and_1_2_accepted(submission: SmtpStandIn) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(submission.ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1 at all
    with pytest.raises((SMTPServerDisconnected, ssl.SSLError)):
        await client(submission, tls_context=old, cert_bundle=None).connect()
    refused = await poll_until_async(
        lambda: submission.connections[0].tls_error, what="the server's TLS error"
    )
    assert refused and "UNSUPPORTED_PROTOCOL" in refused  # the server, not the client, said no

    tls12 = submission.client_tls_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    async with authed(submission) as smtp:
        await smtp.sendmail(UPN, [RCPT], MESSAGE)
    smtp = await connected(submission, tls_context=tls12, cert_bundle=None)
    smtp.close()
    versions = [c.tls_version for c in submission.connections]
    assert versions == [None, "TLSv1.3", "TLSv1.2"]


async def test_ehlo_advertises_what_smtp_office365_com_does(submission: SmtpStandIn) -> None:
    smtp = await connected(submission)
    await smtp.ehlo()
    assert smtp.esmtp_extensions["size"] == "157286400"  # 150 MiB
    assert smtp.esmtp_extensions["auth"] == "LOGIN XOAUTH2"
    assert {"8bitmime", "smtputf8", "enhancedstatuscodes"} <= set(smtp.esmtp_extensions)
    smtp.close()


async def test_oversize_mail_is_refused_with_552_5_3_4() -> None:
    async with SmtpStandIn(mode="submission", max_message_size=1000) as small:
        big = MESSAGE + b"x" * 1000 + b"\r\n"
        async with authed(small) as smtp:
            assert smtp.esmtp_extensions["size"] == "1000"
            with pytest.raises(SMTPSenderRefused) as announced:  # MAIL FROM ... SIZE=n
                await smtp.sendmail(UPN, [RCPT], big)
            assert (announced.value.code, announced.value.message) == (
                552,
                "5.3.4 Message size exceeds fixed maximum message size",
            )
            await smtp.rset()
            await smtp.mail(UPN)  # no SIZE: found while reading DATA
            await smtp.rcpt(RCPT)
            with pytest.raises(SMTPDataError) as read:
                await smtp.data(big)
            assert (read.value.code, read.value.message) == (
                552,
                "5.3.4 Message size exceeds fixed maximum message size",
            )
            await smtp.sendmail(UPN, [RCPT], MESSAGE)  # the connection is still usable
        assert [r.data for r in small.received] == [MESSAGE]


async def test_auth_and_mail_before_starttls_are_refused(submission: SmtpStandIn) -> None:
    smtp = await connected(submission, start_tls=False)
    await smtp.ehlo()
    assert smtp.supports_extension("starttls")
    assert not smtp.supports_extension("auth")  # AUTH is only advertised inside TLS
    blob = xoauth2_initial_response(UPN, token_for()).encode()
    response = await smtp.execute_command(b"AUTH", b"XOAUTH2", blob)
    assert (response.code, response.message) == (530, "5.7.0 Must issue a STARTTLS command first")
    with pytest.raises(SMTPSenderRefused) as refused:
        await smtp.mail(UPN)
    assert refused.value.code == 530
    await smtp.quit()
    assert submission.auth_attempts == []


async def test_mail_before_auth_is_5_7_57(submission: SmtpStandIn) -> None:
    smtp = await connected(submission)
    with pytest.raises(SMTPSenderRefused) as refused:
        await smtp.sendmail(UPN, [RCPT], MESSAGE)
    assert (refused.value.code, refused.value.message) == (
        530,
        "5.7.57 Client not authenticated to send mail",
    )
    smtp.close()


# --- XOAUTH2 ----------------------------------------------------------------------------------
async def test_xoauth2_with_a_managed_identity_token_from_the_identity_stand_in(
    mi_env: IdentityStandIn, submission: SmtpStandIn
) -> None:
    async with ManagedIdentityCredential() as credential:

        async def outlook_token() -> str:
            return str((await credential.get_token(f"{OUTLOOK_RESOURCE}/.default")).token)

        # EHLO, STARTTLS, EHLO, AUTH XOAUTH2 <initial response>
        smtp = await connected(submission, username=UPN, oauth_token_generator=outlook_token)
        _, reply = await smtp.sendmail(UPN, [RCPT], MESSAGE)
        await smtp.quit()

    assert reply.startswith("2.6.0 ") and reply.endswith("Queued mail for delivery")
    [attempt] = submission.auth_attempts
    assert attempt.ok and attempt.user == UPN
    assert attempt.client_id == mi_env.tokens_for(OUTLOOK_RESOURCE)[0].client_id
    [message] = submission.received
    assert message.auth_user == UPN and message.tls and message.tls_version == "TLSv1.3"


async def test_xoauth2_without_initial_response(submission: SmtpStandIn) -> None:
    smtp = await connected(submission)
    await smtp.ehlo()  # raw commands: EHLO inside TLS first, as aiosmtplib's helpers do
    challenge = await smtp.execute_command(b"AUTH", b"XOAUTH2")
    assert (challenge.code, challenge.message) == (334, "")
    blob = xoauth2_initial_response(OTHER, token_for()).encode()
    done = await smtp.execute_command(blob)
    assert (done.code, done.message) == (235, "2.7.0 Authentication successful")
    await smtp.sendmail(OTHER, [RCPT], MESSAGE)
    await smtp.quit()
    assert submission.received[0].auth_user == OTHER

    aborted = await connected(submission)
    await aborted.ehlo()
    await aborted.execute_command(b"AUTH", b"XOAUTH2")
    assert (await aborted.execute_command(b"*")).code == 501
    aborted.close()


async def test_a_password_is_refused_and_only_login_and_xoauth2_are_offered(
    submission: SmtpStandIn,
) -> None:
    smtp = await connected(submission)
    with pytest.raises(SMTPAuthenticationError) as refused:  # aiosmtplib picks LOGIN
        await smtp.login(UPN, "a password")  # prompted for both, then refused
    assert (refused.value.code, refused.value.message) == (
        535,
        "5.7.139 Authentication unsuccessful, basic authentication is disabled.",
    )
    [attempt] = submission.auth_attempts
    assert (attempt.mechanism, attempt.ok, attempt.reason) == ("LOGIN", False, "basic auth")
    plain = base64.b64encode(f"\0{UPN}\0pw".encode())
    assert (await smtp.execute_command(b"AUTH", b"PLAIN", plain)).code == 504
    smtp.close()


def _tampered() -> str:
    token = token_for()
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


@pytest.mark.parametrize(
    ("user", "token", "reason"),
    [
        (UPN, "not-a-token", "not well formed"),
        (UPN, token_for(lifetime=-10), "expired"),
        (UPN, token_for(GRAPH_RESOURCE), "audience"),
        (UPN, _tampered(), "Signature"),
        ("intruder@fabrikam.com", token_for(), "not a mailbox"),
    ],
    ids=["garbage", "expired", "wrong-audience", "tampered", "user-not-allowed"],
)
async def test_bad_credentials_are_535_5_7_3(user: str, token: str, reason: str) -> None:
    async with SmtpStandIn(allowed_users=[UPN, OTHER]) as server:
        smtp = await connected(server)
        with pytest.raises(SMTPAuthenticationError) as failed:
            await smtp.auth_xoauth2(user, token)
        reply = Exchange.AUTH_UNSUCCESSFUL
        assert (failed.value.code, failed.value.message) == (reply.code, reply.text)
        with pytest.raises(SMTPSenderRefused):  # still not authenticated
            await smtp.mail(user)
        smtp.close()
        [attempt] = server.auth_attempts
        assert not attempt.ok and reason in attempt.reason


async def test_malformed_xoauth2_blob_is_535(submission: SmtpStandIn) -> None:
    smtp = await connected(submission)
    await smtp.ehlo()
    for blob in (b"!!not-base64!!", base64.b64encode(b"user=x\x01auth=Basic abc\x01\x01")):
        response = await smtp.execute_command(b"AUTH", b"XOAUTH2", blob)
        assert (response.code, response.message) == (535, "5.7.3 Authentication unsuccessful")
    smtp.close()


async def test_a_token_as_long_as_a_real_entra_token_fits_the_auth_line(
    submission: SmtpStandIn,
) -> None:
    long_client_id = "x" * 2500  # Entra access tokens are 1.5-3 KB
    async with authed(submission, token=token_for(client_id=long_client_id)) as smtp:
        await smtp.sendmail(UPN, [RCPT], MESSAGE)
    assert submission.auth_attempts[0].client_id == long_client_id


# --- recording --------------------------------------------------------------------------------
async def test_message_data_is_recorded_byte_exact(submission: SmtpStandIn) -> None:
    data = (
        b"From: noreply@contoso.com\r\nTo: someone@example.com\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <m1@gateway.test>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b".a line that starts with a dot\r\n..two dots\r\n.\r\n"
        b"caf\xc3\xa9 \xe2\x82\xac 8-bit\r\n" + b"x" * 998 + b"\r\n\r\n\ttrailing tab\r\n"
    )
    async with authed(submission) as smtp:
        errors, reply = await smtp.sendmail(UPN, [RCPT, "b@example.com"], data)
    assert errors == {}
    assert reply.startswith("2.6.0 <m1@gateway.test> [InternalId=")
    [message] = submission.received
    assert message.data == data
    assert message.mail_from == UPN and message.rcpt_tos == (RCPT, "b@example.com")
    assert message.message()["Subject"] == "café"
    assert f"SIZE={len(data)}" in message.mail_options


async def test_several_messages_over_one_connection_are_one_connection(
    submission: SmtpStandIn,
) -> None:
    async with authed(submission) as smtp:
        for n in range(5):
            await smtp.sendmail(UPN, [RCPT], MESSAGE + f"{n}\r\n".encode())
        await smtp.quit()
    assert submission.connections_opened == 1
    assert {m.connection_id for m in submission.received} == {submission.connections[0].id}
    assert [m.data[-3:] for m in submission.received] == [f"{n}\r\n".encode() for n in range(5)]
    await poll_until_async(lambda: not submission.open_connections, what="the connection closed")
    assert submission.connections[0].messages == 5
    assert submission.max_concurrent_by_user == {UPN: 1}


async def test_a_fourth_concurrent_connection_of_one_mailbox_gets_432_4_3_2(
    submission: SmtpStandIn,
) -> None:
    clients = [client(submission) for _ in range(4)]
    for smtp in clients:  # authenticate in a known order: the 4th is the one over the limit
        await smtp.connect()
        await smtp.auth_xoauth2(UPN, token_for())
    for smtp in clients[:3]:
        await smtp.sendmail(UPN, [RCPT], MESSAGE)
    with pytest.raises(SMTPDataError) as limited:
        await clients[3].sendmail(UPN, [RCPT], MESSAGE)
    assert (limited.value.code, limited.value.message) == (
        432,
        "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
    )
    assert submission.max_concurrent_by_user[UPN] == 4
    async with authed(submission, user=OTHER) as other:  # another mailbox is not affected
        await other.sendmail(OTHER, [RCPT], MESSAGE)

    await clients[0].quit()  # one connection fewer: the 4th may now send
    await poll_until_async(lambda: len(submission.open_connections) == 3, what="one closed")
    await clients[3].sendmail(UPN, [RCPT], MESSAGE)
    for smtp in clients[1:]:
        await smtp.quit()
    assert len(submission.received_by(UPN)) == 4
    assert [(r.cause, r.code) for r in submission.rejections] == [("limit", 432)]


async def test_the_connection_limit_can_answer_at_auth_instead() -> None:
    async with SmtpStandIn(max_connections_per_user=1, connection_limit_stage="auth") as server:
        async with authed(server) as first:
            second = await connected(server)
            with pytest.raises(SMTPAuthenticationError) as limited:
                await second.auth_xoauth2(UPN, token_for())
            assert limited.value.code == 432
            second.close()
            await first.sendmail(UPN, [RCPT], MESSAGE)
        assert server.max_concurrent_by_user == {UPN: 1}


# --- relay ------------------------------------------------------------------------------------
async def test_relay_mode_offers_no_auth_and_checks_the_sender_domain(relay: SmtpStandIn) -> None:
    smtp = await connected(relay)
    assert smtp.get_transport_info("sslcontext") is not None
    await smtp.ehlo()
    assert not smtp.supports_extension("auth") and not smtp.supports_extension("starttls")
    auth = await smtp.execute_command(b"AUTH", b"XOAUTH2", b"eA==")
    assert (auth.code, auth.message) == (504, "5.7.4 Unrecognized authentication type")

    await smtp.sendmail("app@Contoso.com", [RCPT], MESSAGE)
    with pytest.raises(SMTPSenderRefused) as denied:
        await smtp.sendmail("app@fabrikam.com", [RCPT], MESSAGE)
    assert (denied.value.code, denied.value.message) == (
        550,
        "5.7.64 TenantAttribution; Relay Access Denied",
    )
    await smtp.quit()
    [message] = relay.received
    assert message.auth_user is None and message.tls and message.mail_from == "app@Contoso.com"
    assert [(r.cause, r.mail_from) for r in relay.rejections] == [("policy", "app@fabrikam.com")]


async def test_relay_mode_requires_starttls(relay: SmtpStandIn) -> None:
    smtp = await connected(relay, start_tls=False)
    with pytest.raises(SMTPSenderRefused) as refused:
        await smtp.sendmail("app@contoso.com", [RCPT], MESSAGE)
    assert refused.value.code == 530
    smtp.close()


# --- faults -----------------------------------------------------------------------------------
async def _attempt(server: SmtpStandIn, reply: Reply) -> tuple[SMTPResponseException, bool]:
    """Run the client call that meets ``reply`` at its stage; the error and whether the
    connection is still up afterwards."""
    smtp = await connected(server)
    try:
        if reply.stage == "auth":
            with pytest.raises(SMTPAuthenticationError) as failed:
                await smtp.auth_xoauth2(UPN, token_for())
            return failed.value, smtp.is_connected
        await smtp.auth_xoauth2(UPN, token_for())
        if reply.stage == "rcpt":
            await smtp.mail(UPN)
            with pytest.raises(SMTPRecipientRefused) as refused:
                await smtp.rcpt(RCPT)
            return refused.value, smtp.is_connected
        expected = SMTPSenderRefused if reply.stage == "mail" else SMTPDataError
        with pytest.raises(expected) as other:
            await smtp.sendmail(UPN, [RCPT], MESSAGE)
        return other.value, smtp.is_connected
    finally:
        smtp.close()


@pytest.mark.parametrize("name", sorted(CANNED_REPLIES))
async def test_each_canned_exchange_reply_reaches_the_client(
    name: str, submission: SmtpStandIn
) -> None:
    reply = CANNED_REPLIES[name]
    submission.fail_with(reply)
    error, still_connected = await _attempt(submission, reply)
    assert isinstance(error, SMTPResponseException)
    assert (error.code, error.message) == (reply.code, reply.text)
    assert error.message.split()[0] == reply.enhanced_code  # the enhanced status code
    assert still_connected is (reply.code != 421)  # 421 closes the connection
    assert submission.received == [] and submission.faults == []
    [rejection] = submission.rejections
    assert (rejection.stage, rejection.code, rejection.cause) == (reply.stage, reply.code, "fault")


async def test_faults_are_fifo_counted_and_filtered_by_user_and_sender(
    submission: SmtpStandIn,
) -> None:
    submission.fail_next(
        "mail",
        451,
        "4.7.500 Server busy. Please try again later",
        n=2,
        mail_from="shared@contoso.com",
    )
    submission.fail_with(Exchange.SEND_AS_DENIED, user=OTHER)
    submission.fail_with(Exchange.MAILBOX_FULL)
    async with authed(submission) as smtp:
        outcomes = []
        for sender in ("shared@contoso.com", UPN, "shared@contoso.com", "shared@contoso.com"):
            try:
                await smtp.sendmail(sender, [RCPT], MESSAGE)
                outcomes.append("ok")
            except SMTPResponseException as exc:
                outcomes.append(str(exc.code))
    # the 451 hits the shared sender twice; MAILBOX_FULL (any user) hits the first message
    # that reaches DATA; SEND_AS_DENIED waits for OTHER
    assert outcomes == ["451", "554", "451", "ok"]
    assert [f.user for f in submission.faults] == [OTHER]
    async with authed(submission, user=OTHER) as smtp:
        with pytest.raises(SMTPDataError) as denied:
            await smtp.sendmail(OTHER, [RCPT], MESSAGE)
        assert denied.value.code == 550
        await smtp.sendmail(OTHER, [RCPT], MESSAGE)
    assert submission.faults == []
    submission.fail_next("rcpt", 550, "5.1.10 RESOLVER.ADR.RecipientNotFound; not found", n=5)
    submission.clear_faults()
    async with authed(submission) as smtp:
        await smtp.sendmail(UPN, [RCPT], MESSAGE)


async def test_drop_after_data_the_client_sees_a_disconnect_the_server_has_the_message(
    submission: SmtpStandIn,
) -> None:
    submission.drop_after_data()
    async with authed(submission) as smtp:
        with pytest.raises(SMTPServerDisconnected):
            await smtp.sendmail(UPN, [RCPT], MESSAGE)
        assert not smtp.is_connected
    [message] = submission.received
    assert message.dropped and message.reply is None and message.data == MESSAGE
    async with authed(submission) as smtp:  # the next connection is served normally
        await smtp.sendmail(UPN, [RCPT], MESSAGE)
    assert [m.dropped for m in submission.received] == [True, False]
    assert submission.connections_opened == 2


async def test_send_as_policy_is_checked_at_end_of_data() -> None:
    async with SmtpStandIn(send_as={UPN: ["shared@contoso.com"]}) as server:
        async with authed(server) as smtp:
            await smtp.sendmail(UPN, [RCPT], MESSAGE)
            await smtp.sendmail("Shared@contoso.com", [RCPT], MESSAGE)
            with pytest.raises(SMTPDataError) as denied:
                await smtp.sendmail("ceo@contoso.com", [RCPT], MESSAGE)
        assert (denied.value.code, denied.value.message) == (
            Exchange.SEND_AS_DENIED.code,
            Exchange.SEND_AS_DENIED.text,
        )
        assert len(server.received) == 2


# --- other modes of running -------------------------------------------------------------------
def test_in_a_thread_with_stdlib_smtplib_and_the_admin_app() -> None:
    """The seed article's smtplib recipe, against the stand-in running in a thread."""
    with SmtpStandIn() as server:
        remote = RemoteSmtpStandIn(server.admin_url)
        remote.fail_with("SEND_AS_DENIED", mailFrom="ceo@contoso.com")
        with smtplib.SMTP(server.host, server.port, local_hostname="gateway.test") as smtp:
            smtp.starttls(context=server.client_tls_context())
            smtp.ehlo()
            code, text = smtp.docmd("AUTH", "XOAUTH2 " + xoauth2_initial_response(UPN, token_for()))
            assert (code, text) == (235, b"2.7.0 Authentication successful")
            smtp.sendmail(UPN, [RCPT], MESSAGE)
            with pytest.raises(smtplib.SMTPDataError) as denied:
                smtp.sendmail("ceo@contoso.com", [RCPT], MESSAGE)
            assert denied.value.smtp_code == 550
        [message] = remote.wait_received(1)
        assert message["data"] == MESSAGE and message["authUser"] == UPN
        stats = remote.stats()
        assert stats["connectionsOpened"] == 1 and stats["maxConcurrentByUser"] == {UPN: 1}
        assert remote.rejections()[0]["cause"] == "fault"
        remote.reset()
        assert server.received == [] and remote.received() == []


def test_as_a_process_with_ready_line_and_remote_admin() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "standins.smtp",
            "--mode",
            "relay",
            "--accepted-domain",
            "contoso.com",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), line
        info = json.loads(line.removeprefix("READY "))
        assert set(info) >= {"host", "port", "caFile", "adminUrl"} and info["mode"] == "relay"
        assert info["env"] == {
            "MAILGW_TRANSPORT": "relay",
            "MAILGW_RELAY_HOST": info["host"],
            "MAILGW_RELAY_PORT": str(info["port"]),
            "MAILGW_SMTP_CA_FILE": info["caFile"],
        }
        remote = RemoteSmtpStandIn(info["adminUrl"])
        remote.add_faults({"reply": "MAILBOX_FULL"})

        async def send() -> list[int]:
            codes = []
            for _ in range(2):
                smtp = aiosmtplib.SMTP(
                    hostname=info["host"],
                    port=info["port"],
                    start_tls=True,
                    cert_bundle=info["caFile"],
                    local_hostname="gateway.test",
                    timeout=10,
                )
                async with smtp:
                    try:
                        await smtp.sendmail("app@contoso.com", [RCPT], MESSAGE)
                        codes.append(250)
                    except SMTPResponseException as exc:
                        codes.append(exc.code)
            return codes

        assert asyncio.run(send()) == [554, 250]
        [message] = remote.wait_received(1)
        assert message["data"] == MESSAGE and message["tls"] and message["authUser"] is None
        assert remote.stats()["connectionsOpened"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0  # SIGTERM is a clean stop ...
    assert not Path(info["caFile"]).exists()  # ... that removes the throw-away CA
