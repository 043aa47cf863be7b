"""Per-mailbox concurrency: never more than N requests in flight for one mailbox from this instance.

Graph allows 4 concurrent requests per app and mailbox; a fifth earns a 429. A burst from one
mailbox therefore queues here, in order, instead of being thrown at Graph to collect throttling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class MailboxLimiter:
    def __init__(self, limit: int):
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        #: the highest in-flight count seen per mailbox (bounded: a few thousand mailboxes)
        self.peak: dict[str, int] = {}

    @asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        key = mailbox.lower()
        semaphore = self._slots.setdefault(key, asyncio.Semaphore(self.limit))
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with semaphore:
                self.in_flight[key] = self.in_flight.get(key, 0) + 1
                if len(self.peak) > 10_000:
                    self.peak.clear()
                self.peak[key] = max(self.peak.get(key, 0), self.in_flight[key])
                try:
                    yield
                finally:
                    self.in_flight[key] -= 1
        finally:
            self._users[key] -= 1
            if not self._users[key]:  # forget idle mailboxes: thousands of senders, no leak
                del self._users[key], self._slots[key]
                self.in_flight.pop(key, None)
