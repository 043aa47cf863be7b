"""Where outcome events go: a storage queue, an Event Grid topic, or both.

Each sink makes one try per publish, bounded by a short timeout, and raises when it fails: the
publisher (:mod:`mailgw.events.publisher`) keeps what a sink could not take and publishes it again
later, so a slow or throttling sink never holds up mail and never costs it an event.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from mailgw.events.batching import Batcher
from mailgw.storage import StorageConnection, queue_client, use_env_settings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.eventgrid.aio import EventGridPublisherClient
    from azure.storage.queue.aio import QueueClient

Event = Mapping[str, Any]

_EVENT_MODEL_LOGGER = "azure.eventgrid._legacy._generated._serialization"


class EventSink(Protocol):
    #: stable: kept with an event a sink could not take, to publish it there again
    name: str

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order, or raise."""

    async def close(self) -> None: ...


def event_json(event: Event) -> str:
    """Compact JSON, ASCII only (like the mail queue: hostile metadata cannot fail the write)."""
    return json.dumps(event, separators=(",", ":"))


class QueueSink:
    """``MAILGW_EVENTS_QUEUE``: one event per queue message, Base64-encoded JSON as the Functions
    host expects, so a queue-triggered function can subscribe without settings."""

    name = "queue"

    def __init__(self, connection: StorageConnection, queue_name: str, timeout: float) -> None:
        self.queue_name = queue_name
        self._connection = connection
        self._timeout = timeout
        self._client: QueueClient | None = None

    def client(self) -> QueueClient:
        if self._client is None:
            self._client = queue_client(
                self._connection,
                self.queue_name,
                retry_total=0,
                connection_timeout=self._timeout,
                read_timeout=self._timeout,
            )
        return self._client

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            try:
                await self.client().send_message(event_json(event))
            except ResourceNotFoundError:
                # Bicep creates the queue in Azure; locally the first event creates it.
                with contextlib.suppress(ResourceExistsError):
                    await self.client().create_queue()
                await self.client().send_message(event_json(event))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class EventGridSink:
    """``MAILGW_EVENTGRID_ENDPOINT``: a custom topic in the CloudEvents 1.0 schema, published with
    azure-eventgrid's async client as ``application/cloudevents-batch+json`` batches, signed in with
    the gateway's managed identity (role EventGrid Data Sender; the topic has no keys)."""

    name = "eventgrid"

    def __init__(self, endpoint: str, credential: AsyncTokenCredential, timeout: float) -> None:
        self.endpoint = endpoint
        self._credential = credential
        self._timeout = timeout
        self._client: EventGridPublisherClient | None = None
        self._batcher = Batcher(self._send)
        self._options: dict[str, Any] = {}
        if urlsplit(endpoint).scheme == "http":
            # azure-core refuses a bearer token over plain http unless told (settings allow http
            # on loopback only, for the stand-in); the SDK hands that option to its event model
            # too, which then logs a warning per event: not worth a line each.
            self._options["enforce_https"] = False
            logging.getLogger(_EVENT_MODEL_LOGGER).setLevel(logging.ERROR)

    def client(self) -> EventGridPublisherClient:
        if self._client is None:
            from azure.eventgrid.aio import EventGridPublisherClient

            self._client = EventGridPublisherClient(
                self.endpoint,
                self._credential,
                retry_total=0,  # 429/503 are retried by the publisher, later, with backoff
                connection_timeout=self._timeout,
                read_timeout=self._timeout,
                use_env_settings=use_env_settings(),
            )
        return self._client

    async def publish(self, events: Sequence[Event]) -> None:
        await self._batcher.submit(events)

    async def _send(self, events: list[Event]) -> None:
        await self.client().send([dict(event) for event in events], **self._options)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        await self._credential.close()
