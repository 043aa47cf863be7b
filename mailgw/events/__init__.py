"""Outcome events: publishing what :mod:`mailgw.state.events` says happened to each message.

:mod:`.publisher` publishes after each transition and keeps what a sink could not take;
:mod:`.sinks` are the storage queue and the Event Grid topic; :mod:`.pending` the kept events;
:mod:`.batching` groups concurrent publishes into one Event Grid request. docs/events.md.
"""

from mailgw.events.publisher import Events

__all__ = ["Events"]
