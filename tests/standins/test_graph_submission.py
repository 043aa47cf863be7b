"""Exchange sends a draft after answering ``/send``: the Graph stand-in's submission lag (still a
draft, then found nowhere, then in Sent Items), a second ``/send`` meanwhile (a duplicate), the
Sent Items listing with the two documented filters, Internet message ids, and random faults.

Each phase is checked with the phases around it made long, so that nothing here depends on how
fast a loaded machine polls."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from standins.admin import RemoteAdmin
from standins.graph import GraphStandIn
from standins.graph.faults import RandomFaults, fault_from_json
from standins.identity import GATEWAY_APP_ROLES, GRAPH_RESOURCE, issue_token
from support import wait_until_async

SENDER = "noreply@contoso.com"
STAMP = "String {8d0a3e8e-5f4e-4a57-9c1a-6b0f5d2c9e11} Name mailgwMessageId"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
SENT_ITEMS = "/mailFolders/SentItems/messages"


def message(subject: str = "s", **extra: Any) -> dict[str, Any]:
    return {
        "subject": subject,
        "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
        **extra,
    }


@pytest.fixture
async def mailbox(graph: GraphStandIn) -> AsyncIterator[httpx.AsyncClient]:
    expires = int(time.time()) + 600
    token = issue_token("mi", "app", GRAPH_RESOURCE, expires, 1, roles=GATEWAY_APP_ROLES)
    async with httpx.AsyncClient(
        base_url=f"{graph.graph_url}/users/{SENDER}",
        headers={"Authorization": f"Bearer {token}", **IMMUTABLE},
    ) as http:
        yield http


async def draft(http: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    created = await http.post("/messages", json=message(**extra))
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


async def status_of(http: httpx.AsyncClient, item_id: str) -> str:
    """``draft``, ``sent`` or ``missing``, as a client reading the item sees it."""
    answer = await http.get(f"/messages/{item_id}")
    if answer.status_code == 404:
        return "missing"
    assert answer.status_code == 200, answer.text
    return "draft" if answer.json()["isDraft"] else "sent"


async def sent_items(http: httpx.AsyncClient, odata_filter: str) -> list[str]:
    answer = await http.get(SENT_ITEMS, params={"$filter": odata_filter, "$select": "id"})
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["value"]]


def by_stamp(value: str) -> str:
    return f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP}' and ep/value eq '{value}')"


# --- the submission lag -------------------------------------------------------------------------


async def test_without_a_lag_a_sent_draft_is_in_sent_items_when_send_is_answered(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    item = await draft(mailbox)
    assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 202
    assert await status_of(mailbox, item["id"]) == "sent"
    assert await sent_items(mailbox, f"internetMessageId eq '{item['internetMessageId']}'") == [
        item["id"]
    ]


async def test_a_sent_draft_reads_as_a_draft_during_the_lag(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    graph.submit_lag_seconds = 600
    item = await draft(mailbox, singleValueExtendedProperties=[{"id": STAMP, "value": "m-1"}])
    assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 202
    assert len(graph.delivered) == 1  # accepted: Exchange has it
    assert await status_of(mailbox, item["id"]) == "draft"
    assert await sent_items(mailbox, by_stamp("m-1")) == []
    drafts = await mailbox.get("/mailFolders/Drafts/messages", params={"$filter": by_stamp("m-1")})
    assert [i["id"] for i in drafts.json()["value"]] == [item["id"]]


async def test_a_second_send_during_the_lag_is_a_second_message(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    """What a client that sees isDraft: true after a lost answer must not do."""
    graph.submit_lag_seconds = 600
    item = await draft(mailbox)
    for _ in range(2):
        assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 202
    assert [d.message_id for d in graph.delivered] == [item["id"], item["id"]]


@pytest.mark.parametrize(
    ("transit_seconds", "status", "in_sent_items"),
    [(600, "missing", False), (0.05, "sent", True)],
    ids=["found-nowhere-for-the-transit", "then-in-sent-items-under-its-immutable-id"],
)
async def test_after_the_lag_the_item_leaves_drafts(
    graph: GraphStandIn,
    mailbox: httpx.AsyncClient,
    transit_seconds: float,
    status: str,
    in_sent_items: bool,
) -> None:
    """Past the lag the item is found nowhere while in transit, then in Sent Items under its
    immutable id; a second /send is 404 either way and nothing is delivered twice."""
    graph.submit_lag_seconds, graph.transit_seconds = 0.05, transit_seconds
    item = await draft(mailbox, singleValueExtendedProperties=[{"id": STAMP, "value": "m-2"}])
    assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 202

    async def moved() -> bool:
        return await status_of(mailbox, item["id"]) == status

    await wait_until_async(moved, timeout=10, what=f"the item to be {status}")
    assert await sent_items(mailbox, by_stamp("m-2")) == ([item["id"]] if in_sent_items else [])
    assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 404
    assert len(graph.delivered) == 1


async def test_a_reset_forgets_the_moves_to_come(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    graph.submit_lag_seconds = 600
    item = await draft(mailbox)
    assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 202
    assert graph.submission.pending == 1
    graph.reset()
    assert graph.submission.pending == 0
    assert len(graph.drafts) == 0 and graph.delivered == []


async def test_the_lag_is_configurable_and_can_be_ended_remotely(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    admin = RemoteAdmin(graph.url)
    await asyncio.to_thread(admin.configure, submitLagSeconds=3600, transitSeconds=5)
    assert (graph.submit_lag_seconds, graph.transit_seconds) == (3600, 5)
    item = await draft(mailbox)
    assert (await mailbox.post(f"/messages/{item['id']}/send")).status_code == 202
    assert await status_of(mailbox, item["id"]) == "draft"
    await asyncio.to_thread(admin.configure, completeSubmissions=True)
    assert await status_of(mailbox, item["id"]) == "sent"
    assert graph.submission.pending == 0


# --- Internet message ids and extended properties -----------------------------------------------


async def test_a_json_draft_gets_an_internet_message_id_at_creation(
    mailbox: httpx.AsyncClient,
) -> None:
    first, second = await draft(mailbox), await draft(mailbox)
    for item in (first, second):
        assert item["internetMessageId"].startswith("<") and item["internetMessageId"].endswith(">")
    assert first["internetMessageId"] != second["internetMessageId"]


async def test_a_mime_draft_keeps_its_message_id(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    mime = (
        b"From: noreply@contoso.com\r\nTo: a@example.com\r\nSubject: m\r\n"
        b"Message-ID: <abc123@contoso.com>\r\n\r\nhello\r\n"
    )
    created = await mailbox.post(
        "/messages", content=base64.b64encode(mime), headers={"Content-Type": "text/plain"}
    )
    assert created.status_code == 201, created.text
    item = created.json()
    assert item["internetMessageId"] == "<abc123@contoso.com>"
    await mailbox.post(f"/messages/{item['id']}/send")
    assert await sent_items(mailbox, "internetMessageId eq '<abc123@contoso.com>'") == [item["id"]]
    assert await sent_items(mailbox, "internetMessageId eq '<other@contoso.com>'") == []


async def test_extended_properties_are_returned_only_when_expanded(
    mailbox: httpx.AsyncClient,
) -> None:
    item = await draft(mailbox, singleValueExtendedProperties=[{"id": STAMP, "value": "m-4"}])
    assert "singleValueExtendedProperties" not in item
    plain = (await mailbox.get(f"/messages/{item['id']}")).json()
    assert "singleValueExtendedProperties" not in plain
    expand = f"singleValueExtendedProperties($filter=id eq '{STAMP}')"
    expanded = await mailbox.get(f"/messages/{item['id']}", params={"$expand": expand})
    assert expanded.json()["singleValueExtendedProperties"] == [{"id": STAMP, "value": "m-4"}]


async def test_the_property_filter_matches_as_exchange_does(mailbox: httpx.AsyncClient) -> None:
    """The name in the property id is case-sensitive; its GUID and the value are not."""
    item = await draft(mailbox, singleValueExtendedProperties=[{"id": STAMP, "value": "Id-5"}])
    await mailbox.post(f"/messages/{item['id']}/send")
    assert await sent_items(mailbox, by_stamp("id-5")) == [item["id"]]
    upper_guid = STAMP.replace("8d0a3e8e", "8D0A3E8E")
    found = f"singleValueExtendedProperties/any(x: x/id eq '{upper_guid}' and x/value eq 'Id-5')"
    assert await sent_items(mailbox, found) == [item["id"]]
    renamed = STAMP.replace("mailgwMessageId", "MAILGWMESSAGEID")
    other = f"singleValueExtendedProperties/Any(ep: ep/id eq '{renamed}' and ep/value eq 'Id-5')"
    assert await sent_items(mailbox, other) == []
    assert await sent_items(mailbox, by_stamp("id-6")) == []


@pytest.mark.parametrize(
    "odata_filter",
    ["subject eq 's'", "internetMessageId ne '<x>'", "singleValueExtendedProperties/Any(ep: true)"],
)
async def test_another_filter_is_refused(mailbox: httpx.AsyncClient, odata_filter: str) -> None:
    answer = await mailbox.get(SENT_ITEMS, params={"$filter": odata_filter})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"


async def test_a_malformed_extended_property_is_refused(mailbox: httpx.AsyncClient) -> None:
    bad = message(singleValueExtendedProperties=[{"id": "mailgwMessageId", "value": "x"}])
    answer = await mailbox.post("/messages", json=bad)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ErrorInvalidProperty"


async def test_an_unknown_folder_is_not_found(mailbox: httpx.AsyncClient) -> None:
    answer = await mailbox.get("/mailFolders/NoSuchFolder/messages")
    assert answer.status_code == 404


# --- random faults ------------------------------------------------------------------------------


async def test_random_faults_answer_a_share_of_the_calls_repeatably(
    graph: GraphStandIn, mailbox: httpx.AsyncClient
) -> None:
    chaos = {
        "rate": 0.5,
        "seed": 11,
        "faults": [
            {"status": 429, "code": "ApplicationThrottled", "retryAfter": 1},
            {"mode": "status", "status": 504, "operation": "sendMail"},
        ],
    }
    statuses = []
    for seed_run in range(2):
        graph.reset()
        graph.configure_json({"randomFaults": chaos})
        run = []
        for _ in range(40):
            answer = await mailbox.post("/sendMail", json={"message": message()})
            run.append(answer.status_code)
        statuses.append((run, len(graph.delivered)))
        assert seed_run == 0 or statuses[0] == statuses[1]  # the same seed, the same run
    run, delivered = statuses[0]
    assert set(run) == {202, 429, 504}
    # a 504 here is accepted-then-lost: the message went out; a 429 sent nothing
    assert delivered == run.count(202) + run.count(504)
    assert sum(graph.stats()["randomFaults"].values()) == run.count(429) + run.count(504)
    graph.configure_json({"randomFaults": None})
    assert (await mailbox.post("/sendMail", json={"message": message()})).status_code == 202


def test_random_faults_only_draw_faults_that_match_the_call() -> None:
    only_send = RandomFaults(1.0, [fault_from_json({"mode": "status", "operation": "send"})])
    assert only_send.draw(SENDER, "createMessage") is None
    drawn = only_send.draw(SENDER, "send")
    assert drawn is not None and (drawn.status, drawn.mode) == (504, "accept_then_status")
    assert RandomFaults(0.0, only_send.faults).draw(SENDER, "send") is None
    with pytest.raises(ValueError, match="rate"):
        RandomFaults(1.5, [])
