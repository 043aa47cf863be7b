"""Per-client message rate and failed-login slowdown, in memory (one intake instance's view).

A client over its messages-per-minute gets a transient refusal (it retries later, nothing is
lost). Failed logins are slowed per client name and per IP address: each failure within the
window doubles the wait before the failure is answered, up to a cap, so guessing costs time,
while a correct password is answered at once (a stranger's guesses never lock a client out).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0
#: failed logins are remembered this long
FAILURE_MEMORY_SECONDS = 15 * 60.0
#: names and addresses with failures remembered at most (names are the attacker's choice)
MAX_FAILURE_KEYS = 10_000


@dataclass
class RateLimiter:
    """At most ``limit`` events per minute per key (a sliding window)."""

    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def allow(self, key: str, limit: int) -> bool:
        """Count one event for ``key`` if it is within the limit; False (uncounted) if not."""
        now = self.clock()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - WINDOW_SECONDS:
            seen.popleft()
        if len(seen) >= limit:
            return False
        seen.append(now)
        return True


@dataclass
class LoginThrottle:
    """How long to wait before answering a login, from recent failures of its name and IP."""

    base_seconds: float = 0.5
    cap_seconds: float = 20.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> int:
        now = self.clock()
        failures = self._failures.get(key)
        if not failures:
            return 0
        while failures and failures[0] <= now - FAILURE_MEMORY_SECONDS:
            failures.popleft()
        return len(failures)

    def delay(self, name: str, ip: str) -> float:
        """Seconds to wait before answering a failed login: 0 without recent failures, then
        ``base``, doubling per failure of the name or the IP (whichever has more), capped."""
        count = max(self._recent(f"name:{name}"), self._recent(f"ip:{ip}"))
        if count == 0:
            return 0.0
        return float(min(self.cap_seconds, self.base_seconds * 2 ** (count - 1)))

    def failed(self, name: str, ip: str) -> None:
        now = self.clock()
        if len(self._failures) >= MAX_FAILURE_KEYS:  # forget the quiet ones, then the oldest
            for key in [k for k in self._failures if not self._recent(k)]:
                del self._failures[key]
            while len(self._failures) >= MAX_FAILURE_KEYS:
                del self._failures[next(iter(self._failures))]
        for key in (f"name:{name}", f"ip:{ip}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str, ip: str) -> None:
        """A correct password clears the name's failures (not the IP's: another name there may
        still be being guessed)."""
        self._failures.pop(f"name:{name}", None)
