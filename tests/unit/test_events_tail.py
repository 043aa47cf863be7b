"""``mailgw events tail``: what it makes of a queue message and how it prints an event."""

from __future__ import annotations

import base64
import json

from mailgw.events.tail import decode, format_event

EVENT = {
    "specversion": "1.0",
    "id": "5d0c2f9e-0000-5000-8000-000000000000",
    "source": "http://127.0.0.1:7071",
    "type": "mailgw.message.retrying",
    "subject": "messages/m-1",
    "time": "2026-06-01T12:00:02Z",
    "datacontenttype": "application/json",
    "data": {
        "id": "m-1",
        "status": "retrying",
        "attempt": 1,
        "replay": 0,
        "transport": "graph",
        "metadata": {"orderId": "42"},
        "lastError": {"code": "graph/ServiceUnavailable", "message": "busy", "hint": ""},
        "nextAttemptAt": "2026-06-01T12:00:32Z",
    },
}


def test_decodes_base64_json_and_plain_json_alike() -> None:
    text = json.dumps(EVENT)
    assert decode(base64.b64encode(text.encode()).decode()) == EVENT
    assert decode(text) == EVENT  # e.g. written by an Event Grid subscription
    assert decode("not json at all") == "not json at all"


def test_one_line_says_when_what_which_message_and_why() -> None:
    line = format_event(EVENT)
    assert "\n" not in line
    for part in (
        "2026-06-01T12:00:02Z",
        "retrying",
        "m-1",
        "attempt 1",
        "graph/ServiceUnavailable",
        "nextAttemptAt 2026-06-01T12:00:32Z",
        '{"orderId":"42"}',
    ):
        assert part in line
    assert format_event("garbage").startswith("(not an event)")
