"""The operator commands on real storage (Azurite): ``mailgw failed list|replay|purge`` and
``mailgw store cleanup``, configured only through the environment, as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from mailgw import cli
from mailgw.models import Envelope, ErrorInfo, MessageStatus
from mailgw.operations import Operations
from mailgw.services import Services
from mailgw.settings import Settings
from mailgw.storage import queue_client
from mailgw.store import StateStore
from support import fresh_storage, new_record, run_mailgw, sample_request, sealed

SEND_AS = ErrorInfo(
    code="ErrorSendAsDenied",
    message="The user account which was used to submit this request does not have the right to "
    "send mail on behalf of the specified sending account.",
    hint="grant the identity Send As on the mailbox, or send as a mailbox it may use",
)


@dataclass
class Gateway:
    env: dict[str, str]
    services: Services

    @property
    def ops(self) -> Operations:
        return self.services.operations

    async def fail(self, message_id: str, **request: Any) -> None:
        """A message accepted at intake (its record), then given up on by delivery and recorded
        by the poison function."""
        body = sample_request(**request)
        store = self.ops.store
        accepted = new_record(message_id, MessageStatus.queued, sender=body["from"])
        assert await store.create(accepted)
        envelope = Envelope(
            id=message_id, created_at=datetime.now(UTC), request=body, error=SEND_AS
        )
        envelope = await self.ops.queue.seal.seal(envelope)  # as delivery writes it
        record = await self.ops.record_failure(
            json.dumps(envelope.to_json()), queue_message_id=f"q-{message_id}"
        )
        assert record.status is MessageStatus.failed

    async def blob_exists(self, message_id: str) -> bool:
        """Whether a payload of this message is kept (its blobs are named ``<id>/...``)."""
        container = self.services.queue.blobs().get_container_client(
            self.services.settings.payload_container
        )
        try:
            async for _ in container.list_blobs(name_starts_with=f"{message_id}/"):
                return True
        except ResourceNotFoundError:
            return False
        return False


@pytest.fixture
async def gateway(
    azurite: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Gateway]:
    env = {
        **fresh_storage(azurite, "cli"),
        "MAILGW_TRANSPORT": "outbox",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no developer's local.settings.json gets in
    services = Services(Settings.from_env(env))
    yield Gateway(env, services)
    await cli.close_services(services)


async def mailgw(*argv: str) -> int:
    """``mailgw ARGV`` in a thread: main() runs its own event loop, as from a terminal."""
    return await asyncio.to_thread(cli.main, list(argv))


async def test_list_replay_purge(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    await gateway.fail("cli-one", **{"from": "alerts@contoso.com"})
    await gateway.fail("cli-two")

    assert await mailgw("failed", "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["ID", "FAILED", "AT", "(UTC)"]
    rows = {line.split()[0]: n for n, line in enumerate(table) if line.startswith("cli-")}
    assert set(rows) == {"cli-one", "cli-two"}
    assert table[rows["cli-one"]].endswith("ErrorSendAsDenied  alerts@contoso.com")
    assert table[rows["cli-one"] + 1] == f"    -> {SEND_AS.hint}"  # the whole hint, below

    assert await mailgw("failed", "list", "--json") == 0
    listed = {item["id"]: item for item in json.loads(capsys.readouterr().out)}
    assert listed["cli-two"]["lastError"] == SEND_AS.model_dump()
    assert listed["cli-two"]["from"] == "noreply@contoso.com"

    # replay: the record is queued again and its message is on the queue
    assert await mailgw("failed", "replay", "cli-one") == 0
    assert capsys.readouterr().out == "cli-one: queued (replay 1)\n"
    record = await gateway.ops.store.get("cli-one")
    assert record is not None and record.status is MessageStatus.queued and record.replays == 1
    queue = queue_client(gateway.services.settings.storage(), gateway.env["MAILGW_QUEUE"])
    async with queue:
        peeked = await queue.peek_messages(max_messages=32)
    envelopes = [json.loads(message.content) for message in peeked]
    assert [(e["id"], e["replay"]) for e in envelopes] == [("cli-one", 1)]
    kept = record.payload_ref
    assert kept is not None and kept.blob.startswith("cli-one/")
    assert envelopes[0]["payloadRef"]["blob"] == kept.blob  # the kept payload, re-sent

    # purge: the record and its kept payload are gone for good
    assert await gateway.blob_exists("cli-two")
    assert await mailgw("failed", "purge", "cli-two", "--yes") == 0
    assert capsys.readouterr().out == "purged 1 failed message(s)\n"
    assert await gateway.ops.store.get("cli-two") is None
    assert not await gateway.blob_exists("cli-two")
    assert await gateway.blob_exists("cli-one")  # still needed by its replay

    assert await mailgw("failed", "list") == 0
    assert capsys.readouterr().out == "no failed messages\n"
    assert await mailgw("failed", "replay", "cli-two") == 1  # purged: unknown now
    assert "cli-two: not replayed: No message cli-two is known" in capsys.readouterr().err


async def test_replay_all_and_purge_all(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    for number in range(3):
        await gateway.fail(f"cli-all-{number}")
    assert await mailgw("failed", "replay", "--all") == 0
    assert sorted(capsys.readouterr().out.splitlines()) == [
        f"cli-all-{n}: queued (replay 1)" for n in range(3)
    ]
    await gateway.fail("cli-again")
    assert await mailgw("failed", "purge", "--all", "--yes") == 0
    assert capsys.readouterr().out == "purged 1 failed message(s)\n"  # queued ones are kept
    assert await gateway.ops.failed() == []
    assert len(await gateway.ops.store.records()) == 3


async def test_settings_come_from_local_settings_json(
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing in the environment: the Values of local.settings.json in the current folder."""
    await gateway.fail("cli-file")
    for name in gateway.env:
        monkeypatch.delenv(name)
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": gateway.env}))
    assert await mailgw("failed", "list") == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("cli-file ")
    monkeypatch.setenv("MAILGW_STATE_TABLE", f"other{uuid.uuid4().hex[:8]}")  # the env wins
    assert await mailgw("failed", "list") == 0
    assert capsys.readouterr().out == "no failed messages\n"


