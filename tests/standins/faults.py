"""One fault-injection model for every stand-in: scripted answers, consumed first in, first out.

A test scripts what the next matching request gets (``graph.fail_with("ErrorSendAsDenied")``,
``smtp.fail_with(Exchange.MAILBOX_FULL)``, ``identity.fail_next(500)``). Each stand-in's fault type
says what it matches (a Graph operation and mailbox, an SMTP stage and user, a token flow) and what
it answers; :class:`FaultQueue` keeps the order, the counting and the locking, which are the same
everywhere: a test thread may script faults while the server's loop takes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FaultQueue", "ScriptedFault"]


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
