"""The Graph stand-in's admin API seen from another process (``python -m standins.graph``)."""

from __future__ import annotations

from typing import Any

from standins.admin import RemoteAdmin

__all__ = ["RemoteGraphStandIn"]


class RemoteGraphStandIn(RemoteAdmin):
    """Synchronous client of a Graph stand-in running in another process."""

    def delivered(self) -> list[dict[str, Any]]:
        return self.records("delivered")

    def requests(self) -> list[dict[str, Any]]:
        return self.records("requests")

    def wait_delivered(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        return self.wait_records("delivered", count, timeout)
