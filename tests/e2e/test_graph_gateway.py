"""End to end with MAILGW_TRANSPORT=graph: HTTP → dev host → Azurite → Graph stand-in, with a token
from the managed-identity stand-in (azure-identity and msgraph-sdk run their own code)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient
from gateway_host import DevHost

from standins.processes import StandInProcesses
from support import b64, wait_until


@pytest.fixture(scope="module")
def graph_host(start_devhost: Callable[..., DevHost], standins: StandInProcesses) -> DevHost:
    return start_devhost(**standins.gateway_env())


def peek(client: QueueClient) -> list[Any]:
    try:
        return list(client.peek_messages(max_messages=5))
    except ResourceNotFoundError:
        return []  # not created yet: nothing was poisoned so far


def delivered_for(standins: StandInProcesses, subject: str) -> list[dict[str, Any]]:
    return [d for d in standins.graph.delivered() if d["message"].get("subject") == subject]


def test_post_reaches_graph_with_every_field_and_a_managed_identity_token(
    graph_host: DevHost, standins: StandInProcesses
) -> None:
    pdf = b"%PDF-1.7 " + os.urandom(1024)
    response = graph_host.post_json(
        "/api/v1/messages",
        {
            "from": {"address": "noreply@contoso.com", "name": "Contoso"},
            "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
            "cc": ["c@example.com"],
            "bcc": ["hidden@example.com"],
            "replyTo": ["help@contoso.com"],
            "subject": "graph end to end",
            "html": '<p>Hi <img src="cid:logo"></p>',
            "attachments": [
                {"name": "r.pdf", "contentType": "application/pdf", "contentBase64": b64(pdf)},
                {
                    "name": "logo.png",
                    "contentType": "image/png",
                    "contentBase64": b64(b"PNG"),
                    "inline": True,
                    "contentId": "logo",
                },
            ],
            "headers": {"X-Order-Id": "42"},
            "importance": "high",
            "saveToSentItems": False,
        },
    )
    assert response.status == 202, response.body
    (delivered,) = wait_until(
        lambda: delivered_for(standins, "graph end to end"),
        timeout=30,
        what="the message at the Graph stand-in",
    )
    message = delivered["message"]
    assert delivered["mailbox"] == "noreply@contoso.com"
    assert delivered["via"] == "sendMail"
    assert delivered["saveToSentItems"] is False
    assert delivered["token"]["kind"] == "mi"
    assert delivered["token"]["resource"] == "https://graph.microsoft.com"  # not the stand-in URL

    def addresses(key: str) -> list[str]:
        return [r["emailAddress"]["address"] for r in message.get(key, [])]

    assert addresses("toRecipients") == ["a@example.com", "b@example.com"]
    assert addresses("ccRecipients") == ["c@example.com"]
    assert addresses("bccRecipients") == ["hidden@example.com"]
    assert addresses("replyTo") == ["help@contoso.com"]
    assert message["from"]["emailAddress"] == {"address": "noreply@contoso.com", "name": "Contoso"}
    assert message["body"]["contentType"].lower() == "html"
    assert message["importance"].lower() == "high"
    assert {h["name"]: h["value"] for h in message["internetMessageHeaders"]} == {
        "X-Order-Id": "42"
    }
    attachments = {a["name"]: a for a in delivered["attachments"]}
    assert base64.b64decode(attachments["r.pdf"]["contentBytes"]) == pdf
    assert attachments["logo.png"]["isInline"] is True
    assert attachments["logo.png"]["contentId"] == "logo"


def test_permanent_graph_error_ends_in_poison_after_one_request(
    graph_host: DevHost, standins: StandInProcesses
) -> None:
    standins.graph.add_faults(
        {
            "status": 403,
            "code": "ErrorSendAsDenied",
            "message": "no send as",
            "mailbox": "denied@fabrikam.com",
        }
    )
    response = graph_host.post_json(
        "/api/v1/messages",
        {"from": "denied@fabrikam.com", "to": ["a@example.com"], "subject": "denied", "text": "x"},
    )
    assert response.status == 202
    message_id = response.json()["id"]

    def failed() -> dict[str, Any]:
        state = graph_host.request("GET", f"/api/v1/messages/{message_id}").json()
        return state if state.get("status") == "failed" else {}

    state = wait_until(failed, timeout=30, what="the failed state")
    assert state["lastError"]["code"] == "graph/ErrorSendAsDenied"
    assert "Send As" in state["lastError"]["hint"]
    assert state["attempts"] == 1
    sends = [r for r in standins.graph.requests() if r.get("mailbox") == "denied@fabrikam.com"]
    assert len(sends) == 1
