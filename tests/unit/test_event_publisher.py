"""The publisher's promises with fake sinks (Azurite and the Event Grid stand-in run the real ones
in tests/integration and tests/e2e): a hanging or failing sink costs a delivery at most the
timeout, never an exception, and what it did not take is kept for exactly that sink."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from unit_helpers import NOW, valid_request

from mailgw.events.batching import Batcher
from mailgw.events.publisher import Events
from mailgw.models import MessageStatus, SendRequest
from mailgw.state import machine


class Sink:
    def __init__(self, name: str, behaviour: str = "ok") -> None:
        self.name, self.behaviour = name, behaviour
        self.published: list[Mapping[str, Any]] = []

    async def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        if self.behaviour == "fail":
            raise RuntimeError("503 Service Unavailable")
        self.published.extend(events)

    async def close(self) -> None:
        return None


class Kept:
    def __init__(self, fail: bool = False) -> None:
        self.rows: list[tuple[list[str], list[str]]] = []
        self.fail = fail

    async def keep(
        self, events: Sequence[Mapping[str, Any]], sinks: Sequence[str], expires_at: datetime
    ) -> None:
        if self.fail:
            raise OSError("the table is down too")
        self.rows.append(([str(e["type"]) for e in events], list(sinks)))


def record() -> Any:
    request = SendRequest.model_validate(valid_request(), context={"now": NOW})
    return machine.accepted(
        "m-1", MessageStatus.queued, request, now=NOW, retention=timedelta(days=1)
    )


async def test_a_hanging_sink_is_given_up_after_the_timeout_and_its_event_kept() -> None:
    good, hanging, kept = Sink("queue"), Sink("eventgrid", "hang"), Kept()
    events = Events([good, hanging], kept, timeout_seconds=0.05)  # type: ignore[arg-type]
    await asyncio.wait_for(events.accepted(record()), timeout=5)
    assert [e["type"] for e in good.published] == ["mailgw.message.accepted"]
    assert kept.rows == [(["mailgw.message.accepted"], ["eventgrid"])]


async def test_a_slow_sink_holds_intakes_record_write_only_briefly() -> None:
    """Intake writes the record after publishing ``accepted``; a status lookup right after the
    202 waits for it only a few seconds, so acceptance gives a sink less time than delivery."""
    kept = Kept()
    events = Events(
        [Sink("eventgrid", "hang")],
        kept,  # type: ignore[arg-type]
        timeout_seconds=3600,
        accept_timeout_seconds=0.05,
    )
    await asyncio.wait_for(events.accepted(record()), timeout=5)
    assert kept.rows == [(["mailgw.message.accepted"], ["eventgrid"])]


async def test_nothing_raises_into_the_caller_even_when_nothing_can_be_kept() -> None:
    events = Events([Sink("queue", "fail")], Kept(fail=True))  # type: ignore[arg-type]
    await events.accepted(record())  # logged, not raised: the mail goes on


async def test_without_sinks_emitting_does_nothing() -> None:
    kept = Kept()
    await Events((), kept).accepted(record())  # type: ignore[arg-type]
    assert kept.rows == []


async def test_a_batcher_sends_what_arrives_during_a_request_in_the_next_one() -> None:
    sent: list[list[str]] = []
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def send(batch: list[Mapping[str, Any]]) -> None:
        sent.append([str(e["id"]) for e in batch])
        if len(sent) == 1:
            in_flight.set()
            await release.wait()

    batcher = Batcher(send)
    first = asyncio.create_task(batcher.submit([{"id": "a"}]))
    await in_flight.wait()
    later = [asyncio.create_task(batcher.submit([{"id": str(i)}])) for i in range(5)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *later)
    assert sent == [["a"], ["0", "1", "2", "3", "4"]]


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_an_event_submitted_as_the_last_sender_finishes_is_still_sent(in_flight: int) -> None:
    """A submit that runs after every sender saw nothing left to send, but before their tasks
    finished, must start a sender of its own (a lost wake-up would leave it waiting forever)."""
    sent: list[str] = []
    ready = asyncio.Event()

    async def send(batch: list[Mapping[str, Any]]) -> None:
        sent.extend(str(e["id"]) for e in batch)
        ready.set()  # wakes the submitter below before the sender's loop ends

    batcher = Batcher(send, max_in_flight=in_flight)

    async def submit_when_ready() -> None:
        await ready.wait()
        await batcher.submit([{"id": "late"}])

    late = asyncio.create_task(submit_when_ready())
    await asyncio.gather(*(batcher.submit([{"id": str(i)}]) for i in range(in_flight)))
    async with asyncio.timeout(5):
        await late
    assert sent[-1] == "late"


async def test_an_event_whose_caller_gave_up_is_not_sent_later() -> None:
    """The publisher keeps a timed-out event to publish again: the batcher must not send it too."""
    sent: list[str] = []
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def send(batch: list[Mapping[str, Any]]) -> None:
        sent.extend(str(e["id"]) for e in batch)
        in_flight.set()
        await release.wait()

    batcher = Batcher(send, max_in_flight=1)
    first = asyncio.create_task(batcher.submit([{"id": "first"}]))
    await in_flight.wait()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await batcher.submit([{"id": "gave-up"}])
    kept = asyncio.create_task(batcher.submit([{"id": "kept"}]))
    release.set()
    await asyncio.gather(first, kept)
    assert sent == ["first", "kept"]


async def test_a_cancelled_sender_fails_its_batch_instead_of_leaving_it_waiting() -> None:
    started = asyncio.Event()

    async def send(batch: list[Mapping[str, Any]]) -> None:
        started.set()
        await asyncio.Event().wait()  # never answers

    batcher = Batcher(send)
    waiter = asyncio.create_task(batcher.submit([{"id": "a"}]))
    await started.wait()
    for sender in list(batcher._senders):
        sender.cancel()
    async with asyncio.timeout(5):
        outcome = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(outcome[0], asyncio.CancelledError)


async def test_a_batcher_respects_the_size_limit_and_reports_failures_to_each_caller() -> None:
    batches: list[int] = []

    async def send(batch: list[Mapping[str, Any]]) -> None:
        batches.append(len(batch))
        raise RuntimeError("429")

    batcher = Batcher(send, max_events=2)
    outcomes = await asyncio.gather(
        *(batcher.submit([{"id": str(i)}]) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert sum(batches) == 5 and max(batches) <= 2
