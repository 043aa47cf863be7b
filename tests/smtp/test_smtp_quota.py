"""Exchange's sending quota over SMTP (554 5.2.0 SubmissionQuotaExceededException, a 4.x.x rate
reply): the message waits for the window, the mailbox with it; nothing fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from graph.graph_helpers import Pipeline, body

from mailgw.pacing import Pacer
from mailgw.store import StateStore
from mailgw.transports.smtp import SmtpTransport
from standins.smtp import Exchange, Reply, SmtpStandIn


@pytest.mark.parametrize(
    ("reply", "longest"),
    [
        pytest.param(Exchange.SUBMISSION_QUOTA_EXCEEDED, timedelta(hours=24, minutes=15), id="day"),
        pytest.param(Exchange.MESSAGE_RATE_EXCEEDED, timedelta(seconds=61), id="minute"),
    ],
)
async def test_a_quota_reply_defers_the_message_and_holds_the_mailbox(
    transport: SmtpTransport,
    smtp: SmtpStandIn,
    make_pipeline: Callable[..., Pipeline],
    pacer: Pacer,
    store: StateStore,
    reply: Reply,
    longest: timedelta,
) -> None:
    smtp.fail_with(reply)
    pipeline = make_pipeline(transport, pacer=pacer)
    message_id = await pipeline.submit(body(subject="limited"))
    assert (await pipeline.step()).outcome.action == "deferred"
    record = await store.get(message_id)
    assert record is not None
    state = record.public(datetime.now(UTC))
    assert (state["status"], state["reason"]) == ("scheduled", "Exchange sending quota")
    waits = datetime.fromisoformat(state["nextAttemptAt"]) - datetime.now(UTC)
    assert timedelta(0) < waits <= longest
    assert smtp.received == []
    # the mailbox's next message waits without another refusal
    await pipeline.submit(body(subject="next"))
    assert (await pipeline.step()).outcome.action == "deferred"
    assert len(smtp.rejections) == 1
    assert await pipeline.is_empty()
