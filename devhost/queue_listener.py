"""A queue trigger listener with the WebJobs SDK's semantics, so local retries match Azure's.

What it reproduces (Storage Queues extension v5, ``QueueListener`` and ``QueueProcessor``):

* polling: after messages, poll again as soon as in-flight work drops to ``newBatchThreshold``;
  after an empty poll or an error, a randomized exponential back-off from 100 ms to
  ``maxPollingInterval``;
* a lease: messages are received invisible for 10 minutes (``DEVHOST_QUEUE_LEASE_SECONDS``) and
  the lease is renewed at half-time while the function runs, so a long function is not redelivered
  (on a thread of its own, devhost/leases.py: a function that blocks its loop keeps its message);
* poison handling: a message whose dequeue count already exceeds ``maxDequeueCount`` is moved to
  ``<queue>-poison`` without running; a failure at the last attempt moves it there; an earlier
  failure makes it visible again after ``visibilityTimeout``; a message that is not valid Base64
  (with ``messageEncoding`` base64) is moved there at once, as the host's decode-failure handler
  does.

The listener reads through a client without a decode policy: azure-storage-queue's
``TextBase64DecodePolicy`` raises for the whole batch on one bad message, where the host
isolates it.
"""

from __future__ import annotations

import base64
import logging
import random
import re
from contextlib import suppress

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devhost.app_loader import QueueFunction
from devhost.hostjson import MIN_POLLING_INTERVAL, QueueOptions
from devhost.invoke import Invoker
from devhost.leases import Lease, LeaseKeeper, error_code, taken_over
from devhost.listener import Listener

log = logging.getLogger("devhost.queue")

DEFAULT_LEASE_SECONDS = 600  # the host's fixed 10-minute visibility while a function runs


class Backoff:
    """The host's ``RandomizedExponentialBackoffStrategy``: 100 ms, ~200, ~300, ~500 ... max."""

    def __init__(self, minimum: float, maximum: float, jitter: float = 0.2) -> None:
        self.minimum, self.maximum, self.jitter = minimum, max(minimum, maximum), jitter
        self.current, self._exponent = minimum, 0

    def next_delay(self, found_messages: bool) -> float:
        """The wait before the next poll; ``found_messages``: work was found since the last wait."""
        if found_messages:
            self.current, self._exponent = self.minimum, 1
        elif self.current != self.maximum:
            interval = self.minimum
            if self._exponent > 0:
                factor = random.uniform(1 - self.jitter, 1 + self.jitter)
                interval += factor * 2 ** (self._exponent - 1) * self.minimum
            if interval < self.maximum:
                self.current, self._exponent = interval, self._exponent + 1
            else:
                self.current = self.maximum
        return self.current


def decode_body(text: str, encoding: str) -> bytes:
    """The message body as the worker receives it; raises ``ValueError`` for invalid Base64.

    .NET's ``Convert.FromBase64String`` ignores white space but nothing else, hence the strict
    ``validate=True`` after removing it.
    """
    if encoding == "none":
        return text.encode("utf-8")
    return base64.b64decode(re.sub(r"\s+", "", text), validate=True)


