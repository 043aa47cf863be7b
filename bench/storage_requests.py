"""CPU per storage request on the client, with azure-core's per-request environment lookups on
(its default) and off (what mailgw.storage chooses when no proxy variable is set).

aiohttp, when trusted with the environment, reads ~/.netrc and the proxy variables in a worker
thread on every request; this measures what that costs each queue put and table insert against
Azurite, sides alternating round by round in the same run.

    .venv/bin/python bench/storage_requests.py [--requests 300] [--rounds 3]

Prints the client CPU ms per request on each side and the ratio (off / on; lower is better).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from mailgw.storage import StorageConnection, queue_client, table_service_client  # noqa: E402


async def cpu_per_request(connection_string: str, requests: int, env_lookups: bool) -> float:
    """Client CPU ms per request over ``requests`` queue puts and as many table inserts."""
    connection = StorageConnection(name="bench", connection_string=connection_string)
    option = {"use_env_settings": env_lookups}
    queue = queue_client(connection, f"bench{uuid.uuid4().hex[:8]}", **option)
    service = table_service_client(connection, **option)
    table = service.get_table_client(f"bench{uuid.uuid4().hex[:8]}")
    await queue.create_queue()
    await table.create_table()
    body = "x" * 1500
    started = time.process_time()
    for number in range(requests):
        await queue.send_message(body)
        await table.create_entity({"PartitionKey": str(number), "RowKey": "s", "body": body})
    cpu = time.process_time() - started
    await queue.close()
    await table.close()
    await service.close()
    return cpu * 1000 / (2 * requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sides: dict[bool, list[float]] = {True: [], False: []}
    with Azurite(project_dir=ROOT) as azurite:
        asyncio.run(cpu_per_request(azurite.connection_string, 20, False))  # warm-up
        for round_number in range(args.rounds):
            order = [True, False] if round_number % 2 == 0 else [False, True]
            for lookups in order:
                sides[lookups].append(
                    asyncio.run(cpu_per_request(azurite.connection_string, args.requests, lookups))
                )
    on, off = statistics.median(sides[True]), statistics.median(sides[False])
    print(f"{args.requests} queue puts + {args.requests} table inserts x {args.rounds} rounds")
    for label, value in (("looked up per request", on), ("not looked up (no proxy set)", off)):
        print(f"client CPU per storage request, environment {label}: {value:.2f} ms")
    print(f"storage request CPU ratio without the lookups: {off / on:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
