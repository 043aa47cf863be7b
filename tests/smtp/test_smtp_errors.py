"""SMTP failures, through Delivery on real Azurite queues and its state table.

- Transient replies (432 4.3.2, 421, 451): retried once, delivered exactly once.
- Each permanent reply of the article's error table: poisoned after ONE attempt, state ``failed``
  with the hint an operator acts on (grant SMTP.SendAsApp, enable SMTP AUTH, grant Send As, fix
  the connector, ...).
- A connection cut after the message content: ambiguous (the server may have taken it), retried,
  at-least-once; a failure before DATA is not ambiguous.
- TLS: an untrusted certificate, a server without STARTTLS, TLS below 1.2: the token never leaves.
- The identity endpoint failing: TokenUnavailable, transient.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
import trustme
from azure.identity.aio import ManagedIdentityCredential
from smtp_helpers import SENDER, Pipeline, body, outbound, parse, send_failing

from mailgw.delivery import RetryPolicy
from mailgw.models import MessageStatus
from mailgw.settings import Settings
from mailgw.state import MessageRecord
from mailgw.store import StateStore
from mailgw.transports.smtp import SmtpTransport
from mailgw.transports.smtp_errors import SMTP_CODES, classify_smtp
from standins.identity import IdentityStandIn
from standins.smtp import Exchange, Reply, SmtpFault, SmtpStandIn

# --- the classification table ---------------------------------------------------------------------

#: (reply, transient, fragments the hint must contain): the article's table and Exchange's replies
TABLE = [
    pytest.param(Exchange.AUTH_UNSUCCESSFUL, False, ["SMTP.SendAsApp", "New-ServicePrincipal"]),
    pytest.param(
        Exchange.SMTP_AUTH_DISABLED,
        False,
        ["Set-TransportConfig", "Set-CASMailbox", "-SmtpClientAuthenticationDisabled $false"],
    ),
    pytest.param(Exchange.BASIC_AUTH_NOT_SUPPORTED, False, ["OAuth", "XOAUTH2"]),
    pytest.param(Exchange.SEND_AS_DENIED, False, ["Add-RecipientPermission", "SendAs"]),
    pytest.param(Exchange.NOT_AUTHENTICATED, False, ["587", "relay connector"]),
    pytest.param(Exchange.SUBMISSION_QUOTA_EXCEEDED, True, ["10,000", "window"]),
    pytest.param(Exchange.MESSAGE_RATE_EXCEEDED, True, ["30 messages", "window"]),
    pytest.param(Exchange.RELAY_ACCESS_DENIED, False, ["connector", "accepted domain"]),
    pytest.param(Exchange.MAILBOX_FULL, False, ["quota"]),
    pytest.param(Exchange.SENDER_THREAD_LIMIT, True, ["3"]),
    pytest.param(Exchange.TEMPORARY_SERVER_ERROR, True, ["retries"]),
    pytest.param(Exchange.UNAUTHENTICATED_ATTRIBUTION, True, ["retries"]),
]


@pytest.mark.parametrize(("reply", "transient", "hint"), TABLE)
def test_each_exchange_reply_is_classified_with_its_hint(
    reply: Reply, transient: bool, hint: list[str]
) -> None:
    error = classify_smtp(reply.code, reply.text)
    assert error.transient is transient
    assert error.code == f"smtp/{reply.code}-{reply.enhanced_code}"
    assert error.message == reply.text
    assert error.ambiguous is False  # a reply is an answer: the message was not taken
    for fragment in hint:
        assert fragment in error.hint, (fragment, error.hint)
    assert error.info().hint == error.hint


def test_permanent_hints_differ_by_cause() -> None:
    permanent = [p.values[0] for p in TABLE if p.values[1] is False]
    permanent.append(Exchange.MESSAGE_TOO_LARGE)
    hints = {classify_smtp(r.code, r.text).hint for r in permanent if isinstance(r, Reply)}
    assert len(hints) == len(permanent)
    assert set(SMTP_CODES) >= {"5.7.3", "5.7.139", "5.7.30", "5.7.60", "5.7.57", "5.7.64"}


def test_the_daily_recipient_limit_is_not_a_full_mailbox() -> None:
    """554 5.2.0 SubmissionQuotaExceededException is Exchange Online's recipient rate limit
    (10,000 recipients a day per mailbox): freeing space or shrinking the message, the advice
    for 554 5.2.2 mailbox full, does not help; waiting for the 24-hour window (or sending from
    another mailbox) does."""
    daily = classify_smtp(
        Exchange.SUBMISSION_QUOTA_EXCEEDED.code, Exchange.SUBMISSION_QUOTA_EXCEEDED.text
    )
    full = classify_smtp(Exchange.MAILBOX_FULL.code, Exchange.MAILBOX_FULL.text)
    assert "free space" in full.hint
    assert daily.hint != full.hint, daily.hint
    assert "10,000" in daily.hint


@pytest.mark.parametrize(
    "reply",
    [
        Exchange.SEND_AS_DENIED_STOREDRV,
        Reply(554, "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException", "data"),
    ],
)
def test_send_as_refused_by_the_store_is_not_a_sending_limit(reply: Reply) -> None:
    """Exchange also refuses send-as with 554 5.2.0 (SendAsDeniedException), the code of the
    sending limit: waiting 24 hours would change nothing, a Send As grant does. The exception's
    name, not the code, decides."""
    refused = classify_smtp(reply.code, reply.text)
    limit = classify_smtp(
        Exchange.SUBMISSION_QUOTA_EXCEEDED.code, Exchange.SUBMISSION_QUOTA_EXCEEDED.text
    )
    assert refused.code == limit.code == "smtp/554-5.2.0"
    assert refused.transient is False
    assert "Add-RecipientPermission" in refused.hint and "SendAs" in refused.hint
    assert "24-hour" not in refused.hint and "10,000" not in refused.hint
    assert (
        refused.hint
        == classify_smtp(Exchange.SEND_AS_DENIED.code, Exchange.SEND_AS_DENIED.text).hint
    )


def test_an_unknown_store_refusal_gets_no_borrowed_hint() -> None:
    other = classify_smtp(554, "5.2.0 STOREDRV.Submission.Exception:SomethingNewException")
    assert other.transient is False
    assert "replay" in other.hint
    assert "24-hour" not in other.hint and "Send As" not in other.hint


# --- through Delivery on Azurite ----------------------------------------------------------------


async def record_of(store: StateStore, message_id: str) -> MessageRecord:
    record = await store.get(message_id)
    assert record is not None, f"no state for {message_id}"
    return record


TRANSIENT = [
    pytest.param(Exchange.SENDER_THREAD_LIMIT, "smtp/432-4.3.2", id="432-4.3.2-data"),
    pytest.param(Exchange.TEMPORARY_SERVER_ERROR, "smtp/421-4.7.0", id="421-mail-closes"),
    pytest.param(
        Reply(421, "4.3.2 Service not available, closing transmission channel", "data"),
        "smtp/421-4.3.2",
        id="421-data-closes",
    ),
    pytest.param(Exchange.UNAUTHENTICATED_ATTRIBUTION, "smtp/451-4.4.4", id="451-rcpt"),
    pytest.param(
        Reply(451, "4.7.500 Server busy. Please try again later", "data"),
        "smtp/451-4.7.500",
        id="451-data",
    ),
]


@pytest.mark.parametrize(("reply", "code"), TRANSIENT)
async def test_a_transient_reply_is_retried_once_and_delivered_exactly_once(
    transport: SmtpTransport,
    smtp: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
    reply: Reply,
    code: str,
) -> None:
    smtp.fail_with(reply)
    pipeline = make_pipeline(transport)
    message_id = await pipeline.submit(body(subject="deferred"))

    first = await pipeline.step()
    assert first.outcome.action == "retry"
    error = first.outcome.error
    assert error is not None and error.code == code
    assert error.message.endswith(reply.text)
    record = await record_of(store, message_id)
    assert record.status is MessageStatus.retrying
    assert record.last_error == error
    assert record.ambiguous is False  # refused with a reply: certainly not sent
    assert smtp.received == []

    second = await pipeline.step()
    assert second.envelope.id == message_id
    assert second.envelope.attempt == 1
    assert second.envelope.ambiguous is False
    assert second.outcome.action == "sent"
    (received,) = smtp.received  # exactly once
    assert not received.dropped
    assert parse(received.data)["Subject"] == "deferred"
    record = await record_of(store, message_id)
    assert (record.status, record.attempts, record.ambiguous) == (MessageStatus.sent, 2, False)
    assert await pipeline.is_empty()
    assert [r.code for r in smtp.rejections] == [reply.code]


async def test_a_persistent_4xx_gives_up_after_max_attempts_with_the_hint(
    transport: SmtpTransport,
    smtp: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
) -> None:
    smtp.fail_with(Exchange.SENDER_THREAD_LIMIT, n=100)
    retry = RetryPolicy(max_attempts=3, base_seconds=0.001, cap_seconds=0.001)
    pipeline = make_pipeline(transport, retry=retry)
    message_id = await pipeline.submit(body())

    await pipeline.run()
    assert pipeline.actions == ["retry", "retry", "poisoned"]
    record = await record_of(store, message_id)
    assert record.status is MessageStatus.failed
    assert record.attempts == 3
    assert record.last_error is not None
    assert record.last_error.code == "smtp/432-4.3.2"
    assert "gave up after 3 attempts" in record.last_error.message
    assert "concurrent connections" in record.last_error.hint
    dead = await pipeline.poisoned()
    assert dead.id == message_id and dead.error == record.last_error
    assert smtp.received == []


#: the article's permanent replies as Exchange sends them, and what the hint must tell the operator
PERMANENT = [
    pytest.param(Exchange.AUTH_UNSUCCESSFUL, ["SMTP.SendAsApp"], id="535-5.7.3"),
    pytest.param(
        Exchange.SMTP_AUTH_DISABLED, ["Set-CASMailbox", "Set-TransportConfig"], id="535-5.7.139"
    ),
    pytest.param(Exchange.BASIC_AUTH_NOT_SUPPORTED, ["OAuth"], id="550-5.7.30"),
    pytest.param(Exchange.SEND_AS_DENIED, ["Add-RecipientPermission"], id="550-5.7.60"),
    pytest.param(
        Exchange.SEND_AS_DENIED_STOREDRV, ["Add-RecipientPermission"], id="554-5.2.0-send-as"
    ),
    pytest.param(Exchange.NOT_AUTHENTICATED, ["587"], id="530-5.7.57"),
    pytest.param(Exchange.MAILBOX_FULL, ["quota"], id="554-5.2.2"),
]


async def check_poisoned_once(
    pipeline: Pipeline, store: StateStore, message_id: str, code: str, hint: list[str]
) -> MessageRecord:
    await pipeline.run()
    assert pipeline.actions == ["poisoned"]  # ONE attempt, no pointless retries
    record = await record_of(store, message_id)
    assert record.status is MessageStatus.failed
    assert record.attempts == 1
    assert record.last_error is not None
    assert record.last_error.code == code
    for fragment in hint:
        assert fragment in record.last_error.hint, (fragment, record.last_error.hint)
    public = record.public(record.updated_at)
    assert public["status"] == "failed"
    assert public["lastError"]["hint"] == record.last_error.hint
    dead = await pipeline.poisoned()
    assert dead.id == message_id and dead.error == record.last_error
    assert await pipeline.is_empty()
    return record


@pytest.mark.parametrize(("reply", "hint"), PERMANENT)
async def test_a_permanent_reply_is_poisoned_after_one_attempt_with_its_hint(
    transport: SmtpTransport,
    smtp: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
    reply: Reply,
    hint: list[str],
) -> None:
    smtp.fail_with(reply, n=10)  # it would fail again: only one attempt may be made
    pipeline = make_pipeline(transport)
    message_id = await pipeline.submit(body(subject="refused"))

    await check_poisoned_once(
        pipeline, store, message_id, f"smtp/{reply.code}-{reply.enhanced_code}", hint
    )
    assert smtp.received == []
    assert [(r.stage, r.code) for r in smtp.rejections] == [(reply.stage, reply.code)]


async def test_a_token_for_the_wrong_resource_is_535_5_7_3(
    transport: SmtpTransport,
    smtp: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
) -> None:
    """Not injected: Exchange itself refuses the token (here, one whose audience it does not
    accept, as when the app lacks SMTP.SendAsApp for Office 365 Exchange Online)."""
    smtp.accepted_audiences = {"https://outlook.office.de"}
    pipeline = make_pipeline(transport)
    message_id = await pipeline.submit(body())

    await check_poisoned_once(pipeline, store, message_id, "smtp/535-5.7.3", ["SMTP.SendAsApp"])
    (attempt,) = smtp.auth_attempts
    assert not attempt.ok and "audience" in attempt.reason
    assert attempt.user == SENDER


async def test_relay_from_a_domain_the_connector_does_not_know_is_5_7_64(
    relay: SmtpTransport,
    relay_server: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
) -> None:
    pipeline = make_pipeline(relay)
    message_id = await pipeline.submit(body(**{"from": "noreply@fabrikam.com"}))

    record = await check_poisoned_once(
        pipeline, store, message_id, "smtp/550-5.7.64", ["connector"]
    )
    assert record.last_error is not None and "accepted domain" in record.last_error.hint
    assert relay_server.received == []
    (rejection,) = relay_server.rejections
    assert (rejection.stage, rejection.cause) == ("mail", "policy")


# --- ambiguity: the answer to the content was lost ------------------------------------------------


async def test_a_connection_cut_after_data_is_ambiguous_and_retried_at_least_once(
    transport: SmtpTransport,
    smtp: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp.drop_after_data()
    pipeline = make_pipeline(transport)
    message_id = await pipeline.submit(body(subject="maybe sent"))

    with caplog.at_level(logging.WARNING, logger="mailgw.delivery"):
        first = await pipeline.step()
    assert first.outcome.action == "retry"
    assert first.outcome.error is not None and first.outcome.error.code == "smtp/connection"
    (taken,) = smtp.received
    assert taken.dropped  # the server took it and the gateway cannot know
    assert "at-least-once" in caplog.text and message_id in caplog.text
    record = await record_of(store, message_id)
    assert (record.status, record.ambiguous) == (MessageStatus.retrying, True)

    second = await pipeline.step()
    assert second.envelope.ambiguous is True  # the retry knows it may be a duplicate
    assert second.outcome.action == "sent"
    # documented at-least-once: SMTP has no idempotency key, so the retry sends again; both
    # copies carry the same Message-ID, which receivers use to de-duplicate
    first_copy, second_copy = smtp.received
    assert not second_copy.dropped
    assert parse(first_copy.data)["Message-ID"] == parse(second_copy.data)["Message-ID"]
    assert parse(second_copy.data)["Message-ID"] == f"<{message_id}@contoso.com>"
    record = await record_of(store, message_id)
    assert (record.status, record.ambiguous, record.attempts) == (MessageStatus.sent, True, 2)
    assert record.public(record.updated_at)["ambiguous"] is True


@pytest.mark.parametrize("stage", ["auth", "mail", "rcpt"])
async def test_a_connection_cut_before_data_is_not_ambiguous(
    transport: SmtpTransport, smtp: SmtpStandIn, stage: str
) -> None:
    """Cut before the message content was sent: it cannot have been taken. Marking it ambiguous
    would tell the operator (GET shows ``ambiguous``) a duplicate is possible when it is not."""
    smtp.add_fault(SmtpFault(stage, drop=True))  # type: ignore[arg-type]
    error = await send_failing(transport, outbound())
    assert error.transient is True
    assert smtp.received == []
    assert error.ambiguous is False, f"{error.code}: {error.message} marked ambiguous"


# --- TLS ----------------------------------------------------------------------------------------


async def test_an_untrusted_certificate_is_permanent_and_the_token_never_leaves(
    smtp_settings: Callable[..., Settings],
    smtp: SmtpStandIn,
    identity: IdentityStandIn,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
) -> None:
    """Without MAILGW_SMTP_CA_FILE the stand-in's private CA is not trusted (the system store
    is): the handshake fails, nothing is authenticated or sent."""
    transport = SmtpTransport(smtp_settings(MAILGW_SMTP_CA_FILE=None))
    try:
        pipeline = make_pipeline(transport)
        message_id = await pipeline.submit(body())
        record = await check_poisoned_once(
            pipeline, store, message_id, "smtp/tls-certificate", ["MAILGW_SMTP_CA_FILE"]
        )
    finally:
        await transport.aclose()
    assert record.last_error is not None and "not trusted" in record.last_error.message
    assert smtp.auth_attempts == [] and smtp.received == []
    (connection,) = smtp.connections
    assert connection.tls is False and connection.tls_error is not None


async def test_a_server_without_starttls_is_refused_with_a_starttls_hint(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    """The article's "StartTLS is required" row: never AUTH or send in clear text, and tell the
    operator why (a retry cannot make the server offer STARTTLS)."""
    smtp.tls_context = None  # this server does not offer STARTTLS (nor, without TLS, AUTH)
    error = await send_failing(transport, outbound())
    assert smtp.auth_attempts == [] and smtp.received == []
    assert all(not c.tls for c in smtp.connections)
    assert "STARTTLS" in error.hint, error.hint
    assert error.transient is False, f"{error.code} is retried: {error.hint}"


@pytest.fixture
def tls11_only_context() -> ssl.SSLContext:
    """A server context that offers nothing newer than TLS 1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.warns(DeprecationWarning, match="TLSv1"):
        context.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.warns(DeprecationWarning, match="TLSv1_1"):
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_tls_below_1_2_is_refused_with_a_tls_hint(
    transport: SmtpTransport, smtp: SmtpStandIn, tls11_only_context: ssl.SSLContext
) -> None:
    smtp.tls_context = tls11_only_context
    error = await send_failing(transport, outbound())
    assert smtp.auth_attempts == [] and smtp.received == []
    (connection,) = smtp.connections
    assert connection.tls is False and connection.tls_version is None
    assert connection.tls_error is not None  # the handshake failed: no TLS 1.0/1.1 session
    assert "TLS 1.2" in error.hint, error.hint


