"""The one way the stand-ins' users wait: poll what a stand-in recorded until enough of it is there.

Stand-ins record into plain lists from the server's loop (list appends are atomic), so a test in
another thread, or in the server's own loop, polls them; a test whose stand-in is another process
polls the admin API the same way (:meth:`standins.admin.RemoteAdmin.wait_records`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from support import wait_until

__all__ = ["poll_until", "poll_until_async", "wait_recorded", "wait_recorded_async"]

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` every 10 ms until truthy (thread-safe reads of stand-in state)."""
    return wait_until(predicate, timeout=timeout, interval=0.01, what=what)


async def poll_until_async(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Async twin of :func:`poll_until`; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_recorded(records: Sequence[T], count: int, timeout: float, what: str) -> list[T]:
    """Wait until ``records`` holds at least ``count`` items; return a copy of them all."""
    poll_until(lambda: len(records) >= count, timeout, f"{count} {what}")
    return list(records)


async def wait_recorded_async(
    records: Sequence[T], count: int, timeout: float, what: str
) -> list[T]:
    """:func:`wait_recorded` for a test running in the stand-in's own event loop."""
    await poll_until_async(lambda: len(records) >= count, timeout, f"{count} {what}")
    return list(records)
