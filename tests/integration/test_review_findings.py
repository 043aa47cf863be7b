"""What an adversarial review of issue 9 found, as tests on real Azurite: each states what the
trust model (docs/trust-model.md) promises, and each failed before its fix (all but the
table-key test, whose 400 only real Azure Table storage gives: see its docstring)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient
from rigs import Rig, deliver_all, poison, poison_report

from mailgw.errors import MessageNotFound
from mailgw.models import Envelope, MessageStatus
from mailgw.settings import Settings
from support import pull, sample_request


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def nested(depth: int) -> Any:
    return json.loads("[" * depth + "]" * depth)


#: Forged envelopes that make the seal check itself raise (not InvalidEnvelope).
FORGED = {
    # hmac.compare_digest refuses non-ASCII str: TypeError
    "a non-ASCII seal": {"mailgw": 1, "id": "x", "createdAt": now_iso(), "raw": "a", "sig": "é"},
    # canonical() -> model_dump: pydantic's 'Maximum serialization depth exceeded' (ValueError)
    "a 256-deep request": {
        "mailgw": 1,
        "id": "x",
        "createdAt": now_iso(),
        "request": {"a": nested(256)},
        "sig": "00",
    },
}


# --- F1: a producer makes delivery, the poison function and the sweep raise ----------------------


@pytest.mark.parametrize("document", list(FORGED.values()), ids=list(FORGED))
async def test_a_forged_envelope_that_breaks_the_seal_check_is_recorded_by_delivery(
    rig: Rig, document: dict[str, Any]
) -> None:
    outcome = await rig.delivery.handle(json.dumps(document), queue_message_id="q-forged")
    assert outcome.action == "poisoned"
    record = await rig.store.get("q-forged")
    assert record is not None and record.last_error is not None
    assert record.last_error.code == "mailgw/invalid-envelope"


@pytest.mark.parametrize("document", list(FORGED.values()), ids=list(FORGED))
async def test_the_poison_function_never_raises_on_a_forged_envelope(
    rig: Rig, document: dict[str, Any]
) -> None:
    record = await rig.operations.record_failure(json.dumps(document), queue_message_id="q-pp")
    assert record.status is MessageStatus.failed


async def test_one_hostile_message_in_poison_poison_does_not_block_the_sweep(rig: Rig) -> None:
    """A real failure (storage was down) waits in -poison-poison behind a producer's forgery that
    the host moved there; the sweep must still record the real one."""
    real_report = await poison_report(rig, "m-real")
    pp = rig.queue.queue(rig.queue.poison_poison_queue_name)
    await pp.create_queue()
    await pp.send_message(json.dumps(FORGED["a non-ASCII seal"]))  # moved there by the host
    await pp.send_message(real_report.content)
    await rig.operations.sweep_poison_poison()  # raises TypeError before
    record = await rig.store.get("m-real")
    assert record is not None and record.reported


async def test_a_message_that_is_not_base64_does_not_block_the_sweep(
    rig: Rig, settings: Settings
) -> None:
    """With messageEncoding base64 the host moves a message it cannot decode to <queue>-poison
    at once, and from there (same failure) to -poison-poison. The sweep decodes Base64 too."""
    real_report = await poison_report(rig, "m-real2")
    name = rig.queue.poison_poison_queue_name
    raw = QueueClient.from_connection_string(settings.storage().connection_string or "", name)
    try:
        await raw.create_queue()
        await raw.send_message("this is {not} base64!")  # a producer's text, unencoded
    finally:
        await raw.close()
    await rig.queue.queue(name).send_message(real_report.content)
    await rig.operations.sweep_poison_poison()  # raises azure.core DecodeError before
    record = await rig.store.get("m-real2")
    assert record is not None and record.reported


# --- F2: a producer's bare request nested 256 deep crash-loops delivery ---------------------------


async def test_a_deeply_nested_bare_request_is_poisoned_not_crash_looped(rig: Rig) -> None:
    text = json.dumps({**sample_request(), "metadata": {"a": "b"}, "x": nested(256)})
    outcome = await rig.delivery.handle(text, queue_message_id="q-deep")
    assert outcome.action == "poisoned"  # before: ValueError from _report's enqueue (to_json)


# --- F3: a late poison report undoes an operator's replay, and the replay copy is dropped --------


async def test_a_replay_made_before_the_poison_function_ran_is_not_undone(rig: Rig) -> None:
    await poison(rig, "m-race")
    # The operator sees 'failed' and replays at once (the promise: replay works from
    # the moment it shows failed) -- before the poison trigger has handled the report.
    replayed = await rig.operations.replay("m-race")
    assert replayed.status is MessageStatus.queued
    report = await pull(rig.queue, rig.queue.poison_queue_name)
    assert report is not None
    await rig.operations.record_failure(report.content, queue_message_id=report.id)
    record = await rig.store.get("m-race")
    assert record is not None
    assert record.status is MessageStatus.queued  # before: failed again
    assert await deliver_all(rig) == ["sent"]  # before: ["duplicate"], nothing sent
    assert len(rig.transport.sent) == 1


# --- F4: a producer's message that crash-loops is recorded under another id ----------------------


async def test_a_crash_looping_producer_message_is_failed_under_its_own_id(rig: Rig) -> None:
    """docs/trust-model.md: a producer finds its message by its queue message id. The host
    copies a message that crashed maxDequeueCount times to the poison queue under a NEW queue
    message id; the failure must still be recorded under the producer's id."""
    producer_id = "q-producer"
    text = json.dumps(sample_request())
    rig.transport.failures.extend([RuntimeError("worker crashed")] * 5)
    with pytest.raises(RuntimeError):
        await rig.delivery.handle(text, queue_message_id=producer_id, dequeue_count=1)
    # It comes back unfinished: carried on sealed, under the same id (the bare one is done).
    adopted = await rig.delivery.handle(text, queue_message_id=producer_id, dequeue_count=2)
    assert adopted.action == "adopted"
    copy = await pull(rig.queue)
    assert copy is not None
    for attempt in range(1, 4):
        with pytest.raises(RuntimeError):
            await rig.delivery.handle(copy.content, queue_message_id=copy.id, dequeue_count=attempt)
    # The host moves the sealed copy, unchanged, to <queue>-poison: a new queue message id, but
    # the envelope names the producer's.
    await rig.operations.record_failure(copy.content, queue_message_id="q-poison-copy")
    record = await rig.store.get(producer_id)
    assert record is not None
    assert record.status is MessageStatus.failed  # before: 'sending' for good
    assert await rig.store.get("q-poison-copy") is None


