"""Refused recipients are counted, never named (issue 9, "Leaks"): a Bcc recipient the server
refuses must not appear in the message's state, its history or the logs; a partially refused
message says it was partial."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import pytest
from smtp_helpers import Pipeline, body

from mailgw.models import MessageStatus
from mailgw.state import MessageRecord
from mailgw.store import StateStore
from mailgw.transports.smtp import SmtpTransport
from standins.smtp import SmtpStandIn

SECRET = "hidden-board-member@example.com"


def gateway_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the gateway logged (not the stand-in server's own protocol trace)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mailgw"))


@pytest.fixture
def send_with_a_refused_bcc(
    smtp: SmtpStandIn,
    transport: SmtpTransport,
    make_pipeline: Callable[..., Pipeline],
    store: StateStore,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[list[str]], Awaitable[MessageRecord]]:
    """``await send_with_a_refused_bcc(to)``: one message whose first RCPT (here the Bcc, when
    ``to`` is empty) the server refuses, with a reply that names it; its record once delivery
    is done with it. Everything the gateway logs, down to DEBUG, is captured."""
    caplog.set_level(logging.DEBUG)

    async def send(to: list[str]) -> MessageRecord:
        reply = f"5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {SECRET} not found"
        smtp.fail_next("rcpt", 550, reply)
        pipeline = make_pipeline(transport)
        message_id = await pipeline.submit(body(to=to, bcc=[SECRET]))
        await pipeline.run()
        record = await store.get(message_id)
        assert record is not None
        assert SECRET not in json.dumps(record.model_dump(mode="json"))
        return record

    return send


async def test_a_partly_refused_message_records_a_count_and_no_address(
    send_with_a_refused_bcc: Callable[[list[str]], Awaitable[MessageRecord]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    to = ["a@example.com", "b@example.com"]
    record = await send_with_a_refused_bcc(to)
    assert record.status is MessageStatus.sent
    assert record.public(record.updated_at)["refusedRecipients"] == 1
    assert "1 of 3 recipients refused" in (record.history[-1].code or "")
    assert SECRET not in gateway_logs(caplog)


async def test_all_refused_is_a_failure_whose_reason_names_nobody(
    send_with_a_refused_bcc: Callable[[list[str]], Awaitable[MessageRecord]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = await send_with_a_refused_bcc([])
    assert record.status is MessageStatus.failed
    assert record.last_error is not None and record.last_error.code == "smtp/550-5.1.10"
    assert "<recipient>" in record.last_error.message
    assert SECRET not in gateway_logs(caplog)
