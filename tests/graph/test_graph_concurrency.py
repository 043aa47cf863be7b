"""Graph allows 4 concurrent requests per app and mailbox: a burst from one mailbox is spread over
4 slots (not thrown at Graph to collect 429s, not serialised), and mailboxes don't wait for each
other. Counted at the stand-in, which sees what the client attempted."""

from __future__ import annotations

import asyncio

from graph_helpers import SENDER, body, outbound

from mailgw.transports.graph import GraphTransport
from standins import poll_until_async
from standins.graph import GraphStandIn

OTHER = "alerts@contoso.com"


async def test_a_burst_from_one_mailbox_uses_four_slots_and_collects_no_429(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    graph.latency_seconds = 0.05
    held = graph.hold_answers(n=4)  # the first four stay in flight until all four slots are used
    burst = asyncio.gather(*(transport.send(outbound(body(subject=f"m{i}"))) for i in range(50)))
    await poll_until_async(lambda: held.holding == 4, what="four requests in flight")
    held.release()
    await burst

    assert len(graph.delivered) == 50
    assert sorted(d.subject or "" for d in graph.delivered) == sorted(f"m{i}" for i in range(50))
    assert 3 <= graph.max_in_flight[SENDER] <= 4  # spread over the slots, never more
    assert not [r for r in graph.requests if r.status == 429 or r.throttled]
    assert len(graph.requests) == 50
    assert transport.limiter.peak[SENDER] == graph.max_in_flight[SENDER]


async def test_draft_mode_requests_share_the_same_four_slots(
    draft_transport: GraphTransport, graph: GraphStandIn
) -> None:
    graph.latency_seconds = 0.02
    held = graph.hold_answers(n=4, operation="createMessage")
    burst = asyncio.gather(
        *(draft_transport.send(outbound(body(subject=f"d{i}"))) for i in range(12))
    )
    await poll_until_async(lambda: held.holding == 4, what="four drafts being created at once")
    held.release()
    await burst
    assert len(graph.delivered) == 12
    assert 3 <= graph.max_in_flight[SENDER] <= 4
    assert not [r for r in graph.requests if r.status == 429]
    assert len(graph.requests) == 24  # createMessage + send each


async def test_the_limit_is_per_mailbox_case_insensitively(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    graph.latency_seconds = 0.05
    spellings = [SENDER, SENDER.upper(), "NoReply@Contoso.com"]
    await asyncio.gather(
        *(
            transport.send(outbound(body(**{"from": spellings[i % 3]}, subject=f"{i}")))
            for i in range(24)
        )
    )
    assert len(graph.delivered) == 24
    assert graph.max_in_flight[SENDER] <= 4  # the stand-in keys mailboxes in lower case
    assert not [r for r in graph.requests if r.status == 429]


async def test_a_busy_mailbox_does_not_block_another(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    await transport.send(outbound(body(subject="warm-up")))  # token and connections
    graph.reset()
    # SENDER's four slots are held by requests Graph answers only when the test says so
    held = graph.hold_answers(n=4, mailbox=SENDER)
    busy = [
        asyncio.create_task(transport.send(outbound(body(subject=f"busy {i}")))) for i in range(5)
    ]
    await graph.wait_delivered(4)  # the four are in (Graph has them; answers pending)

    await transport.send(outbound(body(**{"from": OTHER}, subject="other")))
    other = graph.requests_for("sendMail", OTHER)[0]
    assert other.status == 202
    assert held.holding == 4 and not any(t.done() for t in busy)  # SENDER is still busy ...
    assert len(graph.requests_for("sendMail", SENDER)) == 4  # ... and its fifth waits its turn

    held.release()
    await asyncio.gather(*busy)
    first_four = graph.requests_for("sendMail", SENDER)[:4]
    fifth = graph.requests_for("sendMail", SENDER)[4]
    assert other.responded is not None
    assert all(r.responded is not None and other.responded < r.responded for r in first_four)
    assert fifth.time >= min(r.responded or 0 for r in first_four)  # it got a freed slot
    assert graph.max_in_flight[SENDER] == 4
    assert graph.max_in_flight[OTHER] == 1
    assert len(graph.delivered) == 6
    assert not [r for r in graph.requests if r.status == 429]


async def test_idle_mailboxes_are_forgotten(transport: GraphTransport, graph: GraphStandIn) -> None:
    await asyncio.gather(
        *(transport.send(outbound(body(**{"from": f"box{i}@contoso.com"}))) for i in range(30))
    )
    assert len(graph.delivered) == 30
    assert transport.limiter.in_flight == {}  # no per-mailbox state left behind
