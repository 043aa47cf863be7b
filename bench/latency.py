"""A TCP relay on 127.0.0.1 that delays what the client sends by a fixed time: local Azurite with
the round trip of a storage account in the same region (a few milliseconds), for benchmarks whose
result depends on waiting for storage (concurrency helps only where there is latency to overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def delayed(port: int, delay_seconds: float) -> AsyncIterator[int]:
    """Relay 127.0.0.1:<yielded port> to 127.0.0.1:``port``, each request delayed."""

    async def relay(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(
            _pipe(client_reader, server_writer, delay_seconds),
            _pipe(server_reader, client_writer, 0.0),
        )

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
