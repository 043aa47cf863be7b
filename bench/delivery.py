"""Delivery throughput through the Graph transport against the ideal for the allowed concurrency.

The Graph stand-in answers every request after 100 ms; messages come from 20 mailboxes. The worker
runs as the Functions host would drive one instance: at most batchSize + newBatchThreshold (24)
deliveries in flight, each through ``Delivery.handle`` → ``GraphTransport`` (msgraph-sdk,
azure-identity, the per-mailbox limiter). The baseline, measured in the same run against the same
stand-in, is a bare httpx client posting the same sendMail JSON at the same concurrency: what the
allowed concurrency permits when the client costs nothing. Runs alternate (every other round in
reverse order, each run on a fresh table), so noise and Azurite's growth hit all alike.

The delivery path is measured twice: with the message state kept in memory (the Graph path's own
efficiency, the ratio the goal is about) and with the state in Azure Tables on the same Azurite,
which shares this machine's two cores with the worker and the stand-in (reported beside it).
Each message has the record intake writes when it accepts a message (written before the clock
starts), as every message sent through the API has.

With the state in Tables it is measured again with pacing on (mailgw/pacing: every mailbox's
budgets leased in chunks from the same table, docs/operations.md "Budgets and pacing"), as
production runs it; the other gateway modes run unpaced, to isolate what they measure. Each worker
reports its CPU time per message over the timed run (``time.process_time``), and the paced run its
budget-table requests per message (goal: under one).

Outcome events (docs/events.md) are measured on both: to the Event Grid stand-in (the sink for
volume; concurrent deliveries share its batch requests), and to a storage queue on the same Azurite
(one more storage request per message). The goal: events cost at most 10% of the delivery ratio.
Each cost is also paired round by round (an events mode runs next to its base, against drift
between rounds that is larger than the cost), and given as the CPU per message of the worker and
of the servers it talks to, each read from /proc over the timed run: on two shared cores,
throughput follows that total.

    .venv/bin/python bench/delivery.py [--messages 480] [--rounds 4] [--modes bare+tables,...]

A ceiling is measured beside them: the bare client with the three table requests an exactly-once
delivery makes around each send (read the row, mark it sending, mark it sent; ETag-conditional),
and no gateway code: the most any delivery with its state in Tables can reach on this machine. It
is measured with events on as well, each message's event prepared in advance and handed straight
to the sink (the SDK's client): the least any delivery that publishes its events must add.

Prints ``delivery ratio: X.XX`` (achieved / ideal; goal at least 0.8), the ceiling, the ratio with
Table state and pacing on, the ratios with events on against the ratio without, the CPU per message
of the worker and of each server, and the worker's peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

LATENCY = 0.1
MAILBOXES = 20
CONCURRENCY = 16 + 8  # host.json: batchSize + newBatchThreshold
#: Each events mode runs right after its base (in either order, as rounds alternate), so the pair
#: compared round by round is a few seconds apart.
MODES = (
    "bare",
    "bare+tables",
    "bare+tables+events-eventgrid",
    "bare+tables+events-queue",
    "gateway",
    "gateway+events-eventgrid",
    "gateway+events-queue",
    "gateway+tables",
    "gateway+tables+events-eventgrid",
    "gateway+tables+events-queue",
    "gateway+tables+pacing",
)


class Run(TypedDict, total=False):
    """One mode's measurement in one round (the worker's JSON line, and what the parent adds)."""

    rate: float  # messages per second over the timed run
    run_cpu_ms: float  # the worker's CPU per message over the timed run
    servers_cpu_ms: dict[str, float]  # each server's CPU per message over the timed run
    pacing_requests: float  # budget-table requests per message (paced mode)
    peak_mib: float
    cpu_ms: float  # the worker's CPU per message, start-up included
    eventgrid_requests: int  # publish requests the Event Grid stand-in saw (parent)


def _request(i: int) -> dict[str, Any]:
    return {
        "from": f"sender{i % MAILBOXES}@contoso.com",
        "to": [f"customer{i}@example.com"],
        "subject": f"Receipt {i}",
        "html": f"<p>Thank you for order {i}.</p>",
        "headers": {"X-Order-Id": str(i)},
    }


def _memory_state(settings: Any) -> Any:
    """The state store with its rows in a dict: isolates what the Graph path itself costs."""
    from mailgw.state.record import MessageRecord
    from mailgw.store import UNREAD, StateStore, Transition

    class MemoryState(StateStore):
        rows: dict[str, MessageRecord]

        async def get(self, message_id: str) -> MessageRecord | None:
            row = self.rows.get(message_id)
            return row.model_copy(deep=True) if row else None

        async def create(self, record: MessageRecord) -> bool:
            if record.id in self.rows:
                return False
            self.rows[record.id] = record.model_copy(deep=True)
            return True

        async def apply(
            self, message_id: str, change: Transition, known: Any = UNREAD
        ) -> tuple[MessageRecord | None, bool]:
            current = await self.get(message_id)
            updated = change(current)
            if updated is None:
                return current, False
            updated.updated_at = self.clock()
            self.rows[message_id] = updated.model_copy(deep=True)
            return updated, True

    store = MemoryState(settings.storage(), settings.state_table)
    store.rows = {}
    return store


async def _accept(services: Any, message_id: str, request: dict[str, Any]) -> None:
    """The record intake writes for an accepted message (mailgw/intake.py), untimed."""
    from datetime import UTC, datetime

    from mailgw.models import MessageStatus, SendRequest
    from mailgw.state import machine

    record = machine.accepted(
        message_id,
        MessageStatus.queued,
        SendRequest.model_validate(request),
        now=datetime.now(UTC),
        retention=services.settings.retention,
    )
    assert await services.store.create(record)


async def _run_gateway(
    messages: int,
    env: dict[str, str],
    memory_state: bool = False,
    events: str = "",
    pacing: bool = False,
) -> Run:
    from mailgw.ids import new_message_id
    from mailgw.models import Envelope
    from mailgw.services import Services
    from mailgw.settings import Settings

    events_env = {
        "eventgrid": {"MAILGW_EVENTGRID_ENDPOINT": env.get("BENCH_EVENTGRID_ENDPOINT", "")},
        "queue": {"MAILGW_EVENTS_QUEUE": f"bench-events-{uuid.uuid4().hex[:8]}"},
    }.get(events, {})
    settings = Settings.from_env({**env, **events_env, "MAILGW_ALLOWED_SENDERS": "*@contoso.com"})
    services = Services(settings)
    if memory_state:
        services.__dict__["store"] = _memory_state(settings)
    # The whole delivery path: state store (sending, then sent) on Azurite, Graph transport.
    # The queue is only touched on failure; none is expected (a failure aborts the benchmark).
    delivery, transport = services.delivery, services.transport
    if not pacing:
        delivery.pacer = None
    envelopes = [
        Envelope(id=new_message_id(), created_at=delivery.clock(), request=_request(i))
        for i in range(messages)
    ]
    for envelope in envelopes:
        assert envelope.request is not None
        await _accept(services, envelope.id, envelope.request)
    # Sealed as intake seals them (mailgw/seal.py): delivery refuses an unsealed envelope.
    bodies = [json.dumps((await services.queue.seal.seal(e)).to_json()) for e in envelopes]
    await delivery.handle(bodies[0], queue_message_id="warm-up")  # token + connection, untimed
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(body: str) -> None:
        async with slots:
            outcome = await delivery.handle(body, queue_message_id="bench")
            if outcome.action != "sent":
                raise RuntimeError(f"not sent: {outcome}")

    requests_before = services.pacer.table.requests if pacing else 0
    with _Timed() as timed:
        await asyncio.gather(*(one(b) for b in bodies[1:]))
    paced_requests = (services.pacer.table.requests - requests_before) / (messages - 1)
    if pacing:
        await services.pacer.close()
    await transport.aclose()
    await services.events.close()
    await _settle(services.store.table(), settings.events_queue or "", messages)
    await services.store.close()
    return Run(**timed.per_message(messages - 1), pacing_requests=paced_requests)


async def _settle(state_table: Any, events_queue: str, messages: int) -> None:
    """Check that every event reached its sink (none kept in the state table to publish later,
    the events queue holds one per message), then drop what the run made: Azurite slows as its
    tables and queues grow."""
    from azure.core.exceptions import ResourceNotFoundError

    from mailgw.events.pending import PENDING_PARTITION
    from mailgw.storage import StorageConnection, queue_client

    if state_table is not None:
        query = f"PartitionKey eq '{PENDING_PARTITION}'"
        try:
            kept = [entity async for entity in state_table.query_entities(query)]
        except ResourceNotFoundError:
            kept = []
        if kept:
            raise RuntimeError(f"{len(kept)} events were kept to publish later: a sink refused")
        await state_table.delete_table()
    if events_queue:
        queue = queue_client(StorageConnection.from_settings(env=dict(os.environ)), events_queue)
        async with queue:
            count = (await queue.get_queue_properties()).approximate_message_count
            if count != messages:
                raise RuntimeError(f"the events queue holds {count} events, not {messages}")
            await queue.delete_queue()


def _servers_cpu() -> dict[str, float]:
    """CPU seconds each server (``BENCH_SERVER_PIDS``) has used so far: utime + stime, fields 14
    and 15 of /proc/<pid>/stat (Linux)."""

    def cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    pids: dict[str, list[int]] = json.loads(os.environ.get("BENCH_SERVER_PIDS", "{}"))
    return {name: sum(cpu(pid) for pid in group) for name, group in pids.items()}


class _Timed:
    """The timed run: wall time, this worker's CPU and each server's CPU, per message."""

    def __enter__(self) -> _Timed:
        self.servers = _servers_cpu()
        self.start, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu
        self.servers = {k: v - self.servers[k] for k, v in _servers_cpu().items()}

    def per_message(self, messages: int) -> Run:
        return Run(
            rate=messages / self.elapsed,
            run_cpu_ms=self.cpu * 1000 / messages,
            servers_cpu_ms={k: v * 1000 / messages for k, v in self.servers.items()},
        )


class _BareState:
    """What any exactly-once delivery writes around a send, with nothing of the gateway: read the
    message's row, mark it sending (ETag-conditional), mark it sent (ETag-conditional)."""

    def __init__(self, env: dict[str, str], messages: int) -> None:
        from mailgw.storage import StorageConnection, table_service_client

        connection = StorageConnection.from_settings(env=env)
        self.service = table_service_client(connection)
        self.table = self.service.get_table_client(f"bare{uuid.uuid4().hex[:8]}")
        self.messages = messages

    async def prepare(self) -> None:
        await self.table.create_table()
        for i in range(self.messages):  # the rows intake would have written, untimed
            await self.table.create_entity({"PartitionKey": f"m{i}", "RowKey": "state", "s": "q"})

    async def around(
        self,
        i: int,
        send: Callable[[], Awaitable[None]],
        publish: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """``publish``: the sent event's publish, overlapped with the last write as the gateway
        overlaps them (``Events.alongside``)."""
        from azure.core import MatchConditions

        row = await self.table.get_entity(f"m{i}", "state")
        written = await self.table.update_entity(
            {**row, "s": "sending"},
            etag=row.metadata["etag"],
            match_condition=MatchConditions.IfNotModified,
        )
        await send()
        sent = self.table.update_entity(
            {**row, "s": "sent"},
            etag=written["etag"],
            match_condition=MatchConditions.IfNotModified,
        )
        await (asyncio.gather(sent, publish(i)) if publish else sent)

    async def close(self) -> None:
        await self.table.delete_table()  # Azurite slows as its tables grow
        await self.table.close()
        await self.service.close()


class _BarePublisher:
    """The least a delivery with events on must add: one CloudEvent per message, prepared before
    the clock starts, put on a queue with the SDK's client, or handed to the Event Grid sink (the
    SDK's client behind the batcher that lets concurrent deliveries share a request); no
    publisher, no outbox."""

    def __init__(self, env: dict[str, str], sink: str, messages: int) -> None:
        from azure.identity.aio import ManagedIdentityCredential

        from mailgw.events.sinks import EventGridSink, EventSink, QueueSink
        from mailgw.storage import StorageConnection

        self.sink: EventSink
        self.queue = ""
        if sink == "queue":
            self.queue = f"bare-events-{uuid.uuid4().hex[:8]}"
            connection = StorageConnection.from_settings(env=env)
            self.sink = QueueSink(connection, self.queue, 5.0)
        else:
            credential = ManagedIdentityCredential()
            self.sink = EventGridSink(env["BENCH_EVENTGRID_ENDPOINT"], credential, 5.0)
        self.events = [
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "type": "mailgw.message.sent",
                "source": "urn:mailgw:bench",
                "subject": f"messages/m{i}",
                "time": "2026-12-07T00:00:00Z",
                "datacontenttype": "application/json",
                "data": {"id": f"m{i}", "status": "sent", "attempt": 1, "transport": "graph"},
            }
            for i in range(messages)
        ]

    async def publish(self, i: int) -> None:
        await self.sink.publish([self.events[i]])

    async def close(self) -> None:
        await self.sink.close()
        await _settle(None, self.queue, len(self.events))


