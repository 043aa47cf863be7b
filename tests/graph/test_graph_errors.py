"""Graph failures: the classification table, Retry-After, and what Delivery does with each outcome
on real queues (permanent: poisoned after one request; throttled: waits exactly as told without
using an attempt; 5xx: backs off and sends once; timeouts: transient)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from graph_helpers import Pipeline, body, outbound, unsent_refusal

from mailgw.delivery import RetryPolicy
from mailgw.settings import Settings
from mailgw.transports.errors import DeliveryError, parse_retry_after
from mailgw.transports.graph import GraphTransport
from mailgw.transports.graph_errors import GRAPH_CODES, classify_graph
from standins.graph import GraphStandIn

# --- classify_graph: the design's table ---------------------------------------------------------

PERMANENT = [
    # (status, code, a fragment of the hint an operator can act on)
    (403, "ErrorAccessDenied", "Mail.Send"),
    (403, "ErrorSendAsDenied", "Send As"),
    (404, "MailboxNotEnabledForRESTAPI", "license"),
    (404, "ErrorInvalidUser", "does not exist"),
    (400, "ErrorInvalidRecipients", "recipient"),
    (400, "ErrorMessageSizeExceeded", "MAILGW_GRAPH_MODE=draft"),  # Exchange: Bad Request
    (403, "ErrorQuotaExceeded", "full"),
    # a block needs an admin, not a wait: it must not be paced like a quota
    (403, "ErrorMessageSubmissionBlocked", "Restricted entities"),
]


@pytest.mark.parametrize(("status", "code", "hint"), PERMANENT)
@pytest.mark.parametrize("may_have_sent", [True, False])
def test_permanent_codes_have_a_specific_hint(
    status: int, code: str, hint: str, may_have_sent: bool
) -> None:
    error = classify_graph(status, code, "Graph said no", may_have_sent=may_have_sent)
    assert (error.code, error.transient, error.ambiguous, error.throttled) == (
        f"graph/{code}",
        False,
        False,
        False,
    )
    assert hint in error.hint
    assert error.retry_after is None
    assert error.message == "Graph said no"
    assert error.info().hint == error.hint


def test_access_denied_names_the_permission_the_request_needs() -> None:
    """Draft mode's own requests need Mail.ReadWrite: a 403 there is not about Mail.Send."""
    sending = classify_graph(403, "ErrorAccessDenied", "Access is denied.")
    drafting = classify_graph(
        403, "ErrorAccessDenied", "Access is denied.", permission="Mail.ReadWrite"
    )
    assert "Mail.Send" in sending.hint and "Mail.ReadWrite" not in sending.hint
    assert "Mail.ReadWrite" in drafting.hint and "Mail.Send application" not in drafting.hint
    assert "Test-ServicePrincipalAuthorization" in drafting.hint
    unnamed = classify_graph(403, None, "Forbidden", permission="Mail.ReadWrite")
    assert (unnamed.transient, unnamed.hint) == (False, drafting.hint)


def test_permanent_hints_differ_by_cause() -> None:
    hints = {code: classify_graph(status, code, "").hint for status, code, _ in PERMANENT}
    # access, send-as, licence, unknown mailbox, recipients, size, quota, a sending block: each
    # cause its own action
    assert len(set(hints.values())) == len(PERMANENT)


def test_codes_are_matched_case_insensitively() -> None:
    assert (
        classify_graph(403, "errorsendasdenied", "").hint
        == classify_graph(403, "ErrorSendAsDenied", "").hint
    )
    assert not classify_graph(404, "MAILBOXNOTENABLEDFORRESTAPI", "").transient


@pytest.mark.parametrize("may_have_sent", [True, False])
def test_429_is_throttling_with_its_retry_after(may_have_sent: bool) -> None:
    error = classify_graph(
        429, "ApplicationThrottled", "slow down", retry_after=7.0, may_have_sent=may_have_sent
    )
    assert (error.transient, error.throttled, error.retry_after) == (True, True, 7.0)
    assert error.ambiguous is False  # a throttled request was refused, not processed
    assert "Retry-After" in error.hint
    assert error.code == "graph/ApplicationThrottled"
    assert classify_graph(429, None, "").code == "graph/http-429"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_5xx_is_transient_and_ambiguous_only_when_the_request_may_have_sent(status: int) -> None:
    sent = classify_graph(status, None, "boom", retry_after=3.0, may_have_sent=True)
    assert (sent.transient, sent.ambiguous, sent.throttled) == (True, True, False)
    assert sent.retry_after == 3.0
    assert "may already have been sent" in sent.hint
    safe = classify_graph(status, None, "boom", may_have_sent=False)
    assert (safe.transient, safe.ambiguous) == (True, False)
    assert "may already have been sent" not in safe.hint
    assert safe.code == f"graph/http-{status}"


