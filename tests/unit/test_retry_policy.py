"""The backoff between delivery attempts: Graph's Retry-After exactly, else 30 s doubling to 1 h,
with jitter in the upper half of each step so retries of many messages spread out."""

from __future__ import annotations

import random

import pytest

from mailgw.delivery import RetryPolicy


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 30), (1, 30), (2, 60), (3, 120), (4, 240), (7, 1920), (8, 3600), (30, 3600)],
)
def test_backoff_doubles_from_30_seconds_to_an_hour_with_jitter_in_the_upper_half(
    attempt: int, ceiling: float
) -> None:
    policy, rng = RetryPolicy(), random.Random(7)
    delays = [policy.delay(attempt, None, rng) for _ in range(500)]
    assert min(delays) >= ceiling / 2
    assert max(delays) <= ceiling
    assert max(delays) - min(delays) > ceiling / 4  # jittered, not a fixed step


def test_retry_after_is_honoured_exactly_and_never_negative() -> None:
    policy, rng = RetryPolicy(), random.Random(7)
    assert policy.delay(5, 12.5, rng) == 12.5
    assert policy.delay(1, 7200.0, rng) == 7200.0  # the server knows better than the cap
    assert policy.delay(1, -3.0, rng) == 0.0
