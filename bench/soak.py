"""Soak: exactly once at volume, through the dev host and the Graph stand-in in draft mode.

What a new user would try before trusting the gateway with real mail (issue 9): 150 messages from
10 mailboxes posted over HTTP to the real function_app.py served by the dev host (a process) on
Azurite, delivered in draft mode to the Graph stand-in, which

- takes 30 s to send a draft after answering ``/send`` (then 2 s found nowhere, then Sent Items);
- answers a tenth of all calls, at random (seeded), with 429 or 503 (``Retry-After: 1``), 500, or,
  for ``/send``, 504 *after* accepting the draft;

while the client posts a quarter of the messages twice with the same ``Idempotency-Key`` (and
retries with it whenever the gateway is unreachable), and the worker is killed with SIGKILL once
half the messages were delivered, then restarted on the same storage. A third of the messages
have both a text and an html body, so they travel as MIME drafts.

    .venv/bin/python bench/soak.py [--messages 150] [--mailboxes 10] [--lag 30] [--seed N]

Prints one line on stdout (what happened along the way goes to stderr):

    soak: accepted 150 / delivered 150 / duplicated 0 / missing 0 / 301 s; every status sent
    within 2 min of its delivery: yes (slowest 41 s)

"delivered" counts accepted messages the stand-in received at least once, "duplicated" those it
received more than once, "missing" those it never received. A status settles when the gateway
records ``sent``; it is measured from the message's first delivery at the stand-in. The dev host
runs with a 10 s queue lease (``DEVHOST_QUEUE_LEASE_SECONDS``; Azure's is 10 min), so that the
killed worker's messages come back within the two minutes, and
``MAILGW_GRAPH_SUBMIT_GRACE_SECONDS=120`` (the lag is 30 s). ``tests/e2e/test_soak.py`` runs a
smaller version in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests", ROOT / "tests" / "e2e"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from gateway_host import DevHost, launch_devhost  # noqa: E402

from devhost.azurite import Azurite  # noqa: E402
from standins.processes import StandInProcesses, start_standins  # noqa: E402

#: Graph's random answers (the Graph stand-in's fault forms)
FAULTS: tuple[dict[str, Any], ...] = (
    {"status": 429, "code": "ApplicationThrottled", "retryAfter": 1},
    {"preset": "ServiceUnavailable", "retryAfter": 1},
    {"status": 500, "code": "UnknownError"},
    {"mode": "status", "status": 504, "operation": "send"},  # accepted, then the answer is lost
)


@dataclass(frozen=True)
class SoakConfig:
    messages: int = 150
    mailboxes: int = 10
    #: Exchange's pace: a sent draft stays a draft this long, then is found nowhere this long
    submit_lag: float = 30.0
    transit: float = 2.0
    #: MAILGW_GRAPH_SUBMIT_GRACE_SECONDS
    grace: int = 120
    fault_rate: float = 0.1
    faults: tuple[dict[str, Any], ...] = FAULTS
    #: share of the messages posted twice with the same Idempotency-Key
    double_share: float = 0.25
    #: kill the worker once this share of the messages was delivered
    kill_at: float = 0.5
    lease_seconds: int = 10
    settle_limit: float = 120.0
    deadline: float = 1500.0
    seed: int = 2026


@dataclass
class SoakResult:
    accepted: int
    delivered: int
    duplicated: int
    missing: int
    seconds: float
    #: message id -> seconds from its first delivery to its status ``sent`` (None: never sent)
    settle: dict[str, float | None] = field(default_factory=dict)
    settle_limit: float = 120.0
    notes: list[str] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return bool(self.settle) and all(
            s is not None and s <= self.settle_limit for s in self.settle.values()
        )

    @property
    def slowest(self) -> float | None:
        known = [s for s in self.settle.values() if s is not None]
        return max(known) if known else None

    def line(self) -> str:
        slowest = "" if self.slowest is None else f" (slowest {self.slowest:.0f} s)"
        return (
            f"soak: accepted {self.accepted} / delivered {self.delivered} / duplicated "
            f"{self.duplicated} / missing {self.missing} / {self.seconds:.0f} s; every status "
            f"sent within {self.settle_limit / 60:g} min of its delivery: "
            f"{'yes' if self.settled else 'no'}{slowest}"
        )


def note(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Gateway:
    """The dev host currently serving (a successor replaces it after the kill)."""

    def __init__(self, host: DevHost) -> None:
        self.host = host
        self.lock = threading.Lock()

    def post(self, body: dict[str, Any], key: str, deadline: float) -> str:
        """POST until a 202, with the same key, as a client retrying a lost or refused call."""
        data = json.dumps(body).encode()
        while True:
            with self.lock:
                url = f"{self.host.base_url}/api/v1/messages"
            request = urllib.request.Request(
                url,
                data=data,
                method="POST",
                headers={"Content-Type": "application/json", "Idempotency-Key": key},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    return str(json.loads(answer.read())["id"])
            except urllib.error.HTTPError as refused:
                if refused.code < 500:
                    raise RuntimeError(f"POST refused: {refused.code} {refused.read()!r}") from None
            except OSError:
                pass  # the worker is down: retry with the same key
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not accept a message before the deadline")
            time.sleep(0.5)

    def status(self, message_id: str) -> dict[str, Any]:
        with self.lock:
            host = self.host
        try:
            answer = host.request("GET", f"/api/v1/messages/{message_id}")
        except OSError:
            return {}
        return answer.json() if answer.status == 200 else {}


def _request(config: SoakConfig, run: str, i: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": f"sender{i % config.mailboxes}@contoso.com",
        "to": [f"customer{i}@example.com"],
        "subject": f"soak {run} #{i}",
        "text": f"Order {i} is on its way.",
        "headers": {"X-Order-Id": str(i)},
    }
    if i % 3 == 0:
        body["html"] = f"<p>Order <b>{i}</b> is on its way.</p>"  # both bodies: a MIME draft
    return body


@contextmanager
def _storage(connection: str | None) -> Iterator[str]:
    if connection:
        yield connection
        return
    with Azurite(project_dir=ROOT) as azurite:
        yield azurite.connection_string


def _configure_graph(standins: StandInProcesses, config: SoakConfig) -> None:
    standins.graph.configure(
        submitLagSeconds=config.submit_lag,
        transitSeconds=config.transit,
        randomFaults={
            "rate": config.fault_rate,
            "seed": config.seed,
            "faults": list(config.faults),
        },
    )


def _sent_at(state: dict[str, Any]) -> float | None:
    for step in reversed(state.get("history", [])):
        if step.get("outcome") == "sent":
            return datetime.fromisoformat(step["at"].replace("Z", "+00:00")).timestamp()
    return None


def run_soak(config: SoakConfig, storage: str | None = None) -> SoakResult:
    """One soak; ``storage``: a connection string to use instead of starting Azurite."""
    rng = random.Random(config.seed)
    run = uuid.uuid4().hex[:6]
    names = {
        "MAILGW_QUEUE": f"soak-{run}",
        "MAILGW_PAYLOAD_CONTAINER": f"soak-{run}",
        "MAILGW_STATE_TABLE": f"soak{run}",
    }
    with ExitStack() as stack:
        connection = stack.enter_context(_storage(storage))
        standins = stack.enter_context(start_standins())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailgw-soak-")))
        _configure_graph(standins, config)
        env = {
            **standins.gateway_env(),
            **names,
            "MAILGW_GRAPH_MODE": "draft",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_GRAPH_SUBMIT_GRACE_SECONDS": str(config.grace),
            "DEVHOST_QUEUE_LEASE_SECONDS": str(config.lease_seconds),
            "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "5",
        }
        hosts: list[DevHost] = []

        @stack.callback
        def stop_hosts() -> None:
            for host in hosts:
                host.stop()

        gateway = Gateway(launch_devhost(connection, workdir, started=hosts, **env))
        note(
            f"{config.messages} messages from {config.mailboxes} mailboxes; Exchange takes "
            f"{config.submit_lag:g} s (+{config.transit:g} s) to send a draft; "
            f"{config.fault_rate:.0%} random faults; grace {config.grace} s"
        )
        start = time.monotonic()
        deadline = start + config.deadline
        doubles = {i for i in range(config.messages) if rng.random() < config.double_share}
        ids: dict[int, str] = {}
        notes: list[str] = []

        def submit(i: int) -> None:
            key = f"soak-{run}-{i}"
            body = _request(config, run, i)
            answers = {gateway.post(body, key, deadline) for _ in range(2 if i in doubles else 1)}
            if len(answers) != 1:
                notes.append(f"#{i}: one key, {len(answers)} ids")
            ids[i] = min(answers)

        with ThreadPoolExecutor(max_workers=8) as pool:
            posted = [pool.submit(submit, i) for i in range(config.messages)]
            # Kill the worker halfway through the deliveries, while posting may still go on.
            kill_when = max(1, int(config.messages * config.kill_at))
            while standins.graph.stats()["delivered"] < kill_when:
                if time.monotonic() > deadline:
                    raise RuntimeError("not half delivered before the deadline")
                time.sleep(0.2)
            with gateway.lock:
                gateway.host.process.kill()  # SIGKILL: no clean-up of any kind
                gateway.host.process.wait()
            killed_at = standins.graph.stats()["delivered"]
            note(f"worker killed with SIGKILL after {killed_at} deliveries; restarting")
            successor = launch_devhost(connection, workdir, started=hosts, **env)
            with gateway.lock:
                gateway.host = successor
            for future in posted:
                future.result()
        note(f"{len(ids)} accepted ({len(doubles)} posted twice with their key)")

        states = _wait_settled(gateway, set(ids.values()), deadline)
        _wait_drained(gateway, deadline)
        seconds = time.monotonic() - start
        delivered = standins.graph.delivered()
        stats = standins.graph.stats()
        note(f"random faults drawn: {stats.get('randomFaults')}")

    by_subject: dict[str, list[float]] = {}
    for item in delivered:
        by_subject.setdefault(item["subject"], []).append(item["wallTime"])
    counts = {i: len(by_subject.get(f"soak {run} #{i}", [])) for i in ids}
    settle: dict[str, float | None] = {}
    for i, message_id in ids.items():
        sent_at = _sent_at(states.get(message_id, {}))
        times = by_subject.get(f"soak {run} #{i}", [])
        settle[message_id] = None if sent_at is None or not times else sent_at - min(times)
    unsettled = [m for m, s in settle.items() if s is None or s > config.settle_limit]
    if unsettled:
        notes.append(f"not settled in time: {unsettled[:5]}")
    failed = [m for m, state in states.items() if state.get("status") != "sent"]
    if failed:
        notes.append(f"not sent: {[(m, states[m].get('lastError')) for m in failed[:3]]}")
    for text in notes:
        note(text)
    return SoakResult(
        accepted=len(ids),
        delivered=sum(1 for c in counts.values() if c >= 1),
        duplicated=sum(1 for c in counts.values() if c > 1),
        missing=sum(1 for c in counts.values() if c == 0),
        seconds=seconds,
        settle=settle,
        settle_limit=config.settle_limit,
        notes=notes,
    )


def _wait_settled(gateway: Gateway, ids: set[str], deadline: float) -> dict[str, dict[str, Any]]:
    """Every message's state once it is final (sent or failed), or as it is at the deadline."""
    states: dict[str, dict[str, Any]] = {}
    waiting = set(ids)
    while waiting and time.monotonic() < deadline:
        for message_id in sorted(waiting):
            state = gateway.status(message_id)
            if state.get("status") in ("sent", "failed"):
                states[message_id] = state
                waiting.discard(message_id)
        if waiting:
            time.sleep(2)
    for message_id in waiting:
        states[message_id] = gateway.status(message_id)
    return states


def _wait_drained(gateway: Gateway, deadline: float) -> None:
    """Until no copy of any message is left in the queue (a late duplicate would come from
    one), so that what the stand-in received is final."""
    from azure.storage.queue import QueueClient

    host = gateway.host
    client = QueueClient.from_connection_string(host.env["AzureWebJobsStorage"], host.queue)
    try:
        while time.monotonic() < deadline:
            if client.get_queue_properties().approximate_message_count == 0:
                return
            time.sleep(1)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SoakConfig()
    # each option's dest is the SoakConfig field it sets
    parser.add_argument("--messages", type=int, default=defaults.messages)
    parser.add_argument("--mailboxes", type=int, default=defaults.mailboxes)
    parser.add_argument(
        "--lag", dest="submit_lag", metavar="LAG", type=float, default=defaults.submit_lag
    )
    parser.add_argument("--grace", type=int, default=defaults.grace)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    result = run_soak(SoakConfig(**vars(parser.parse_args())))
    print(result.line(), flush=True)
    ok = result.duplicated == 0 and result.missing == 0 and result.settled
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