# --- F5: an HTTP caller gets a 5xx for an id the table service refuses as a key ------------------


@pytest.mark.parametrize(
    "message_id",
    ["a\\b", "a#b", "a?b", "a\x01b", "x" * 1100],
    ids=["bslash", "hash", "q", "ctl", "long"],
)
async def test_an_id_the_table_refuses_is_unknown_not_a_crash(rig: Rig, message_id: str) -> None:
    """GET /api/v1/messages/{id} and the replay route pass the id to the table as a key. Azure
    Table answers 400 for '/', '\\', '#', '?', control characters and keys over 1 KiB (Azurite
    is lenient), so such an id is unknown before storage is asked."""
    assert await rig.operations.find(message_id) is None
    with pytest.raises(MessageNotFound):
        await rig.operations.replay(message_id)


# --- F6: a losing duplicate's copy that crash-loops fails the winner with the loser's body --------


async def test_a_crash_looped_copy_of_another_body_does_not_fail_the_keyed_winner(
    rig: Rig, intake: Any
) -> None:
    """Idempotency-Key K: the first body wins (scheduled); a second body's copy was not taken back
    (a worker had received it) and crash-looped (storage down during _admit), so the host moved
    it, sealed and unchanged, to the poison queue. Delivery would call it 'another body won its
    key'; record_failure must not mark the winner failed with the loser's payload."""
    from datetime import timedelta

    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    winner = await intake.submit(
        json.dumps(sample_request(subject="winner", sendAt=send_at)).encode(),
        content_type="application/json",
        idempotency_key="order-43",
    )
    await intake.drain()
    loser = await rig.queue.seal.seal(
        Envelope(
            id=winner.id,
            created_at=datetime.now(UTC),
            request=sample_request(subject="loser"),
            request_hash="f" * 64,
        )
    )
    await rig.operations.record_failure(json.dumps(loser.to_json()), queue_message_id="q-moved")
    record = await rig.store.get(winner.id)
    assert record is not None
    assert record.status is MessageStatus.scheduled  # before: failed, with the loser's payload


