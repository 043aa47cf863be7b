"""End to end with MAILGW_TRANSPORT=smtp and =relay: HTTP → dev host → Azurite → the SMTP stand-in
(a process), with, for client submission, an XOAUTH2 token from the managed-identity stand-in (also
a process). The gateway's own aiosmtplib and azure-identity run their own code; nothing is mocked.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway_host import DevHost

from standins.processes import SmtpStandInProcess, start_smtp_standin
from support import b64, wait_until

PDF = b"%PDF-1.7\n" + os.urandom(2048)


@pytest.fixture(scope="module")
def submission() -> Iterator[SmtpStandInProcess]:
    with start_smtp_standin("submission") as standin:
        yield standin


@pytest.fixture(scope="module")
def relay_connector() -> Iterator[SmtpStandInProcess]:
    with start_smtp_standin("relay", accepted_domains=("contoso.com",)) as standin:
        yield standin


@pytest.fixture(scope="module")
def smtp_host(start_devhost: Callable[..., DevHost], submission: SmtpStandInProcess) -> DevHost:
    return start_devhost(**submission.gateway_env())


@pytest.fixture(scope="module")
def relay_host(
    start_devhost: Callable[..., DevHost], relay_connector: SmtpStandInProcess
) -> DevHost:
    return start_devhost(**relay_connector.gateway_env())


def full_request(subject: str) -> dict[str, Any]:
    return {
        "from": {"address": "noreply@contoso.com", "name": "Contoso"},
        "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
        "cc": ["c@example.com"],
        "bcc": ["hidden@example.net"],
        "replyTo": ["help@contoso.com"],
        "subject": subject,
        "text": "plain body",
        "html": "<p>html body</p>",
        "attachments": [
            {"name": "r.pdf", "contentType": "application/pdf", "contentBase64": b64(PDF)}
        ],
        "headers": {"X-Order-Id": "42"},
        "importance": "high",
    }


def received_with(standin: SmtpStandInProcess, subject: str) -> list[dict[str, Any]]:
    found = []
    for item in standin.smtp.received():
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(item["data"])
        if message["Subject"] == subject:
            found.append({**item, "message": message})
    return found


def wait_for_status(host: DevHost, message_id: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any]:
        state: dict[str, Any] = host.request("GET", f"/api/v1/messages/{message_id}").json()
        return state if state.get("status") == status else {}

    return wait_until(reached, timeout=30, what=f"message {message_id} to be {status}")


def post(host: DevHost, document: dict[str, Any]) -> str:
    response = host.post_json("/api/v1/messages", document)
    assert response.status == 202, response.body
    message_id: str = response.json()["id"]
    return message_id


def check_delivered(item: dict[str, Any], message_id: str) -> None:
    """The envelope and headers of the full request, Bcc only in the envelope."""
    assert item["mailFrom"] == "noreply@contoso.com"
    assert item["rcptTos"] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "hidden@example.net",
    ]
    assert b"hidden@example.net" not in item["data"]
    assert item["tls"] is True and item["tlsVersion"] in ("TLSv1.2", "TLSv1.3")
    message = item["message"]
    assert "Bcc" not in message
    assert str(message["From"]) == "Contoso <noreply@contoso.com>"
    assert [a.addr_spec for a in message["To"].addresses] == ["a@example.com", "b@example.com"]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["c@example.com"]
    assert [a.addr_spec for a in message["Reply-To"].addresses] == ["help@contoso.com"]
    assert message["Message-ID"] == f"<{message_id}@contoso.com>"
    assert message["X-Order-Id"] == "42"
    assert message["Importance"] == "High"
    (pdf,) = list(message.iter_attachments())
    assert pdf.get_filename() == "r.pdf" and pdf.get_content() == PDF


def post_and_receive(
    host: DevHost, server: SmtpStandInProcess, subject: str
) -> tuple[str, dict[str, Any]]:
    """POST :func:`full_request` with ``subject``; once ``server`` has it, check every field.
    Returns the message id and what the server received."""
    message_id = post(host, full_request(subject))
    (item,) = wait_until(
        lambda: received_with(server, subject),
        timeout=30,
        what=f"the message at the {server.mode} stand-in",
    )
    check_delivered(item, message_id)
    return message_id, item


def test_smtp_post_reaches_exchange_as_the_mailbox_with_every_header(
    smtp_host: DevHost, submission: SmtpStandInProcess
) -> None:
    message_id, item = post_and_receive(smtp_host, submission, "smtp end to end")
    assert item["authUser"] == "noreply@contoso.com"  # XOAUTH2 as the from mailbox
    (auth,) = [a for a in submission.smtp.auth_attempts() if a["user"] == "noreply@contoso.com"]
    assert auth["ok"] is True
    state = wait_for_status(smtp_host, message_id, "sent")
    assert state["attempts"] == 1 and state.get("lastError") is None

    # more messages of the mailbox reuse the pooled connection(s): never over Exchange's 3
    ids = [post(smtp_host, {**full_request(f"burst {i}"), "bcc": []}) for i in range(5)]
    for message_id in ids:
        wait_for_status(smtp_host, message_id, "sent")
    stats = submission.smtp.stats()
    assert stats["maxConcurrentByUser"]["noreply@contoso.com"] <= 3
    assert stats["connectionsOpened"] <= 3


def test_smtp_permanent_reply_shows_failed_with_the_hint(
    smtp_host: DevHost, submission: SmtpStandInProcess
) -> None:
    mailbox = "denied@fabrikam.com"
    submission.smtp.fail_with("SMTP_AUTH_DISABLED", n=10, user=mailbox)
    message_id = post(
        smtp_host, {"from": mailbox, "to": ["a@example.com"], "subject": "no auth", "text": "x"}
    )
    state = wait_for_status(smtp_host, message_id, "failed")
    assert state["attempts"] == 1
    error = state["lastError"]
    assert error["code"] == "smtp/535-5.7.139"
    assert "Set-CASMailbox" in error["hint"] and "Set-TransportConfig" in error["hint"]
    refused = [r for r in submission.smtp.rejections() if r["authUser"] == mailbox]
    assert len(refused) == 1  # one attempt, not retried
    assert received_with(submission, "no auth") == []
    submission.smtp.clear_faults()


def test_relay_post_reaches_the_connector_without_auth(
    relay_host: DevHost, relay_connector: SmtpStandInProcess
) -> None:
    message_id, item = post_and_receive(relay_host, relay_connector, "relay end to end")
    assert item["authUser"] is None
    assert relay_connector.smtp.auth_attempts() == []
    wait_for_status(relay_host, message_id, "sent")


def test_relay_from_a_domain_the_connector_does_not_accept_shows_failed_with_the_hint(
    relay_host: DevHost, relay_connector: SmtpStandInProcess
) -> None:
    message_id = post(
        relay_host,
        {"from": "noreply@fabrikam.com", "to": ["a@example.com"], "subject": "relay", "text": "x"},
    )
    state = wait_for_status(relay_host, message_id, "failed")
    assert state["attempts"] == 1
    assert state["lastError"]["code"] == "smtp/550-5.7.64"
    assert "connector" in state["lastError"]["hint"]
    assert "accepted domain" in state["lastError"]["hint"]
    assert [r["mailFrom"] for r in relay_connector.smtp.rejections()] == ["noreply@fabrikam.com"]
