"""Cost per message in a batch of 100 against a single request's, on one Azurite, in one run.

Both sides go through the intake as the HTTP functions call it (``Intake.submit`` and
``BatchIntake.submit``: parse, validate, sender policy, envelope, enqueue) with the same message,
interleaved round by round, so machine noise hits them alike. The batch's items are enqueued
concurrently; the result is a ratio, not a time. Goal: ``batch cost per message ratio`` at most 0.5.

Twice: against Azurite as it is (no network latency: on two cores Azurite and the intake share the
CPU, and concurrency can only overlap the two), and through a relay that adds a storage account's
in-region round trip (``--latency-ms``, 5 by default) to every request, as in Azure.

    .venv/bin/python bench/batch.py [--rounds 30] [--size 100] [--latency-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.intake import PAYLOAD, bench_settings  # noqa: E402
from bench.latency import delayed  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from mailgw.services import Services  # noqa: E402
from mailgw.storage import azurite_connection_string  # noqa: E402


async def measure_with_latency(
    ports: dict[str, int], latency: float, rounds: int, size: int
) -> tuple[list[float], list[float]]:
    """:func:`measure`, with the queue behind a relay that delays each request by ``latency``."""
    async with delayed(ports["queue"], latency) as queue_port:
        relayed = azurite_connection_string(ports={**ports, "queue": queue_port})
        return await measure(relayed, rounds, size)


async def measure(
    connection_string: str, rounds: int, size: int
) -> tuple[list[float], list[float]]:
    services = Services(bench_settings(connection_string, "batch"))
    intake, batch = services.intake, services.batch
    single = json.dumps(PAYLOAD).encode()
    many = json.dumps({"messages": [PAYLOAD] * size}).encode()
    singles: list[float] = []
    batches: list[float] = []
    for round_number in range(rounds + 3):  # the first rounds warm pools and caches up
        order = ("single", "batch") if round_number % 2 else ("batch", "single")
        for side in order:
            if side == "single":
                for _ in range(size):
                    start = time.perf_counter()
                    await intake.submit(single, content_type="application/json")
                    elapsed = time.perf_counter() - start
                    await intake.drain()  # the background state write, outside the wait
                    if round_number >= 3:
                        singles.append(elapsed)
            else:
                start = time.perf_counter()
                result = await batch.submit(many, content_type="application/json")
                elapsed = time.perf_counter() - start
                assert result.accepted == size, result
                await intake.drain()
                if round_number >= 3:
                    batches.append(elapsed / size)
    await services.queue.close()
    await services.store.close()
    return singles, batches


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    args = parser.parse_args()
    with Azurite(project_dir=ROOT) as azurite:
        local = asyncio.run(measure(azurite.connection_string, args.rounds, args.size))
        remote = asyncio.run(
            measure_with_latency(azurite.ports, args.latency_ms / 1000, args.rounds, args.size)
        )
    print(
        f"rounds: {args.rounds} batches of {args.size}, {args.rounds * args.size} single requests"
    )
    for label, (singles, batches) in (
        ("", local),
        (f" with {args.latency_ms:g} ms storage latency", remote),
    ):
        single = statistics.median(singles) * 1000
        per_message = statistics.median(batches) * 1000
        print(f"single request{label}: median {single:.3f} ms")
        print(f"batch of {args.size}, per message{label}: median {per_message:.3f} ms")
        print(f"batch cost per message ratio{label}: {per_message / single:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
