"""Connections and tokens: one TLS session and one AUTH serve many messages of a mailbox; at most
MAILGW_SMTP_CONNECTIONS (Exchange Online allows 3 per mailbox) are open at once; each mailbox has
its own connections; one token serves every mailbox (the user is in the XOAUTH2 blob, not in the
token).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from smtp_helpers import SENDER, body, outbound, parse

from mailgw.settings import Settings
from mailgw.transports.smtp import SmtpTransport
from standins.faults import Gate
from standins.identity import IdentityStandIn
from standins.smtp import SmtpStandIn
from support import wait_until_async

MAILBOXES = ("noreply@contoso.com", "alerts@contoso.com", "billing@contoso.com")


async def _holding(gate: Gate, count: int) -> bool:
    return gate.holding >= count


def parse_subject(data: bytes) -> str:
    return str(parse(data)["Subject"])


async def test_sequential_messages_of_a_mailbox_share_one_connection(
    transport: SmtpTransport, smtp: SmtpStandIn, identity: IdentityStandIn
) -> None:
    for i in range(10):
        await transport.send(outbound(body(subject=f"seq {i}")))

    assert [parse_subject(r.data) for r in smtp.received] == [f"seq {i}" for i in range(10)]
    (connection,) = smtp.connections
    assert connection.messages == 10
    assert connection.open  # kept for the next message
    assert len(smtp.auth_attempts) == 1  # one AUTH, not one per message
    assert len(identity.issued) == 1
    assert {r.connection_id for r in smtp.received} == {connection.id}


async def test_concurrent_messages_of_a_mailbox_use_three_connections_and_no_more(
    transport: SmtpTransport, smtp: SmtpStandIn
) -> None:
    held = smtp.hold_data(3)  # the first three messages stay in DATA until released
    burst = asyncio.gather(*(transport.send(outbound(body(subject=f"c{i}"))) for i in range(10)))
    # sent one after another, the first held message would block the rest: three at once
    await wait_until_async(lambda: _holding(held, 3), what="three messages in DATA at once")
    assert len(smtp.open_connections) == 3
    held.release()
    await burst

    assert smtp.max_concurrent_by_user[SENDER] == 3
    assert sorted(parse_subject(r.data) for r in smtp.received) == sorted(
        f"c{i}" for i in range(10)
    )
    assert 1 <= smtp.connections_opened <= 3
    assert smtp.max_concurrent_by_user[SENDER] <= 3
    assert smtp.rejections == []  # never 432 4.3.2 sender thread limit exceeded
    # and the connections stay for the next burst
    await asyncio.gather(*(transport.send(outbound(body(subject=f"d{i}"))) for i in range(10)))
    assert len(smtp.received) == 20
    assert smtp.connections_opened <= 3
    assert smtp.max_concurrent_by_user[SENDER] <= 3


async def test_the_connection_cap_follows_the_setting(
    smtp_settings: Callable[..., Settings], smtp: SmtpStandIn
) -> None:
    smtp.max_connections_per_user = 1  # a stricter server: the gateway must keep within it
    transport = SmtpTransport(smtp_settings(MAILGW_SMTP_CONNECTIONS="1"))
    try:
        await asyncio.gather(*(transport.send(outbound(body(subject=f"{i}"))) for i in range(6)))
    finally:
        await transport.aclose()
    assert len(smtp.received) == 6
    assert smtp.connections_opened == 1
    assert smtp.max_concurrent_by_user[SENDER] == 1
    assert smtp.rejections == []


async def test_each_mailbox_has_its_own_connections_and_authenticates_as_itself(
    transport: SmtpTransport, smtp: SmtpStandIn, identity: IdentityStandIn
) -> None:
    sends = [
        transport.send(outbound(body(**{"from": box}, subject=f"{box} {i}")))
        for i in range(4)
        for box in MAILBOXES
    ]
    await asyncio.gather(*sends)

    assert len(smtp.received) == 12
    for received in smtp.received:
        assert received.auth_user == received.mail_from  # never another mailbox's session
    by_user = Counter(c.auth_user for c in smtp.connections)
    assert set(by_user) == set(MAILBOXES)
    assert all(1 <= n <= 3 for n in by_user.values())
    assert all(smtp.max_concurrent_by_user[box] <= 3 for box in MAILBOXES)
    # one token for every mailbox: the mailbox is named in XOAUTH2's user=, not in the token
    assert len(identity.issued) == 1
    assert {a.client_id for a in smtp.auth_attempts} == {identity.issued[0].client_id}


async def test_one_token_for_many_sends_and_a_cold_burst(
    transport: SmtpTransport, smtp: SmtpStandIn, identity: IdentityStandIn
) -> None:
    """A cold instance takes a burst from the queue: concurrent first connections of several
    mailboxes ask for the token once."""
    await asyncio.gather(
        *(
            transport.send(outbound(body(**{"from": MAILBOXES[i % 3]}, subject=f"{i}")))
            for i in range(15)
        )
    )
    for i in range(5):
        await transport.send(outbound(body(subject=f"then {i}")))
    assert len(smtp.received) == 20
    assert len(identity.issued) == 1
    assert len(identity.requests) == 1


async def test_closing_the_transport_quits_its_connections(
    smtp_settings: Callable[..., Settings], smtp: SmtpStandIn
) -> None:
    transport = SmtpTransport(smtp_settings())
    await asyncio.gather(*(transport.send(outbound(body(**{"from": box}))) for box in MAILBOXES))
    assert len(smtp.open_connections) == 3
    await transport.aclose()

    async def all_closed() -> bool:
        return not smtp.open_connections

    await wait_until_async(all_closed, timeout=5, what="the server to see every QUIT")
