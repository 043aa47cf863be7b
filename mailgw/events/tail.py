"""``mailgw events tail``: the events queue as a person watches it.

A storage queue has no push and no cursor: the tail polls it, takes each event off (receive, then
delete, as any consumer does) and prints it. ``--peek`` looks without taking, for a queue that
something else consumes; a queue shows at most its 32 oldest messages that way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

#: How often an idle tail asks the queue again.
POLL_SECONDS = 1.0


def decode(content: str) -> Any:
    """A queue message's event: Base64 JSON (the gateway's and the Functions host's encoding),
    or plain JSON (what another writer, such as an Event Grid subscription, may have put)."""
    try:
        return json.loads(base64.b64decode(content, validate=True))
    except (binascii.Error, ValueError):
        pass
    try:
        return json.loads(content)
    except ValueError:
        return content


def format_event(event: Any) -> str:
    """One line: time, type, message id, then what the type says (attempt, error, metadata)."""
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return f"(not an event) {str(event)[:500]}"
    data: dict[str, Any] = event["data"]
    kind = str(event.get("type", "")).removeprefix("mailgw.message.")
    parts = [
        str(event.get("time", "")),
        f"{kind:<9}",
        str(data.get("id", "")),
        f"{data.get('status')}",
    ]
    if data.get("attempt"):
        parts.append(f"attempt {data['attempt']}")
    if data.get("replay"):
        parts.append(f"replay {data['replay']}")
    error = data.get("lastError")
    if isinstance(error, dict):
        parts.append(str(error.get("code")))
    for key in ("sendAt", "nextAttemptAt"):
        if data.get(key):
            parts.append(f"{key} {data[key]}")
    if data.get("metadata"):
        parts.append(json.dumps(data["metadata"], separators=(",", ":")))
    return "  ".join(parts)


async def follow(
    client: QueueClient,
    show: Callable[[Any], None],
    *,
    peek: bool = False,
    count: int | None = None,
    idle_timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Show events as they arrive; returns how many were shown. Stops after ``count`` events, or
    after ``idle_timeout`` seconds without one (None: runs until cancelled)."""
    if peek:
        try:
            peeked = await client.peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return 0
        for message in peeked[:count]:
            show(decode(message.content))
        return len(peeked[:count])
    shown = 0
    last = clock()
    while True:
        before = shown
        try:
            async for message in client.receive_messages(
                messages_per_page=32, visibility_timeout=30
            ):
                show(decode(message.content))
                await client.delete_message(message)
                shown += 1
                last = clock()
                if count is not None and shown >= count:
                    return shown
        except ResourceNotFoundError:
            pass  # no event yet: the first one creates the queue
        if idle_timeout is not None and clock() - last >= idle_timeout:
            return shown
        if shown == before:  # nothing waiting: ask again in a moment
            await asyncio.sleep(POLL_SECONDS)