# --- F7: a valid request whose metadata is within the contract's limits cannot be recorded -----

#: Within the contract (32 entries, keys <= 64, values <= 1,024 characters), but its record's
#: metadata property, JSON with \u escapes, is over Azure Table's 64 KiB (32K UTF-16) limit.
BIG_METADATA = {f"k{i:02d}": "é" * 1024 for i in range(6)}


async def test_metadata_within_the_contract_is_accepted_with_an_idempotency_key(
    intake: Any,
) -> None:
    result = await intake.submit(  # before: 503 QueueUnavailable, on every retry
        json.dumps(sample_request(metadata=BIG_METADATA)).encode(),
        content_type="application/json",
        idempotency_key="meta-1",
    )
    assert result.id


async def test_metadata_within_the_contract_is_sent_after_its_202(rig: Rig, intake: Any) -> None:
    await intake.submit(  # 202: the record is written in the background (and fails)
        json.dumps(sample_request(metadata=BIG_METADATA)).encode(),
        content_type="application/json",
    )
    await intake.drain()
    assert await deliver_all(rig) == ["sent"]  # before: HttpResponseError PropertyValueTooLarge


async def test_a_producer_request_with_a_long_unknown_field_is_poisoned_not_crash_looped(
    rig: Rig,
) -> None:
    """The validation summary echoes the field name into lastError (over 32K characters)."""
    text = json.dumps({**sample_request(), "x" * 40_000: 1})
    outcome = await rig.delivery.handle(text, queue_message_id="q-long")  # before: 400 from table
    assert outcome.action == "poisoned"


async def test_a_worst_case_record_fits_an_azure_table_entity(rig: Rig) -> None:
    """Every limit of the contract at once, in characters that cost the most (an emoji is two
    UTF-16 units; Azure Table allows 32K of them per property and 1 MiB per entity)."""
    from mailgw.models import MAX_ERROR_TEXT, MAX_METADATA_TOTAL, ErrorInfo
    from mailgw.state import MAX_HISTORY, Attempt
    from support import new_record

    emoji = "\U0001f4e8"
    per_value = MAX_METADATA_TOTAL // 32 - 3
    metadata = {f"k{i:02d}": emoji * per_value for i in range(32)}
    assert sum(len(k) + len(v) for k, v in metadata.items()) <= MAX_METADATA_TOTAL
    long_text = emoji * (MAX_ERROR_TEXT * 2)
    error = ErrorInfo(code="smtp/550-5.1.10", message=long_text, hint=long_text)
    assert len(error.message) <= MAX_ERROR_TEXT
    now = datetime.now(UTC)
    record = new_record(
        "m-worst",
        MessageStatus.failed,
        metadata=metadata,
        last_error=error,
        history=[Attempt(at=now, outcome="retry", code=error.code)] * MAX_HISTORY,
    )
    assert await rig.store.create(record)
    stored = await rig.store.get("m-worst")
    assert stored is not None and stored.metadata == metadata and stored.last_error == error
