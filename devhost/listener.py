"""What the queue and timer listeners share: one loop task from ``start()`` to ``stop()``.

The loop starts invocations as tasks of their own (``in_flight``); ``stop()`` ends the loop but
leaves those running, for the host to drain or abandon as the Functions host does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any


class Listener:
    """A trigger's loop (``_loop``, run as a task named ``task_name``), stopped by ``stop()``."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name=self.task_name)

    async def stop(self) -> None:
        """Stop the loop; the invocations it started still run (their tasks are ``in_flight``)."""
        self._stopping.set()
        if self._loop_task is not None:
            await self._loop_task

    def _invoke_in_flight(self, invocation: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``invocation`` as a task of its own, in ``in_flight`` until it ends."""
        task = asyncio.create_task(invocation)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when ``stop()`` is called meanwhile."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _first_of(self, tasks: set[asyncio.Task[None]]) -> None:
        """Wait until one of ``tasks`` ends, or ``stop()`` is called."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
