"""Message ids: UUIDv7 strings, so ids sort by creation time (useful for listing and tables)."""

from __future__ import annotations

import re
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


#: What any message id looks like: the gateway's UUIDs, and the queue message ids (GUIDs) that a
#: producer's messages get. Anything else names no message, and never reaches a storage key.
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def plausible_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


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
