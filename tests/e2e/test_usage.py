"""``GET /api/v1/mailboxes/{address}/usage`` and ``mailgw usage``: each sender's budgets and use,
through the dev host serving the real function_app.py on Azurite."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from gateway_host import ROOT, DevHost

from support import run_captured, sample_request, wait_until


@pytest.fixture(scope="module")
def host(start_devhost: Callable[..., DevHost]) -> DevHost:
    return start_devhost(
        MAILGW_STATE_TABLE=f"usage{uuid.uuid4().hex[:12]}",
        MAILGW_MAILBOX_DAILY_RECIPIENTS="500",
        MAILGW_MAILBOX_LIMITS=json.dumps({"hve@fabrikam.com": {"dailyRecipients": 100000}}),
    )


def usage(host: DevHost, address: str) -> dict[str, Any]:
    response = host.request("GET", f"/api/v1/mailboxes/{address}/usage")
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def test_usage_counts_what_a_mailbox_sent(host: DevHost) -> None:
    sender = f"u{uuid.uuid4().hex[:8]}@fabrikam.com"
    ids = [
        host.post_json("/api/v1/messages", sample_request(**{"from": sender})).json()["id"]
        for _ in range(3)
    ]
    wait_until(lambda: all(host.status(i, "sent") for i in ids), timeout=30, what="all sent")
    # what the instance reserved and did not spend goes back once the mailbox is idle
    shown = wait_until(
        lambda: (u := usage(host, sender.upper()))["dailyRecipients"]["used"] == 6 and u,
        timeout=20,
        what="the unused reservation given back",
    )
    assert shown["mailbox"] == sender
    assert shown["dailyRecipients"] == {"limit": 500, "used": 6, "reserved": 0}
    assert shown["perMinute"] == {"limit": None, "used": 0}
    assert shown["concurrency"] == {"limit": 4, "leased": 0}
    assert shown["blockedUntil"] is None
    assert "tenantDailyRecipients" not in shown or shown["tenantDailyRecipients"] is None

    override = usage(host, "hve@fabrikam.com")
    assert override["dailyRecipients"] == {"limit": 100000, "used": 0, "reserved": 0}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    command = [sys.executable, "-m", "mailgw", "usage", sender, "--url", host.base_url]
    cli = run_captured(command, cwd=ROOT, env=env, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["dailyRecipients"]["used"] == 6


@pytest.mark.parametrize("address", ["not-an-address", "a@b@c", "%20"])
def test_a_bad_address_is_a_400_problem(host: DevHost, address: str) -> None:
    response = host.request("GET", f"/api/v1/mailboxes/{address}/usage")
    assert response.status == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:mailgw:problem:invalid-mailbox"
