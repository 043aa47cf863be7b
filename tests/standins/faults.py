"""One fault-injection model for every stand-in: scripted answers, consumed first in, first out.

A test scripts what the next matching request gets (``graph.fail_with("ErrorSendAsDenied")``,
``smtp.fail_with(Exchange.MAILBOX_FULL)``, ``identity.fail_next(500)``). Each stand-in's fault type
says what it matches (a Graph operation and mailbox, an SMTP stage and user, a token flow) and what
it answers; :class:`FaultQueue` keeps the order, the counting and the locking, which are the same
everywhere: a test thread may script faults while the server's loop takes them.

A :class:`Gate` holds answers until the test releases them: how a test makes a server "slow"
without a clock, so that what it asserts about requests in flight at once holds on a loaded
machine too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FaultQueue", "Gate", "ScriptedFault"]


class Gate:
    """Held requests wait in :meth:`wait` until :meth:`release` (from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def holding(self) -> int:
        """How many requests are held right now."""
        with self._lock:
            return sum(not event.is_set() for _, event in self._waiters)

    def release(self) -> None:
        with self._lock:
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._released:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


@dataclass(kw_only=True)
class ScriptedFault:
    """A scripted answer for the next ``remaining`` matching requests."""

    remaining: int = 1


F = TypeVar("F", bound=ScriptedFault)


class FaultQueue(Generic[F]):
    """Pending faults in the order they were scripted; the first that matches a request is used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[F] = []

    def add(self, fault: F) -> F:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, matches: Callable[[F], bool]) -> F | None:
        """The first pending fault for which ``matches`` holds, counted down once (and dropped
        when used up); ``None`` when no fault applies."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and matches(fault):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[F]:
        with self._lock:
            return [f for f in self._faults if f.remaining > 0]

    def __len__(self) -> int:
        return len(self.pending)
