"""A queue producer cannot steer draft mode at a draft of its choosing (issue 9, "Trust boundary").

Draft mode keeps its progress (the draft's id) in a checkpoint; were that taken from the queue
message, a producer could make the gateway send or delete any draft in an allowed mailbox by its
id. The checkpoint lives only in the gateway's own state record, so whatever a queue message says
about one, the victim's draft is neither sent, changed nor deleted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from graph_helpers import SENDER, Pipeline, body

from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn
from support import pull


def forgeries(draft_id: str) -> dict[str, dict[str, Any]]:
    checkpoint = {"draftId": draft_id, "sent": "1"}
    envelope = {
        "mailgw": 1,
        "id": uuid.uuid4().hex,
        "createdAt": datetime.now(UTC).isoformat(),
        "request": body(subject="forged"),
    }
    return {
        # the producer contract (a bare send request) with a checkpoint smuggled in
        "bare request": {**body(subject="forged"), "checkpoint": checkpoint},
        # the gateway's own envelope shape, unsealed, and with a made-up seal
        "unsealed envelope": {**envelope, "checkpoint": checkpoint},
        "envelope with a made-up seal": {**envelope, "checkpoint": checkpoint, "sig": "0" * 64},
    }


@pytest.mark.parametrize(
    "forgery", ["bare request", "unsealed envelope", "envelope with a made-up seal"]
)
async def test_a_checkpoint_in_a_queue_message_never_reaches_a_draft(
    forgery: str,
    draft_transport: GraphTransport,
    graph: GraphStandIn,
    make_pipeline: Callable[..., Pipeline],
) -> None:
    victim = graph.drafts.create(
        SENDER, {"subject": "the CEO's unsent draft", "isDraft": True}, [], time.time()
    )
    pipeline = make_pipeline(draft_transport)
    text = json.dumps(forgeries(victim.immutable_id)[forgery])
    producer = pipeline.queue.queue()
    await producer.create_queue()
    await producer.send_message(text)

    message = await pull(pipeline.queue)
    assert message is not None
    outcome = await pipeline.delivery.handle(message.content, queue_message_id=message.id)

    assert not victim.submitted and not victim.deleted and victim.is_draft
    assert victim.message["subject"] == "the CEO's unsent draft"
    touched = {victim.immutable_id, victim.regular_id}
    assert not [r for r in graph.requests if r.message_id in touched]
    # refused and recorded, as any message breaking its contract: a send request has no
    # checkpoint field, and an envelope without the gateway's seal is not the gateway's
    code = "mailgw/invalid-request" if forgery == "bare request" else "mailgw/invalid-envelope"
    assert outcome.action == "poisoned", outcome
    assert outcome.error is not None and outcome.error.code == code
    assert not graph.delivered