def test_503_is_never_ambiguous() -> None:
    error = classify_graph(503, "graph/ServiceUnavailable", "", retry_after=2.0, may_have_sent=True)
    assert (error.transient, error.ambiguous, error.retry_after) == (True, False, 2.0)


@pytest.mark.parametrize("code", [None, "InvalidAuthenticationToken"])
def test_401_is_transient_with_an_identity_hint(code: str | None) -> None:
    error = classify_graph(401, code, "Access token has expired.")
    assert error.transient and not error.ambiguous
    assert "MAILGW_CREDENTIAL" in error.hint


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "ErrorSomethingNew"), (400, None), (409, "ErrorIrresolvableConflict"), (422, None)],
)
def test_unknown_4xx_is_permanent(status: int, code: str | None) -> None:
    error = classify_graph(status, code, "no", may_have_sent=True)
    assert (error.transient, error.ambiguous) == (False, False)
    assert error.hint


def test_every_table_entry_is_reachable() -> None:
    for key, (is_transient, hint) in GRAPH_CODES.items():
        error = classify_graph(400, key, "")
        assert (error.transient, error.hint) == (is_transient, hint)


# --- parse_retry_after ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 5 ", 5.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0)],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    in_30 = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(in_30, now=now) == pytest.approx(30.0)
    past = format_datetime(datetime.fromtimestamp(now - 600, UTC), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "10s", "Tomorrow 10:00"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


# --- against the stand-in, through Delivery on real queues ---------------------------------------


@pytest.mark.parametrize(("status", "code", "hint"), PERMANENT)
async def test_permanent_error_is_one_request_then_poison_with_the_hint(
    transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
    status: int,
    code: str,
    hint: str,
) -> None:
    graph.fail_next(status, code)
    pipeline = make_pipeline(transport)
    message_id = await pipeline.submit(body())

    (step,) = await pipeline.run()
    assert step.outcome.action == "poisoned"
    assert len(graph.requests) == 1 and graph.requests[0].status == status
    assert graph.delivered == []
    dead = await pipeline.poisoned()
    assert dead.id == message_id
    assert dead.error is not None
    assert dead.error.code == f"graph/{code}"
    assert dead.error.hint == classify_graph(status, code, "").hint
    assert hint in dead.error.hint
    assert dead.attempt == 0 and not dead.ambiguous
    assert await pipeline.is_empty()  # not retried


async def test_permanent_error_on_the_draft_send_is_poisoned_too(
    draft_transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    graph.fail_with("ErrorSendAsDenied", operation="send")
    pipeline = make_pipeline(draft_transport)
    await pipeline.submit(body())

    assert (await pipeline.run())[-1].outcome.action == "poisoned"
    assert [r.operation for r in graph.requests] == ["createMessage", "send"]
    dead = await pipeline.poisoned()
    assert dead.error is not None and "Send As" in dead.error.hint
    assert graph.delivered == []


async def test_retry_after_reaches_the_error(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    graph.throttle(retry_after=7)
    with pytest.raises(DeliveryError) as throttled:
        await transport.send(outbound())
    assert (throttled.value.throttled, throttled.value.retry_after) == (True, 7.0)

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    graph.service_unavailable(retry_after=when)
    with pytest.raises(DeliveryError) as unavailable:
        await transport.send(outbound())
    assert unavailable.value.retry_after == pytest.approx(40, abs=2)
    assert not unavailable.value.ambiguous


async def test_429_waits_exactly_retry_after_without_using_an_attempt(
    transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    wait = 2
    graph.throttle(retry_after=wait)
    pipeline = make_pipeline(transport)
    await pipeline.submit(body())

    first = await pipeline.step()
    assert (first.outcome.action, first.outcome.delay) == ("retry", float(wait))
    assert (
        first.outcome.error is not None and first.outcome.error.code == "graph/ApplicationThrottled"
    )
    assert await pipeline.is_empty()  # invisible for Retry-After

    second = await pipeline.step(timeout=wait + 10)
    assert second.outcome.action == "sent"
    assert second.envelope.attempt == 0  # throttling used no attempt
    assert second.envelope.throttled == 1
    before, after = graph.requests_for("sendMail")
    assert before.status == 429 and after.status == 202
    assert after.time - before.time >= wait  # measured where Graph would measure it
    assert len(graph.delivered) == 1


async def test_throttling_does_not_exhaust_attempts(
    transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    graph.throttle(n=4, retry_after=0)
    pipeline = make_pipeline(transport, retry=RetryPolicy(max_attempts=2, base_seconds=0.001))
    await pipeline.submit(body())

    await pipeline.run()
    assert pipeline.actions == ["retry"] * 4 + ["sent"]
    assert [s.envelope.attempt for s in pipeline.steps] == [0] * 5
    assert [s.envelope.throttled for s in pipeline.steps] == [0, 1, 2, 3, 4]
    assert len(graph.delivered) == 1


async def test_throttling_is_bounded_by_max_age(
    transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    graph.throttle(retry_after=0)
    pipeline = make_pipeline(transport, retry=RetryPolicy(max_age_seconds=60))
    await pipeline.submit(body(), created_at=datetime.now(UTC) - timedelta(minutes=5))

    (step,) = await pipeline.run()
    assert step.outcome.action == "poisoned"
    dead = await pipeline.poisoned()
    assert dead.error is not None and dead.error.code == "graph/ApplicationThrottled"
    assert "MAILGW_MAX_AGE_SECONDS" in dead.error.message
    assert graph.delivered == []


async def test_a_503_storm_ends_in_exactly_one_delivery(
    transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    graph.service_unavailable(n=5, retry_after=None)
    pipeline = make_pipeline(transport)
    await pipeline.submit(body())

    await pipeline.run()
    assert pipeline.actions == ["retry"] * 5 + ["sent"]
    assert [r.status for r in graph.requests_for("sendMail")] == [503] * 5 + [202]
    assert len(graph.delivered) == 1
    assert [s.envelope.attempt for s in pipeline.steps] == [0, 1, 2, 3, 4, 5]
    assert not any(s.envelope.ambiguous for s in pipeline.steps)  # 503: nothing was done


async def test_attempts_run_out_into_poison(
    transport: GraphTransport, graph: GraphStandIn, make_pipeline: Callable[..., Pipeline]
) -> None:
    graph.service_unavailable(n=10, retry_after=None)
    pipeline = make_pipeline(transport, retry=RetryPolicy(max_attempts=3, base_seconds=0.001))
    await pipeline.submit(body())

    await pipeline.run()
    assert pipeline.actions == ["retry", "retry", "poisoned"]
    dead = await pipeline.poisoned()
    assert dead.error is not None and "gave up after 3 attempts" in dead.error.message
    assert len(graph.requests) == 3 and graph.delivered == []


@pytest.mark.parametrize("mode", ["sendmail", "draft"])
async def test_graph_slower_than_the_timeout_is_a_transient_timeout(
    graph_settings: Callable[..., Settings], graph: GraphStandIn, mode: str
) -> None:
    graph.latency_seconds = 60.0  # Graph would answer long after the 1 s timeout
    transport = GraphTransport(
        graph_settings(MAILGW_GRAPH_TIMEOUT_SECONDS="1", MAILGW_GRAPH_MODE=mode)
    )
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as timed_out:
            await transport.send(outbound())
        gave_up = time.monotonic()
        [request] = graph.requests
        assert request.responded is None  # gave up while Graph was still working on it
        assert gave_up - started > 0.9  # ... and not before its 1 s timeout (timer slack)
    finally:
        await transport.aclose()
    error = timed_out.value
    assert (error.code, error.transient) == ("graph/timeout", True)
    # sendMail may have gone out; a draft's creation cannot have sent anything
    assert error.ambiguous is (mode == "sendmail")
    assert len(graph.requests) == 1


async def test_unreachable_graph_is_a_transient_network_error_that_sent_nothing(
    graph_settings: Callable[..., Settings],
) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = GraphTransport(graph_settings(MAILGW_GRAPH_ENDPOINT=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(DeliveryError) as failed:
            await transport.send(outbound())
    finally:
        await transport.aclose()
    assert (failed.value.code, failed.value.transient) == ("graph/network-error", True)
    assert failed.value.ambiguous is False


async def test_a_non_json_error_page_is_still_classified(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    """A proxy in front of Graph answers with HTML: no Graph error code, the status decides."""
    html = b"<html><body>502 Bad Gateway</body></html>"
    graph.fail_next(502, "BadGateway", raw_body=html, content_type="text/html")
    with pytest.raises(DeliveryError) as gateway:
        await transport.send(outbound())
    assert (gateway.value.code, gateway.value.transient) == ("graph/http-502", True)
    assert gateway.value.ambiguous is True  # a 502 to sendMail: it may have gone through

    graph.fail_next(429, "TooManyRequests", raw_body=b"slow down", retry_after=3)
    with pytest.raises(DeliveryError) as throttled:
        await transport.send(outbound())
    assert (throttled.value.throttled, throttled.value.retry_after) == (True, 3.0)
    assert graph.delivered == []


async def test_a_token_for_the_wrong_resource_is_a_transient_401_with_a_hint(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    graph.audiences = {"https://graph.microsoft.us"}  # a national cloud's Graph, say
    hint = ["MAILGW_GRAPH_ENDPOINT", "MAILGW_GRAPH_SCOPE"]
    await unsent_refusal(transport, "graph/InvalidAuthenticationToken", hint=hint)
    assert graph.requests[0].status == 401 and graph.delivered == []
