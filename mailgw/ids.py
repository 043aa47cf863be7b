"""Message ids: UUIDv7 strings, so ids sort by creation time (useful for listing and tables)."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime


def new_message_id() -> str:
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def could_be_message_id(text: str) -> bool:
    """Whether ``text`` could name a message at all: the gateway's ids (and queue message ids) are
    at most 64 characters, none of them one that Azure Table refuses in a key ('/', '\\', '#',
    '?', control characters). Anything else is unknown without asking storage (which would
    answer 400, not 404)."""
    return 0 < len(text) <= 64 and not any(
        c in "/\\#?" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text
    )


def issued_at(message_id: str) -> datetime | None:
    """When a UUIDv7 id was made (its first 48 bits); None for any other id."""
    try:
        value = uuid.UUID(message_id)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


#: The namespace of ids derived from an Idempotency-Key (any fixed UUID; changing it would give
#: every key a new id).
KEY_NAMESPACE = uuid.UUID("6f1c2a7e-4b1d-5e8a-9c3f-0d2b7a61e5c4")


def keyed_message_id(key: str, generation: int = 1, scope: str | None = None) -> str:
    """The message id an ``Idempotency-Key`` stands for: derived from the key, so the key's
    record *is* the message's record (one entity, one write). ``generation`` moves on when an
    expired key is used again for a new message. ``scope``: whose key it is (the calling app in
    Entra ID mode), so two apps that both use ``order-43`` make two messages, as the IETF draft
    intends; without a scope (Functions keys) a key is the deployment's."""
    name = f"{generation}\x00{key}" if scope is None else f"{generation}\x00{scope}\x00{key}"
    return str(uuid.uuid5(KEY_NAMESPACE, name))
