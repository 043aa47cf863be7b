"""The gateway's seal on its own queue messages: only the gateway can write an envelope.

A queue producer may send mail as an allowed sender, and nothing more. Yet the gateway's envelope
(``"mailgw": 1``) carries what the gateway must be able to trust: where a claim-checked payload
is, which replay and attempt a copy belongs to, the error it failed with, the message id whose
record it changes. So every envelope the gateway writes is sealed: an HMAC-SHA256 of its canonical
JSON under a key kept in the gateway's state table, which producers (queue access only) cannot
read. An envelope whose seal does not verify is not the gateway's: it is recorded as a failed
message under its own queue message id, and nothing it claims is used (docs/trust-model.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable

from mailgw.models import Envelope

KeySource = Callable[[], Awaitable[bytes]]


def canonical(envelope: Envelope) -> bytes:
    """The bytes the seal covers: the envelope without its seal, keys sorted, so that any copy
    that parses to the same envelope verifies, however it was spaced."""
    document = envelope.to_json()
    document.pop("sig", None)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class EnvelopeSeal:
    """Seals and verifies envelopes with the gateway's key (fetched once per process)."""

    def __init__(self, key_source: KeySource) -> None:
        self._source = key_source
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def with_key(cls, key: bytes) -> EnvelopeSeal:
        """A seal with a fixed key (tests and benchmarks)."""

        async def fixed() -> bytes:
            return key

        seal = cls(fixed)
        seal._key = key
        return seal

    async def key(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._source()
        return self._key

    async def seal(self, envelope: Envelope) -> Envelope:
        signature = self._sign(await self.key(), envelope)
        return envelope.model_copy(update={"sig": signature})

    async def verify(self, envelope: Envelope) -> bool:
        if not envelope.sig:
            return False
        return hmac.compare_digest(envelope.sig, self._sign(await self.key(), envelope))

    @staticmethod
    def _sign(key: bytes, envelope: Envelope) -> str:
        return hmac.new(key, canonical(envelope), hashlib.sha256).hexdigest()
