"""Helpers for the Graph transport tests: requests, outbound messages, and a queue pipeline that
drives :class:`mailgw.delivery.Delivery` on real Azurite queues as the Functions host would."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from mailgw.delivery import Delivery, Outcome, RetryPolicy
from mailgw.models import Envelope, SendRequest
from mailgw.pacing import BudgetTable, Pacer, PacingLimits
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from mailgw.store import StateStore
from mailgw.transports.base import OutboundMessage, SendReceipt, Transport
from mailgw.transports.errors import DeliveryError
from support import TEST_SEAL, pull, wait_until_async

SENDER = "noreply@contoso.com"
#: draft mode's submission grace in tests that wait it out (MAILGW_GRAPH_SUBMIT_GRACE_SECONDS)
SHORT_GRACE = 2
SHARED = "shared-billing@contoso.com"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body(**overrides: Any) -> dict[str, Any]:
    """A send request document (the wire form), text only unless told otherwise."""
    document: dict[str, Any] = {
        "from": SENDER,
        "to": ["a@example.com"],
        "subject": "Your receipt",
        "text": "plain body",
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def attachment(
    name: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    *,
    inline: bool = False,
    content_id: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": name,
        "contentType": content_type,
        "contentBase64": b64(data),
        "inline": inline,
    }
    if content_id is not None:
        item["contentId"] = content_id
    return item


def request(**overrides: Any) -> SendRequest:
    return SendRequest.model_validate(body(**overrides))


def outbound(
    document: dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
    attempt: int = 1,
    checkpoint: dict[str, str] | None = None,
) -> OutboundMessage:
    return OutboundMessage(
        id=message_id or uuid.uuid4().hex,
        request=SendRequest.model_validate(document or body()),
        attempt=attempt,
        checkpoint=checkpoint,
    )


class CrashAfterSend:
    """The worker dies after Graph accepted the message, before Delivery records it as sent (the
    host then redelivers the same queue message). In-process stand-in for a killed worker."""

    name = "graph"

    def __init__(self, inner: Transport):
        self.inner = inner
        self.crashes = 1

    async def send(self, message: OutboundMessage) -> SendReceipt:
        receipt = await self.inner.send(message)
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("worker killed after the send")
        return receipt

    async def probe(self, mailbox: str | None) -> str:
        return await self.inner.probe(mailbox)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Step:
    """One queue message handled: the envelope as it was read from the queue, the transport
    progress the attempt started from (the record's checkpoint: only the record holds it), and
    the outcome."""

    envelope: Envelope
    outcome: Outcome
    checkpoint: dict[str, str] | None = None


@dataclass
class Pipeline:
    """Delivery wired to real queues. ``step()`` is one queue-trigger invocation."""

    queue: MailQueue
    delivery: Delivery
    steps: list[Step] = field(default_factory=list)

    async def submit(
        self,
        document: dict[str, Any],
        *,
        message_id: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        envelope = Envelope(
            id=message_id or uuid.uuid4().hex,
            created_at=created_at or datetime.now(UTC),
            request=document,
        )
        await self.queue.enqueue(envelope)
        return envelope.id

    async def next_message(self, timeout: float = 10.0) -> Any:
        return await wait_until_async(
            lambda: pull(self.queue), timeout=timeout, what="a visible queue message"
        )

    async def receive(self, visibility: int = 30, timeout: float = 10.0) -> Any:
        """Receive one visible message WITHOUT deleting it, as a worker that may crash: unless
        deleted, it comes back after ``visibility`` seconds with a higher dequeue count."""

        async def one() -> Any:
            try:
                async for message in self.queue.queue().receive_messages(
                    visibility_timeout=visibility
                ):
                    return message
            except ResourceNotFoundError:
                pass
            return None

        return await wait_until_async(one, timeout=timeout, what="a visible queue message")

    async def step(self, timeout: float = 10.0) -> Step:
        message = await self.next_message(timeout)
        envelope = Envelope.model_validate_json(message.content)
        before = await self.delivery.store.get(envelope.id)
        outcome = await self.delivery.handle(message.content, queue_message_id=message.id)
        done = Step(envelope, outcome, before.checkpoint if before else None)
        self.steps.append(done)
        return done

    async def run(self, limit: int = 20, timeout: float = 10.0) -> list[Step]:
        """Handle messages until one is finished with (sent or poisoned)."""
        for _ in range(limit):
            done = await self.step(timeout)
            if done.outcome.action in ("sent", "poisoned"):
                return self.steps
        raise AssertionError(f"not finished after {limit} deliveries: {self.actions}")

    @property
    def actions(self) -> list[str]:
        return [s.outcome.action for s in self.steps]

    async def poisoned(self) -> Envelope:
        message = await pull(self.queue, self.queue.poison_queue_name)
        assert message is not None, "nothing in the poison queue"
        return Envelope.model_validate_json(message.content)

    async def is_empty(self) -> bool:
        return await pull(self.queue) is None


async def refusal(transport: Transport) -> DeliveryError:
    """The DeliveryError that sending :func:`outbound` through ``transport`` raises."""
    with pytest.raises(DeliveryError) as refused:
        await transport.send(outbound())
    return refused.value


async def unsent_refusal(transport: Transport, code: str, *, hint: Sequence[str]) -> DeliveryError:
    """:func:`refusal`, asserting it is ``code``, worth retrying, certainly not sent (not
    ambiguous), and that its hint names each of ``hint`` (the settings to look at)."""
    error = await refusal(transport)
    assert (error.code, error.transient, error.ambiguous) == (code, True, False)
    assert [name for name in hint if name not in error.hint] == []
    return error


# --- fixtures for a conftest that defines ``queue_settings`` (import them there) ---------------

#: retries become visible at once (queue delays are whole seconds; backoff this small rounds to 0)
FAST_RETRIES = RetryPolicy(max_attempts=8, base_seconds=0.001, cap_seconds=0.001)


@pytest.fixture
async def mail_queue(queue_settings: Settings) -> AsyncIterator[MailQueue]:
    queue = MailQueue(
        queue_settings.storage(),
        queue_settings.queue,
        queue_settings.payload_container,
        TEST_SEAL,
    )
    yield queue
    await queue.close()


@pytest.fixture
async def store(queue_settings: Settings) -> AsyncIterator[StateStore]:
    """The message states on Azurite: what Delivery needs besides settings, queue, transport."""
    state = StateStore(queue_settings.storage(), queue_settings.state_table)
    yield state
    await state.close()


@pytest.fixture
def make_pipeline(
    queue_settings: Settings, mail_queue: MailQueue, store: StateStore
) -> Callable[..., Pipeline]:
    """``make_pipeline(transport, retry=RetryPolicy(...), pacer=...)``: Delivery on the real
    queues and state table (paced only when given a pacer)."""

    def make(
        transport: Transport, retry: RetryPolicy = FAST_RETRIES, pacer: Pacer | None = None
    ) -> Pipeline:
        delivery = Delivery(queue_settings, mail_queue, transport, store, retry=retry, pacer=pacer)
        return Pipeline(mail_queue, delivery)

    return make


@pytest.fixture
async def pacer(store: StateStore) -> AsyncIterator[Pacer]:
    """Pacing with the default budgets, kept in the test's state table."""
    paced = Pacer(BudgetTable(store.table), PacingLimits())
    yield paced
    await paced.close()
