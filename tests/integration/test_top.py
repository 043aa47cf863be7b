"""``mailgw top --once`` as an operator runs it (its own process, settings from the environment),
on real storage that the real core filled: messages waiting, sent, failed."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailgw import cli
from mailgw.services import Services
from mailgw.settings import Settings
from support import fresh_storage, pull, run_mailgw, sample_request


@pytest.fixture
async def services(azurite: Any, tmp_path: Path) -> AsyncIterator[Services]:
    env = {
        **fresh_storage(azurite, "top"),
        "MAILGW_ALLOWED_SENDERS": "noreply@contoso.com,alerts@contoso.com",
        "MAILGW_TRANSPORT": "outbox",
        "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    gateway = Services(Settings.from_env(env))
    yield gateway
    await cli.close_services(gateway)


def top_once(services: Services, cwd: Path) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    env = {**base, **services.settings.env, "COLUMNS": "160"}
    result = run_mailgw("top", "--once", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def row(output: str, first: str) -> list[str]:
    """The cells of the line that starts (after table borders) with ``first``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").strip("| ").split("|")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


async def test_top_shows_queues_rates_and_failures(services: Services, tmp_path: Path) -> None:
    intake, delivery, queue = services.intake, services.delivery, services.queue
    for sender in ("noreply@contoso.com", "alerts@contoso.com"):
        document = json.dumps(sample_request(**{"from": sender})).encode()
        await intake.submit(document, content_type="application/json")
    await intake.drain()
    for _ in range(2):
        message = await pull(queue)
        outcome = await delivery.handle(message.content, queue_message_id=message.id)
        assert outcome.action == "sent"
    # A producer's message from a sender the policy refuses: failed, recorded with its hint.
    await queue.queue().send_message(json.dumps(sample_request(**{"from": "x@contoso.com"})))
    message = await pull(queue)
    outcome = await delivery.handle(message.content, queue_message_id=message.id)
    assert outcome.action == "poisoned"
    poisoned = await pull(queue, queue.poison_queue_name)
    await services.operations.record_failure(poisoned.content, queue_message_id=poisoned.id)
    # And one that waits.
    await intake.submit(json.dumps(sample_request()).encode(), content_type="application/json")
    await intake.drain()

    output = top_once(services, tmp_path)
    name = services.settings.queue
    assert row(output, name)[1] == "1"  # one message waits
    assert row(output, f"{name}-poison")[1:] == ["0", "-"]
    assert row(output, f"{name}-poison-poison")[1] == "- (not created yet)"
    assert row(output, "received")[1:] == ["4", "4", "4"]
    assert row(output, "sent")[1:] == ["2", "2", "2"]
    assert row(output, "failed")[1:] == ["1", "1", "1"]
    assert row(output, "noreply@contoso.com")[1] == "1"
    assert row(output, "alerts@contoso.com")[1] == "1"
    assert "mailgw/sender-not-allowed" in output
    assert "-> add the mailbox to MAILGW_ALLOWED_SENDERS" in output  # the hint, whole
    assert f"queue {name}, state table {services.settings.state_table}" in output


async def test_top_on_empty_storage_says_so(services: Services, tmp_path: Path) -> None:
    output = top_once(services, tmp_path)
    assert row(output, services.settings.queue)[1] == "- (not created yet)"
    assert row(output, "sent")[1:] == ["0", "0", "0"]
    assert "No failed messages." in output
