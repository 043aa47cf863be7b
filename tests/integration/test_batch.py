"""Batches on real Azurite (mailgw/batch.py): each item on its own, and a key over the whole."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from mailgw.answers import AnswerStore
from mailgw.batch import BatchIntake
from mailgw.errors import IdempotencyKeyReused, InvalidRequest, QueueUnavailable
from mailgw.ids import keyed_message_id
from mailgw.intake import Intake
from mailgw.models import Envelope, SubmitResult
from mailgw.queue import MailQueue, SentMessage
from mailgw.settings import Settings
from mailgw.store import StateStore
from support import TEST_SEAL, depth, sample_request


class RefusingQueue(MailQueue):
    """Refuses (as an outage would) every message whose subject is in ``refuse``."""

    refuse: set[str]

    async def enqueue(self, envelope: Envelope, **options: Any) -> SentMessage:
        if (envelope.request or {}).get("subject") in self.refuse:
            raise ConnectionError("queue unreachable")
        return await super().enqueue(envelope, **options)


@pytest.fixture
async def queue(settings: Settings) -> Any:
    refusing = RefusingQueue(
        settings.storage(), settings.queue, settings.payload_container, TEST_SEAL
    )
    refusing.refuse = set()
    yield refusing
    await refusing.close()


@pytest.fixture
def batch(settings: Settings, queue: RefusingQueue, store: StateStore) -> BatchIntake:
    return BatchIntake(Intake(settings, queue, store), AnswerStore(store))


def _body(*subjects: str, **overrides: Any) -> bytes:
    return json.dumps(
        {"messages": [sample_request(subject=s, **overrides) for s in subjects]}
    ).encode()


def _ids(result: Any) -> list[str | None]:
    return [item.id if isinstance(item, SubmitResult) else None for item in result.items]


async def test_items_are_accepted_and_refused_on_their_own(
    batch: BatchIntake, queue: MailQueue, store: StateStore
) -> None:
    items = [sample_request(subject="a"), sample_request(to=[]), sample_request(subject="c")]
    result = await batch.submit(json.dumps({"messages": items}).encode())
    await batch.intake.drain()
    ok_a, refused, ok_c = result.items
    assert isinstance(ok_a, SubmitResult) and isinstance(ok_c, SubmitResult)
    assert isinstance(refused, InvalidRequest)
    assert [e.field for e in refused.errors] == ["to"]
    assert await depth(queue) == 2
    assert all([await store.get(ok_a.id), await store.get(ok_c.id)])


async def test_a_keyed_batch_answers_its_first_answer(
    batch: BatchIntake, queue: MailQueue, store: StateStore
) -> None:
    body = _body("a", "b")
    first = await batch.submit(body, idempotency_key="k-1")
    again = await batch.submit(body, idempotency_key="k-1")
    assert _ids(again) == _ids(first)
    assert await depth(queue) == 2
    records = [await store.get(str(i)) for i in _ids(first)]
    assert all(r is not None for r in records)  # written before the answer
    with pytest.raises(IdempotencyKeyReused):
        await batch.submit(_body("a", "other"), idempotency_key="k-1")
    other = await batch.submit(body, idempotency_key="k-1", owner="another-app")
    assert set(_ids(other)).isdisjoint(_ids(first))  # a key is its app's


async def test_concurrent_duplicates_make_one_batch(batch: BatchIntake, queue: MailQueue) -> None:
    body = _body("a", "b", "c")
    results = await asyncio.gather(*(batch.submit(body, idempotency_key="same") for _ in range(4)))
    assert len({tuple(_ids(r)) for r in results}) == 1
    assert await depth(queue) == 3


async def test_items_the_queue_refused_are_run_again_by_a_retry(
    batch: BatchIntake, queue: RefusingQueue
) -> None:
    queue.refuse = {"b"}
    body = _body("a", "b")
    first = await batch.submit(body, idempotency_key="k-2")
    assert isinstance(first.items[0], SubmitResult)
    assert isinstance(first.items[1], QueueUnavailable)
    queue.refuse = set()
    retried = await batch.submit(body, idempotency_key="k-2")
    assert all(isinstance(i, SubmitResult) for i in retried.items)
    assert _ids(retried)[0] == _ids(first)[0]
    assert await depth(queue) == 2  # "a" once, "b" once
    assert _ids(await batch.submit(body, idempotency_key="k-2")) == _ids(retried)


async def test_a_batch_the_queue_refused_whole_is_a_503(
    batch: BatchIntake, queue: RefusingQueue
) -> None:
    queue.refuse = {"a", "b"}
    with pytest.raises(QueueUnavailable):
        await batch.submit(_body("a", "b"), idempotency_key="k-3")
    with pytest.raises(QueueUnavailable):
        await batch.submit(_body("a", "b"))
    queue.refuse = set()
    retried = await batch.submit(_body("a", "b"), idempotency_key="k-3")
    assert retried.accepted == 2


async def test_a_batch_whose_first_request_crashed_is_completed_with_the_same_ids(
    batch: BatchIntake, queue: MailQueue, settings: Settings
) -> None:
    """The first request claimed the key and queued its first item, then died: the retry waits
    for its answer, then finishes the batch with the ids the key stands for."""
    body = _body("a", "b")
    answer_id = keyed_message_id("k-4", 1, scope="\x00batch")
    now = batch.intake.clock()
    assert await batch.answers.claim(
        answer_id,
        _fingerprint(body),
        now=now,
        key_expires_at=now + settings.idempotency_window,
        expires_at=now + settings.retention,
    )
    batch.answer_wait = timedelta(milliseconds=200)
    result = await batch.submit(body, idempotency_key="k-4")
    assert _ids(result) == [keyed_message_id("k-4", 1, scope=f"\x00batch\x00{i}") for i in (0, 1)]
    assert await depth(queue) == 2


def _fingerprint(body: bytes) -> str:
    from mailgw.intake import request_hash

    return request_hash(json.loads(body))


async def test_a_large_answer_is_kept(batch: BatchIntake) -> None:
    """500 refused items, each with its field errors: more than one table property holds."""
    items = [sample_request(to=[f"bad-{i}-" + "x" * 200], cc=["also bad"]) for i in range(500)]
    body = json.dumps({"messages": items}).encode()
    first = await batch.submit(body, idempotency_key="k-5")
    again = await batch.submit(body, idempotency_key="k-5")
    assert first.accepted == again.accepted == 0
    assert [i.errors for i in again.items] == [i.errors for i in first.items]  # type: ignore[union-attr]


async def test_a_template_store_out_of_reach_is_a_retryable_503(
    settings: Settings, queue: MailQueue, store: StateStore
) -> None:
    from mailgw.errors import TemplatesUnavailable
    from mailgw.templates import TemplateStore
    from support import DEAD_STORAGE

    dead = Settings.from_env({**settings.env, "AzureWebJobsStorage": DEAD_STORAGE})
    templates = TemplateStore(dead.storage(), "mail-templates")
    batch = BatchIntake(Intake(settings, queue, store, templates=templates), AnswerStore(store))
    item = {k: v for k, v in sample_request(template="receipt").items()}
    for part in ("subject", "text", "html"):
        item.pop(part)
    try:
        with pytest.raises(TemplatesUnavailable):
            await batch.submit(json.dumps({"messages": [item]}).encode())
    finally:
        await templates.close()
    assert await depth(queue) == 0
