"""The one small interface every transport (outbox, Graph, SMTP, relay) implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from mailgw.mime import Submission
from mailgw.models import SendRequest


@dataclass(frozen=True)
class OutboundMessage:
    """A validated message ready to send; ``id`` is stable across retries (Message-ID, dedup)."""

    id: str
    request: SendRequest
    attempt: int = 0
    #: what an earlier attempt left to resume from (a transport's own keys, e.g. a draft id)
    checkpoint: dict[str, str] | None = None
    #: persists progress (e.g. the draft's id, before it is sent), so that even a crashed
    #: attempt can be resumed without sending twice
    save_checkpoint: Callable[[dict[str, str]], Awaitable[None]] | None = None
    #: a raw MIME message (SMTP intake), sent as submitted to its envelope recipients;
    #: ``request`` then only summarises it (mailbox, recipients)
    mime: Submission | None = None


@dataclass(frozen=True)
class SendReceipt:
    """What the transport did: where the message went and the provider's own reference, if any."""

    transport: str
    detail: str = ""
    #: recipients the server refused while taking the message for the others (a count: the
    #: addresses, Bcc included, are never recorded or logged)
    refused: int = 0


class Transport(Protocol):
    name: str

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Send once. Raise ``DeliveryError`` for classified failures; anything else is a crash."""
        ...

    async def probe(self, mailbox: str | None) -> str:
        """Check, without sending anything, that a send as ``mailbox`` could get through (``mailgw
        doctor``): say what was seen, or raise ``DeliveryError`` with the operator's hint."""
        ...

    async def aclose(self) -> None: ...
