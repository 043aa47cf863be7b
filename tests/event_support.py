"""Shared by the tests of outcome events: the committed JSON Schema, and reading the events queue.

Every test that sees an event (unit, integration, end to end) validates it against
docs/events.schema.json, so the documented contract and what the gateway emits cannot drift apart.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "events.schema.json"


@cache
def event_validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid_event(event: Mapping[str, Any]) -> None:
    errors = sorted(event_validator().iter_errors(dict(event)), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def unique(
    events: Iterable[Mapping[str, Any]], message_id: str | None = None
) -> list[Mapping[str, Any]]:
    """The events (of one message) in order, de-duplicated by event id as a consumer would: a
    republished event (at-least-once delivery) counts once, where it first arrived."""
    seen: set[str] = set()
    found = []
    for event in events:
        if message_id is not None and event["data"]["id"] != message_id:
            continue
        if event["id"] not in seen:
            seen.add(event["id"])
            found.append(event)
    return found


def kinds(events: Iterable[Mapping[str, Any]], message_id: str | None = None) -> list[str]:
    """``["accepted", "sent"]``: the types of the unique events (of one message), in order."""
    return [str(e["type"]).removeprefix("mailgw.message.") for e in unique(events, message_id)]


class EventQueueReader:
    """Takes the events off a storage queue as a consumer would (receive, then delete) and keeps
    every one it has seen, so each test picks its own message's events out of a shared queue."""

    def __init__(self, connection_string: str, queue: str) -> None:
        self.connection_string = connection_string
        self.queue = queue
        self.seen: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self.connection_string, self.queue)
        try:
            for message in client.receive_messages(messages_per_page=32, visibility_timeout=30):
                event = json.loads(base64.b64decode(message.content))
                assert_valid_event(event)
                self.seen.append(event)
                client.delete_message(message)
        except ResourceNotFoundError:
            pass  # no event yet: the first one creates the queue
        finally:
            client.close()
        return self.seen

    def of(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["data"]["id"] == message_id]
