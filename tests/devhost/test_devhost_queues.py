"""Queue triggers on real Azurite: delivery, retries, poison queue, lease renewal, concurrency.

One dev host serves ``apps/queue_app`` for the module. Its queue names are app settings resolved
from ``%SETTING%`` expressions, unique per run; host.json is tuned through the host's own
``AzureFunctionsJobHost__`` overrides.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient
from devhost_support import DevHostProcess, StartDevHost

from mailgw.storage import StorageConnection, queue_client, queue_service_client
from support import wait_until_async

MAX_DEQUEUE = 3
VISIBILITY_SECONDS = 2
BATCH_SIZE = 4
NEW_BATCH_THRESHOLD = 2
LEASE_SECONDS = 2

QUEUES = {
    name: f"{prefix}-{uuid.uuid4().hex[:10]}"
    for name, prefix in [
        ("RECORD_QUEUE", "rec"),
        ("FAILING_QUEUE", "fail"),
        ("SLOW_QUEUE", "slow"),
        ("PREPOISONED_QUEUE", "pre"),
        ("HELD_QUEUE", "held"),
    ]
}
#: messages waiting in HELD_QUEUE before the host starts, each held until the test releases it
HELD = [f"h{i}" for i in range(12)]
PREPOISONED_TEXT = base64.b64encode(b"dequeued too often").decode()


def _connection(azurite: Any) -> StorageConnection:
    settings = {"AzureWebJobsStorage": azurite.connection_string}
    return StorageConnection.from_settings("AzureWebJobsStorage", settings)


async def _prepoison(azurite: Any) -> None:
    """Leave a message whose dequeue count already exceeds maxDequeueCount, before the host runs."""
    service = queue_service_client(_connection(azurite))
    async with service, service.get_queue_client(QUEUES["PREPOISONED_QUEUE"]) as queue:
        await queue.create_queue()
        await queue.send_message(PREPOISONED_TEXT)
        for _ in range(MAX_DEQUEUE + 1):
            received = await queue.receive_message(visibility_timeout=30)
            assert received is not None
            await queue.update_message(received, visibility_timeout=0)


async def _prefill_held(azurite: Any) -> None:
    """All of HELD is in the queue when the host first looks, so its first batch is full."""
    async with queue_client(_connection(azurite), QUEUES["HELD_QUEUE"]) as queue:
        await queue.create_queue()
        for name in HELD:
            await queue.send_message(json.dumps({"hold": name}))


@pytest.fixture(scope="module")
def host(azurite: Any, start_devhost: StartDevHost) -> DevHostProcess:
    asyncio.run(_prepoison(azurite))
    asyncio.run(_prefill_held(azurite))
    prefix = "AzureFunctionsJobHost__extensions__queues__"
    return start_devhost(
        "queue_app",
        AzureWebJobsStorage=azurite.connection_string,
        DEVHOST_QUEUE_LEASE_SECONDS=str(LEASE_SECONDS),
        **QUEUES,
        **{
            f"{prefix}maxDequeueCount": str(MAX_DEQUEUE),
            f"{prefix}visibilityTimeout": f"00:00:0{VISIBILITY_SECONDS}",
            f"{prefix}maxPollingInterval": "00:00:00.200",
            f"{prefix}batchSize": str(BATCH_SIZE),
            f"{prefix}newBatchThreshold": str(NEW_BATCH_THRESHOLD),
        },
    )


@pytest.fixture
async def queues(azurite: Any) -> AsyncIterator[Callable[..., QueueClient]]:
    """Open queue clients: Base64 ones from mailgw.storage (like producers), or raw ones."""
    connection = _connection(azurite)
    service = queue_service_client(connection)
    opened: list[QueueClient] = []

    def open_queue(name: str, *, raw: bool = False) -> QueueClient:
        client = service.get_queue_client(name) if raw else queue_client(connection, name)
        opened.append(client)
        return client

    yield open_queue
    for client in opened:
        await client.close()
    await service.close()


async def _poison_texts(queue: QueueClient) -> list[str]:
    return [str(m.content) for m in await queue.peek_messages(max_messages=32)]


async def _empty(queue: QueueClient) -> bool:
    """No message at all, visible or leased: what was processed has been deleted."""
    return (await queue.get_queue_properties()).approximate_message_count == 0


async def test_queue_names_come_from_settings(host: DevHostProcess) -> None:
    functions = {f["name"]: f for f in host.get_json("/admin/functions")}
    assert functions["recorder"]["queueName"] == QUEUES["RECORD_QUEUE"]
    assert functions["recorder"]["connection"] == "AzureWebJobsStorage"
    assert f"Created queue '{QUEUES['RECORD_QUEUE']}'" in host.log()


async def test_base64_text_arrives_byte_exact(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    text = json.dumps({"subject": "Olá ✓", "n": 1}, ensure_ascii=False)
    queue = queues(QUEUES["RECORD_QUEUE"])
    sent = await queue.send_message(text)  # mailgw.storage encodes Base64, like the host

    async def delivered() -> list[dict[str, Any]]:
        return [r for r in host.records("recorder") if r["id"] == sent.id]

    (record,) = await wait_until_async(delivered, what="the recorder to run")
    assert bytes.fromhex(record["body_hex"]) == text.encode("utf-8")
    assert record["dequeue_count"] == 1
    assert record["is_func_queue_message"] is True
    assert record["pop_receipt"] and record["insertion_time"] and record["expiration_time"]
    assert record["time_next_visible"]
    await wait_until_async(lambda: _empty(queue), what="the message to be deleted")


async def test_binary_body_is_passed_as_bytes(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    payload = b"\xff\x00\xfe binary"
    raw = queues(QUEUES["RECORD_QUEUE"], raw=True)
    sent = await raw.send_message(base64.b64encode(payload).decode())

    async def delivered() -> list[dict[str, Any]]:
        return [r for r in host.records("recorder") if r["id"] == sent.id]

    (record,) = await wait_until_async(delivered, what="the recorder to run")
    assert bytes.fromhex(record["body_hex"]) == payload


async def test_failures_are_retried_after_visibility_timeout_then_poisoned(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    queue = queues(QUEUES["FAILING_QUEUE"])
    raw_poison = queues(f"{QUEUES['FAILING_QUEUE']}-poison", raw=True)
    sent = await queue.send_message("doomed ✗")

    async def poisoned() -> list[str]:
        try:
            return await _poison_texts(raw_poison)
        except Exception:  # the poison queue is created on demand
            return []

    texts = await wait_until_async(poisoned, timeout=30, what="the poison queue")
    assert texts == [base64.b64encode("doomed ✗".encode()).decode()]  # the original text
    attempts = [r for r in host.records("always_fails") if r["id"] == sent.id]
    assert [a["dequeue_count"] for a in attempts] == list(range(1, MAX_DEQUEUE + 1))
    assert all(a["thread"].startswith("worker") for a in attempts)
    gaps = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(attempts)]
    assert all(gap >= VISIBILITY_SECONDS - 0.1 for gap in gaps), gaps
    assert await _empty(queue)
    assert "Message has reached MaxDequeueCount of 3" in host.log()


async def test_message_dequeued_too_often_is_poisoned_without_running(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    raw_poison = queues(f"{QUEUES['PREPOISONED_QUEUE']}-poison", raw=True)

    async def poisoned() -> list[str]:
        try:
            return await _poison_texts(raw_poison)
        except Exception:
            return []

    assert await wait_until_async(poisoned, what="the poison queue") == [PREPOISONED_TEXT]
    assert host.records("prepoisoned") == []


async def test_invalid_base64_goes_to_poison_at_once(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    raw = queues(QUEUES["RECORD_QUEUE"], raw=True)
    raw_poison = queues(f"{QUEUES['RECORD_QUEUE']}-poison", raw=True)
    sent = await raw.send_message("not base64 ✗!")

    async def poisoned() -> list[str]:
        try:
            return [t for t in await _poison_texts(raw_poison) if t == "not base64 ✗!"]
        except Exception:
            return []

    await wait_until_async(poisoned, what="the poison queue")
    assert not [r for r in host.records("recorder") if r["id"] == sent.id]
    assert "Message decoding has failed! Check MessageEncoding settings" in host.log()


async def test_lease_is_renewed_while_a_long_function_runs(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    queue = queues(QUEUES["SLOW_QUEUE"])
    sent = await queue.send_message(json.dumps({"seconds": LEASE_SECONDS * 2}))

    async def finished() -> list[dict[str, Any]]:
        return [r for r in host.records("slow") if r["id"] == sent.id and r["phase"] == "end"]

    await wait_until_async(finished, timeout=30, what="the slow function to finish")
    await wait_until_async(lambda: _empty(queue), what="the message to be deleted")
    starts = [r for r in host.records("slow") if r["id"] == sent.id and r["phase"] == "start"]
    assert len(starts) == 1  # never redelivered although it ran twice as long as the lease


async def test_a_function_that_blocks_its_event_loop_keeps_its_lease(
    host: DevHostProcess, queues: Callable[..., QueueClient]
) -> None:
    """The Functions host renews leases from outside the worker; so does the dev host (its own
    thread): a function holding the loop for twice the lease is still not handed out again."""
    queue = queues(QUEUES["SLOW_QUEUE"])
    sent = await queue.send_message(json.dumps({"seconds": LEASE_SECONDS * 2, "block": True}))

    async def finished() -> list[dict[str, Any]]:
        return [r for r in host.records("slow") if r["id"] == sent.id and r["phase"] == "end"]

    await wait_until_async(finished, timeout=30, what="the blocking function to finish")
    await wait_until_async(lambda: _empty(queue), what="the message to be deleted")
    starts = [r for r in host.records("slow") if r["id"] == sent.id and r["phase"] == "start"]
    assert len(starts) == 1


def _held(host: DevHostProcess, phase: str) -> list[dict[str, Any]]:
    return [r for r in host.records("held") if r["phase"] == phase]


def _release(host: DevHostProcess, *names: str) -> None:
    for name in names:
        (host.out_dir / f"release-{name}").touch()


async def test_concurrency_is_bounded_by_batch_size_and_threshold(host: DevHostProcess) -> None:
    """Every message runs until released, so what runs at once is set by the host's batching
    alone: a full first batch, a new one only when no more than newBatchThreshold still run."""

    async def started(count: int) -> list[dict[str, Any]]:
        found = _held(host, "start")
        return found if len(found) >= count else []

    try:
        first = await wait_until_async(lambda: started(BATCH_SIZE), what="the first batch")
        assert [r["running"] for r in first] == [1, 2, 3, 4]  # one batch, and no more ...
        _release(host, first[0]["hold"], first[1]["hold"])  # ... until only two still run
        both = BATCH_SIZE + NEW_BATCH_THRESHOLD
        joined = await wait_until_async(lambda: started(both), what="the second batch")
        assert [r["running"] for r in joined[BATCH_SIZE:]] == [3, 4, 5, 6]
        assert {r["hold"] for r in _held(host, "end")} == {first[0]["hold"], first[1]["hold"]}
    finally:
        _release(host, *HELD)
    done = await wait_until_async(
        lambda: _ended(host, len(HELD)), timeout=30, what="every held message to finish"
    )
    assert sorted(r["hold"] for r in done) == sorted(HELD)
    starts = _held(host, "start")
    assert len(starts) == len(HELD)  # none was handed out twice
    assert max(r["running"] for r in starts) == BATCH_SIZE + NEW_BATCH_THRESHOLD


async def _ended(host: DevHostProcess, count: int) -> list[dict[str, Any]]:
    found = _held(host, "end")
    return found if len(found) >= count else []