class QueueListener(Listener):
    """Polls one queue for one function until ``stop()``."""

    def __init__(
        self,
        spec: QueueFunction,
        options: QueueOptions,
        invoker: Invoker,
        service: QueueServiceClient,
        leases: LeaseKeeper,
    ) -> None:
        super().__init__(f"poll {spec.queue_name}")
        self.spec, self.options, self._invoker = spec, options, invoker
        self.poison_name = f"{spec.queue_name}-poison"
        self._queue: QueueClient = service.get_queue_client(spec.queue_name)
        self._poison: QueueClient = service.get_queue_client(self.poison_name)
        self._leases = leases
        self._backoff = Backoff(
            MIN_POLLING_INTERVAL.total_seconds(), options.max_polling_interval.total_seconds()
        )

    async def ensure_queue(self) -> None:
        """Create the trigger queue if it is missing, so a fresh Azurite works at once."""
        try:
            await self._queue.get_queue_properties(retry_total=0)
        except ResourceNotFoundError:
            with suppress(HttpResponseError):  # created meanwhile by someone else
                await self._queue.create_queue(retry_total=0)
            log.info("Created queue '%s' for function '%s'", self.spec.queue_name, self.spec.name)

    async def _receive(self) -> list[QueueMessage]:
        pages = self._queue.receive_messages(
            messages_per_page=self.options.batch_size,
            visibility_timeout=self._leases.lease_seconds,
            retry_total=0,  # the poll loop backs off on errors itself, as the host does
        ).by_page()
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            return []
        return [message async for message in page]

    async def _loop(self) -> None:
        """Poll until ``stop()``; messages already received still run then."""
        found = False
        while not self._stopping.is_set():
            try:
                batch = await self._receive()
            except ResourceNotFoundError:
                log.warning("Queue '%s' does not exist; creating it", self.spec.queue_name)
                with suppress(AzureError):
                    await self.ensure_queue()
                batch = []
            except AzureError as error:
                log.warning("Polling queue '%s' failed: %s", self.spec.queue_name, error)
                batch = []
            except Exception:
                log.exception("Unexpected error polling queue '%s'", self.spec.queue_name)
                batch = []
            if not batch:
                await self._sleep(self._backoff.next_delay(found))
                found = False
                continue
            found = True
            for message in batch:
                self._invoke_in_flight(self._process(message))
            await self._wait_for_new_batch_threshold()

    async def _wait_for_new_batch_threshold(self) -> None:
        while (
            len(self.in_flight) > self.options.new_batch_threshold and not self._stopping.is_set()
        ):
            await self._first_of(self.in_flight)

    async def _process(self, message: QueueMessage) -> None:
        lease = Lease(message.id, message.pop_receipt or "")
        text = message.content if isinstance(message.content, str) else ""
        try:
            if (
                message.dequeue_count is not None
                and message.dequeue_count > self.options.max_dequeue_count
            ):
                await self._move_to_poison(lease, text)
                return
            try:
                body = decode_body(text, self.options.message_encoding)
            except ValueError:
                log.warning(
                    "Message decoding has failed! Check MessageEncoding settings. MessageId=%s.",
                    message.id,
                )
                await self._move_to_poison(lease, text)
                return
            succeeded = await self._run(message, lease, body)
            if succeeded:
                await self._delete(lease)
            elif (message.dequeue_count or 0) >= self.options.max_dequeue_count:
                await self._move_to_poison(lease, text)
            else:
                await self._release(lease)
        except AzureError as error:
            log.error(
                "Completing message %s on '%s' failed: %s",
                message.id,
                self._queue.queue_name,
                error,
            )
        except Exception:
            log.exception("Unexpected error handling message %s", message.id)

    async def _run(self, message: QueueMessage, lease: Lease, body: bytes) -> bool:
        """Invoke the function while renewing the lease; True if it succeeded."""
        trigger = FunctionQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        inserted = message.inserted_on.isoformat() if message.inserted_on else None
        renewal = self._leases.keep(self.spec.queue_name, lease)  # on the leases' own thread
        try:
            await self._invoker.invoke(
                self.spec,
                trigger,
                reason=f"New queue message detected on '{self.spec.queue_name}'.",
                details=(
                    f"MessageId: {message.id}, DequeueCount: {message.dequeue_count}, "
                    f"InsertedOn: {inserted}"
                ),
            )
        except Exception:
            return False  # logged by the invoker; the return value of a queue function is ignored
        finally:
            await renewal.finish()  # after it, the lease holds the newest pop receipt
        return True

    async def _delete(self, lease: Lease) -> None:
        try:
            await self._queue.delete_message(lease.message_id, lease.pop_receipt)
        except HttpResponseError as error:
            if not taken_over(error):
                raise
            log.debug("Message %s could not be deleted: %s", lease.message_id, error_code(error))

    async def _release(self, lease: Lease) -> None:
        """Make a failed message visible again after ``visibilityTimeout`` for its next attempt."""
        seconds = int(self.options.visibility_timeout.total_seconds())
        try:
            await self._queue.update_message(
                lease.message_id, lease.pop_receipt, visibility_timeout=seconds
            )
        except HttpResponseError as error:
            if not taken_over(error):
                raise

    async def _move_to_poison(self, lease: Lease, text: str) -> None:
        """Copy the original message text to ``<queue>-poison`` (created on demand), then delete."""
        log.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self.options.max_dequeue_count,
            self.poison_name,
        )
        try:
            await self._poison.send_message(text)
        except ResourceNotFoundError:
            with suppress(HttpResponseError):
                await self._poison.create_queue()
            await self._poison.send_message(text)
        await self._delete(lease)
        log.info("Message %s moved to poison queue '%s'", lease.message_id, self.poison_name)
