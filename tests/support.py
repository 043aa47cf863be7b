"""Helpers shared by the tests: sample requests and waiting for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def sample_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "noreply@contoso.com",
        "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
        "subject": "Your receipt",
        "text": "plain body",
        "html": "<p>html body</p>",
    }
    body.update(overrides)
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