async def _run_bare(
    messages: int, env: dict[str, str], tables: bool = False, events: str = ""
) -> Run:
    import httpx

    graph = env["MAILGW_GRAPH_ENDPOINT"]
    # The same connection pool as the transport's, so the baseline is not slowed by reconnects.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        token_response = await http.get(
            env["IDENTITY_ENDPOINT"],
            params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"},
            headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]},
        )
        token = token_response.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        slots = asyncio.Semaphore(CONCURRENCY)
        state = _BareState(env, messages) if tables else None
        publisher = _BarePublisher(env, events, messages) if events else None
        if state:
            await state.prepare()

        async def one(i: int) -> None:
            if state:
                async with slots:
                    await state.around(i, lambda: post(i), publisher.publish if publisher else None)
                return
            async with slots:
                await post(i)

        async def post(i: int) -> None:
            request = _request(i)
            body = {
                "message": {
                    "subject": request["subject"],
                    "body": {"contentType": "html", "content": request["html"]},
                    "toRecipients": [{"emailAddress": {"address": request["to"][0]}}],
                    "internetMessageHeaders": [{"name": "X-Order-Id", "value": str(i)}],
                },
                "saveToSentItems": True,
            }
            response = await http.post(
                f"{graph}/v1.0/users/{request['from']}/sendMail", json=body, headers=headers
            )
            if response.status_code != 202:
                raise RuntimeError(f"bare send failed: {response.status_code}")

        await one(0)
        with _Timed() as timed:
            await asyncio.gather(*(one(i) for i in range(1, messages)))
        if publisher:
            await publisher.close()
        if state:
            await state.close()
        return timed.per_message(messages - 1)


