"""Queue message leases, renewed on a thread of their own, as the Functions host renews them.

In Azure the host (a .NET process) keeps a message invisible while the Python worker runs the
function, so a function that blocks its event loop for a while (the first import of msgraph, a
CPU-heavy render on a busy machine) does not lose its message. Renewing on the function's own loop
would: the message would reappear mid-run and be handed out a second time. So the dev host renews
on a dedicated thread, with its own event loop and its own storage client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.queue.aio import QueueServiceClient

log = logging.getLogger("devhost.queues")


@dataclass
class Lease:
    """A received message's id and its newest pop receipt (each renewal issues a new one)."""

    message_id: str
    pop_receipt: str


def error_code(error: HttpResponseError) -> str:
    return str(getattr(error, "error_code", "") or "")


def taken_over(error: HttpResponseError) -> bool:
    """The message is gone or someone else holds it now: nothing left for us to do with it."""
    return isinstance(error, ResourceNotFoundError) or error_code(error) == "PopReceiptMismatch"


class Renewal:
    """One message kept invisible until :meth:`finish`; then its lease holds the last receipt."""

    def __init__(self, done: asyncio.Event, future: Future[None], loop: asyncio.AbstractEventLoop):
        self._done, self._future, self._loop = done, future, loop

    async def finish(self) -> None:
        """Stop renewing and wait for a renewal in progress: its pop receipt must not be lost."""
        self._loop.call_soon_threadsafe(self._done.set)
        await asyncio.wrap_future(self._future)


class LeaseKeeper:
    """Renews leases for one storage connection on a thread with its own event loop."""

    def __init__(self, client_factory: Callable[[], QueueServiceClient], lease_seconds: int):
        self.lease_seconds = max(1, lease_seconds)
        self._factory = client_factory
        self._service: QueueServiceClient | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def keep(self, queue_name: str, lease: Lease) -> Renewal:
        done = asyncio.Event()  # bound to the lease loop on first use there
        future = asyncio.run_coroutine_threadsafe(self._renew(queue_name, lease, done), self._loop)
        return Renewal(done, future, self._loop)

    async def stop(self) -> None:
        """Close the client on its own loop, then end the thread."""
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), self._loop))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 5)

    async def _close(self) -> None:
        if self._service is not None:
            await self._service.close()

    async def _renew(self, queue_name: str, lease: Lease, done: asyncio.Event) -> None:
        """Keep the message invisible while the function runs (the host's visibility timer)."""
        if self._service is None:
            self._service = self._factory()
        queue = self._service.get_queue_client(queue_name)
        interval = self.lease_seconds / 2
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), interval)
            if done.is_set():
                return
            try:
                updated: Any = await queue.update_message(
                    lease.message_id, lease.pop_receipt, visibility_timeout=self.lease_seconds
                )
            except HttpResponseError as error:
                if taken_over(error):
                    log.debug("Message %s was taken over; no longer renewing", lease.message_id)
                    return
                log.warning("Renewing the lease of message %s failed: %s", lease.message_id, error)
                interval = max(1.0, interval / 2)  # retry sooner, like the host's speed-up strategy
            except AzureError as error:
                log.warning("Renewing the lease of message %s failed: %s", lease.message_id, error)
                interval = max(1.0, interval / 2)
            else:
                lease.pop_receipt = updated.pop_receipt
                interval = self.lease_seconds / 2
