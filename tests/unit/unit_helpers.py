"""Shared pieces of the unit tests (imported as `unit_helpers`): a fixed clock, a valid request."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

# Every test that depends on "now" uses this instant, so the sendAt window is deterministic.
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)

VALID_REQUEST: dict[str, Any] = {
    "from": "noreply@contoso.com",
    "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
    "subject": "Your receipt",
    "text": "plain body",
}


def valid_request(**overrides: Any) -> dict[str, Any]:
    """A fresh deep copy of a minimal valid request, with top-level keys replaced."""
    body = copy.deepcopy(VALID_REQUEST)
    body.update(overrides)
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