def worker(mode: str, messages: int) -> None:
    """One measurement in a fresh process, so peak memory is this path's alone."""
    env = json.loads(os.environ["BENCH_ENV"])
    os.environ.update(env)
    if mode.startswith("bare"):
        measured = asyncio.run(
            _run_bare(messages, env, tables="+tables" in mode, events=mode.partition("+events-")[2])
        )
    else:
        events = mode.partition("+events-")[2]
        measured = asyncio.run(
            _run_gateway(
                messages,
                env,
                memory_state=not mode.startswith("gateway+tables"),
                events=events,
                pacing=mode.endswith("+pacing"),
            )
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000 / messages
    print(json.dumps({**measured, "peak_mib": usage.ru_maxrss / 1024, "cpu_ms": cpu_ms}))


def _server_pids(azurite: Any, standins: Any, topic: Any) -> dict[str, list[int]]:
    """The servers the worker talks to, which share its two cores."""
    return {
        "azurite": [azurite.process.pid],
        "graph+identity": [p.pid for p in standins.processes],
        "eventgrid+identity": [p.pid for p in topic.processes],
    }


async def _publisher_cpu_ms(events: int = 5000) -> float:
    """The publisher's own CPU per event (build ``sent`` from the record and publish it alongside
    the write, as delivery does), to a sink that takes events and does nothing, counting them: what
    the gateway's code adds to each event before any sink's request."""
    from datetime import UTC, datetime, timedelta

    from mailgw.events.publisher import Events
    from mailgw.models import MessageStatus, SendRequest
    from mailgw.state import machine
    from mailgw.state.events import EventKind

    class NullSink:
        name = "null"
        taken = 0

        async def publish(self, events: Any) -> None:
            self.taken += len(events)

        async def close(self) -> None:
            return None

    now = datetime.now(UTC)
    accepted = machine.accepted(
        "bench-message",
        MessageStatus.queued,
        SendRequest.model_validate({**_request(0), "metadata": {"orderId": "1"}}),
        now=now,
        retention=timedelta(days=7),
    )
    sending = accepted.model_copy(update={"status": MessageStatus.sending, "attempts": 1})
    record = machine.sent(sending, now=now, detail="graph")
    assert record is not None
    sink = NullSink()
    publisher = Events(sinks=[sink], transport="graph")

    async def write() -> Any:
        return record

    start = time.process_time()
    for _ in range(events):
        await publisher.alongside(write(), record, EventKind.sent)
    elapsed = time.process_time() - start
    if sink.taken != events:
        raise RuntimeError(f"the publisher published {sink.taken} of {events} events")
    return elapsed * 1000 / events


def _report(results: dict[str, list[Run]], messages: int, rounds: int, publisher_ms: float) -> None:
    """Every figure whose modes were measured (``--modes`` may leave some out)."""
    modes = tuple(results)
    rate = {mode: statistics.median(r["rate"] for r in results[mode]) for mode in modes}
    peak = {mode: max(r["peak_mib"] for r in results[mode]) for mode in modes}
    cpu = {mode: statistics.median(r["cpu_ms"] for r in results[mode]) for mode in modes}
    run_cpu = {mode: statistics.median(r["run_cpu_ms"] for r in results[mode]) for mode in modes}
    machine_cpu = {
        mode: statistics.median(
            r["run_cpu_ms"] + sum(r["servers_cpu_ms"].values()) for r in results[mode]
        )
        for mode in modes
    }
    ideal = rate["bare"]
    print(
        f"Graph stand-in latency {LATENCY * 1000:.0f} ms, {MAILBOXES} mailboxes, "
        f"{CONCURRENCY} deliveries in flight, {messages} messages x {rounds} rounds"
    )
    print(
        f"ideal (bare httpx, same concurrency):   {ideal:6.1f} msg/s "
        f"(theoretical {CONCURRENCY / LATENCY:.0f})"
    )
    if "gateway" in rate:
        print(f"delivery path, state in memory:         {rate['gateway']:6.1f} msg/s")
    if "gateway+tables" in rate:
        print(
            f"delivery path, state in Azure Tables:   {rate['gateway+tables']:6.1f} msg/s "
            "(Azurite on the same 2 cores; 3 table requests per message)"
        )
    print("worker peak memory: " + ", ".join(f"{m} {peak[m]:.0f} MiB" for m in modes))
    print(
        "worker CPU per message (start-up included): "
        + ", ".join(f"{mode} {cpu[mode]:.1f} ms" for mode in modes)
    )
    print(
        "worker CPU per message over the timed run: "
        + ", ".join(f"{mode} {run_cpu[mode]:.2f} ms" for mode in modes)
    )
    print(
        "servers' CPU per message (they share the worker's two cores): "
        + "; ".join(
            f"{mode} "
            + ", ".join(
                f"{name} {statistics.median(r['servers_cpu_ms'][name] for r in results[mode]):.2f}"
                for name in results[mode][0]["servers_cpu_ms"]
            )
            + " ms"
            for mode in modes
        )
    )
    if any("+events-" in m for m in modes):
        print(f"publisher's own CPU per event (to a sink that does nothing): {publisher_ms:.3f} ms")
    requests = {
        m: statistics.median(r["eventgrid_requests"] for r in results[m])
        for m in modes
        if m.endswith("+events-eventgrid")
    }
    if requests:
        print(
            "events per Event Grid request: "
            + ", ".join(f"{m} {messages / n:.1f}" for m, n in requests.items())
        )
    if "bare+tables" in rate:
        print(
            f"bare httpx with the three table requests around each send (no gateway code): "
            f"{rate['bare+tables']:6.1f} msg/s, ratio {rate['bare+tables'] / ideal:.2f}: the most "
            "any delivery that keeps its state in Tables can reach on this machine"
        )
    if "gateway+tables" in rate:
        print(f"delivery ratio with Table state: {rate['gateway+tables'] / ideal:.2f}")
    if "gateway+tables+pacing" in rate:
        paced = results["gateway+tables+pacing"]
        print(
            f"delivery ratio with Table state and pacing on: "
            f"{rate['gateway+tables+pacing'] / ideal:.2f} (goal at least 0.8; "
            f"{statistics.median(r['pacing_requests'] for r in paced):.3f} budget-table requests "
            f"per message, worker CPU {run_cpu['gateway+tables+pacing']:.2f} ms per message)"
        )
    for base, state in (
        ("gateway", "state in memory"),
        ("gateway+tables", "Table state"),
        ("bare+tables", "ceiling: bare client, three table requests, no gateway code"),
    ):
        for sink, label in (("eventgrid", "Event Grid"), ("queue", "a storage queue")):
            mode = f"{base}+events-{sink}"
            if mode not in rate or base not in rate:
                continue
            without = rate[base] / ideal
            ratio = rate[mode] / ideal
            # paired within each round (an events mode runs next to its base), then the median:
            # the drift between rounds on this shared machine is larger than what events cost
            paired = statistics.median(
                on["rate"] / off["rate"]
                for on, off in zip(results[mode], results[base], strict=True)
            )
            print(
                f"delivery ratio ({state}) with events on ({label}): {ratio:.2f} "
                f"({(ratio - without) / without:+.0%} against {without:.2f} without events; "
                f"paired round by round: {paired - 1:+.0%}, goal at least -10%; CPU per "
                f"message, worker and servers: {machine_cpu[base]:.2f} -> "
                f"{machine_cpu[mode]:.2f} ms, {machine_cpu[mode] / machine_cpu[base] - 1:+.0%})"
            )
    print(
        "ratio of each run (in run order; the ideal is the median): "
        + "; ".join(
            f"{mode} " + " ".join(f"{r['rate'] / ideal:.2f}" for r in results[mode])
            for mode in modes
        )
    )
    if "gateway" in rate:
        print(f"delivery ratio: {rate['gateway'] / ideal:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=480)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument(
        "--modes", help="comma-separated subset of: " + ", ".join(MODES), default=",".join(MODES)
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.messages)
        return 0

    from devhost.azurite import Azurite
    from standins.processes import start_eventgrid_standin, start_standins

    asked = set(args.modes.split(","))
    if unknown := asked - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    # the ideal is what every ratio is against, and an events mode is compared with its base
    asked |= {"bare"} | {mode.partition("+events-")[0] for mode in asked}
    modes = tuple(mode for mode in MODES if mode in asked)
    results: dict[str, list[Run]] = {mode: [] for mode in modes}
    # the publisher's own work, alone in this process before the servers start
    publisher_ms = asyncio.run(_publisher_cpu_ms())
    with (
        start_standins(latency_seconds=LATENCY) as standins,
        start_eventgrid_standin() as topic,
        Azurite(project_dir=ROOT) as azurite,
    ):
        for round_number in range(args.rounds):
            # every other round in reverse, and every run on a table of its own: Azurite slows
            # as its tables grow, which would otherwise weigh on the modes that run last
            for mode in modes if round_number % 2 == 0 else tuple(reversed(modes)):
                gateway_env = {
                    **standins.gateway_env(),
                    "AzureWebJobsStorage": azurite.connection_string,
                    "MAILGW_STATE_TABLE": f"bench{uuid.uuid4().hex[:8]}",
                    # the Graph stand-in's identity signs with the key the Event Grid one checks
                    "BENCH_EVENTGRID_ENDPOINT": topic.endpoint,
                }
                env = {
                    **gateway_env,
                    "BENCH_ENV": json.dumps(gateway_env),
                    "BENCH_SERVER_PIDS": json.dumps(_server_pids(azurite, standins, topic)),
                }
                standins.graph.reset()
                topic.eventgrid.reset()
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", mode, "--messages", str(args.messages)],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
                measured: Run = json.loads(out.stdout.strip().splitlines()[-1])
                delivered = standins.graph.stats().get("delivered")
                if delivered != args.messages:
                    raise SystemExit(
                        f"the stand-in saw {delivered} deliveries, not {args.messages}"
                    )
                published = len(topic.eventgrid.records("events"))
                if published != (args.messages if mode.endswith("eventgrid") else 0):
                    raise SystemExit(f"{mode}: Event Grid took {published} events")
                measured["eventgrid_requests"] = len(topic.eventgrid.records("requests"))
                results[mode].append(measured)
    _report(results, args.messages, args.rounds, publisher_ms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