# --- tokens ---------------------------------------------------------------------------------------


@pytest.fixture
async def no_retry_credential(
    identity: IdentityStandIn,
) -> AsyncIterator[ManagedIdentityCredential]:
    """azure-identity's own credential without its pipeline retries (they only add seconds)."""
    credential = ManagedIdentityCredential(retry_total=0)
    yield credential
    await credential.close()


async def test_identity_endpoint_failing_is_token_unavailable_and_transient(
    smtp_settings: Callable[..., Settings],
    smtp: SmtpStandIn,
    identity: IdentityStandIn,
    no_retry_credential: ManagedIdentityCredential,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
) -> None:
    identity.fail_next(500, n=1)
    transport = SmtpTransport(smtp_settings(), credential=no_retry_credential)
    try:
        pipeline = make_pipeline(transport)
        message_id = await pipeline.submit(body())
        first = await pipeline.step()
        assert first.outcome.action == "retry"
        error = first.outcome.error
        assert error is not None and error.code == "mailgw/token-unavailable"
        assert "MAILGW_CREDENTIAL" in error.hint and "AZURE_CLIENT_ID" in error.hint
        record = await record_of(store, message_id)
        assert (record.status, record.ambiguous) == (MessageStatus.retrying, False)
        assert smtp.auth_attempts == [] and smtp.received == []

        second = await pipeline.step()  # the endpoint recovered
        assert second.outcome.action == "sent"
    finally:
        await transport.aclose()
    assert len(smtp.received) == 1
    assert [r.status for r in identity.requests] == [500, 200]


async def test_identity_endpoint_unreachable_is_token_unavailable_not_a_crash(
    smtp_settings: Callable[..., Settings],
    smtp: SmtpStandIn,
    identity: IdentityStandIn,
) -> None:
    """The identity endpoint is a local sidecar on Functions; while it restarts, connections are
    refused. azure-identity then raises ServiceRequestError, not ClientAuthenticationError."""
    await identity.close()  # nothing listens on IDENTITY_ENDPOINT any more
    credential = ManagedIdentityCredential(retry_total=0)
    transport = SmtpTransport(smtp_settings(), credential=credential)
    try:
        error = await send_failing(transport, outbound())
    finally:
        await transport.aclose()
        await credential.close()
    assert (error.code, error.transient, error.ambiguous) == (
        "mailgw/token-unavailable",
        True,
        False,
    )
    assert smtp.received == []