async def test_store_cleanup_applies_retention_now(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = gateway.services.settings
    month_ago = datetime.now(UTC) - timedelta(days=settings.retention_days + 1)
    old_store = StateStore(settings.storage(), settings.state_table, clock=lambda: month_ago)
    past = Operations(gateway.services.queue, old_store, clock=lambda: month_ago)
    envelope = Envelope(
        id="cli-expired", created_at=month_ago, request=sample_request(), error=SEND_AS
    )
    try:
        text = await sealed(envelope, gateway.services.queue.seal)
        await past.record_failure(text, queue_message_id="q")
    finally:
        await old_store.close()
    await gateway.fail("cli-kept")
    assert await gateway.blob_exists("cli-expired")

    assert await mailgw("store", "cleanup") == 0
    assert capsys.readouterr().out == ("retention: deleted 1 expired record(s)\n")
    assert not await gateway.blob_exists("cli-expired")
    assert await gateway.blob_exists("cli-kept")
    assert [r.id for r in await gateway.ops.failed()] == ["cli-kept"]


async def test_the_environment_wins_over_local_settings_as_a_whole(
    gateway: Gateway, tmp_path: Path
) -> None:
    """As a user runs it, in a checkout whose local.settings.json points at Azurite: with the
    identity-based keys in the environment, the command uses them, not the file's connection
    string (the file's AzureWebJobsStorage is read first, so name by name it would win)."""
    await gateway.fail("cli-precedence")
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": gateway.env}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}

    from_file = await asyncio.to_thread(run_mailgw, "failed", "list", cwd=tmp_path, env=clean)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.splitlines()[1].startswith("cli-precedence ")
    azurite_queue = gateway.services.settings.storage().describe().split()[2].strip("(),")
    assert from_file.stderr.splitlines()[0] == (
        f"mailgw: storage account devstoreaccount1 ({azurite_queue}) from local.settings.json, "
        f"queue {gateway.env['MAILGW_QUEUE']}, state table {gateway.env['MAILGW_STATE_TABLE']}"
    )

    # Another account, identity-based, nothing listening (port 9): nothing leaves 127.0.0.1.
    elsewhere = {
        f"AzureWebJobsStorage__{service}ServiceUri": "https://127.0.0.1:9/opsaccount"
        for service in ("queue", "blob", "table")
    }
    elsewhere |= {
        "AzureWebJobsStorage__credential": "managedidentity",
        "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token",
        "IDENTITY_HEADER": "unused",
        "MAILGW_QUEUE": "ops-queue",
    }
    from_env = await asyncio.to_thread(
        run_mailgw, "failed", "list", cwd=tmp_path, env={**clean, **elsewhere}
    )
    assert from_env.stderr.splitlines()[0] == (
        "mailgw: storage account opsaccount (https://127.0.0.1:9/opsaccount, managed identity) "
        f"from the environment, queue ops-queue, state table {gateway.env['MAILGW_STATE_TABLE']}"
    )
    assert from_env.returncode == 1  # it tried that account (and failed), not Azurite
    assert "cli-precedence" not in from_env.stdout
    assert "storage failed" in from_env.stderr
