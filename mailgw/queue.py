"""The outbound mail queue: envelopes in, claim check for large payloads, poison queue out.

A storage queue message holds at most 64 KiB, and the host's Base64 encoding spends a third of that.
Anything larger (a 20 MB attachment) is written to Blob storage first and the queue message carries
only a reference with the payload's SHA-256, so delivery can prove it read what intake wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from mailgw.errors import PayloadMissing
from mailgw.models import Envelope, PayloadRef
from mailgw.storage import StorageConnection, blob_service_client, queue_client

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

QUEUE_MESSAGE_LIMIT = 64 * 1024
# Base64 turns 3 bytes into 4 characters; keep a margin for the service's own framing.
INLINE_LIMIT = QUEUE_MESSAGE_LIMIT * 3 // 4 - 1024
MAX_VISIBILITY_DELAY = timedelta(days=7)


@dataclass(frozen=True)
class SentMessage:
    """A message as enqueued: enough to delete it again (the queue's id and pop receipt)."""

    queue: str
    message_id: str
    pop_receipt: str
    envelope: Envelope


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


class MailQueue:
    """Sends envelopes to ``MAILGW_QUEUE`` (or its poison twin), moving large payloads to Blob."""

    def __init__(self, connection: StorageConnection, queue_name: str, payload_container: str):
        self.connection = connection
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self.payload_container = payload_container
        self._queues: dict[str, QueueClient] = {}
        self._blobs: BlobServiceClient | None = None

    def queue(self, name: str | None = None) -> QueueClient:
        name = name or self.queue_name
        if name not in self._queues:
            self._queues[name] = queue_client(self.connection, name)
        return self._queues[name]

    def blobs(self) -> BlobServiceClient:
        if self._blobs is None:
            self._blobs = blob_service_client(self.connection)
        return self._blobs

    async def close(self) -> None:
        for client in self._queues.values():
            await client.close()
        if self._blobs is not None:
            await self._blobs.close()

    async def enqueue(
        self, envelope: Envelope, *, delay: timedelta | None = None, poison: bool = False
    ) -> SentMessage:
        """Send an envelope, claim-checking its payload when the message would be too large.

        Returns where it went, with what is needed to take it back (:meth:`delete`).
        """
        text = dumps(envelope.to_json())
        if len(text.encode()) > INLINE_LIMIT:
            envelope = await self._claim_check(envelope)
            text = dumps(envelope.to_json())
        # Rounded up: a server's Retry-After (or a sendAt) is never undercut by a fraction.
        wait = timedelta(0) if delay is None else min(delay, MAX_VISIBILITY_DELAY)
        seconds = math.ceil(wait.total_seconds())
        queue_name = self.poison_queue_name if poison else self.queue_name
        sent = await self._send(queue_name, text, max(seconds, 0))
        return SentMessage(queue_name, sent.id, sent.pop_receipt or "", envelope)

    async def _send(self, queue_name: str, text: str, visibility: int) -> QueueMessage:
        client = self.queue(queue_name)
        try:
            return await client.send_message(text, visibility_timeout=visibility or None)
        except ResourceNotFoundError:
            # Bicep creates the queues in Azure; locally the first message creates them.
            await _create_ignoring_race(client.create_queue)
            return await client.send_message(text, visibility_timeout=visibility or None)

    async def delete(self, sent: SentMessage) -> None:
        """Take back a message this process sent (and its claim-checked payload). If a worker
        has received it meanwhile (its pop receipt changed), it stays: delivery recognises the
        copy by its id and does not send it twice."""
        try:
            await self.queue(sent.queue).delete_message(sent.message_id, sent.pop_receipt)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as error:
            if error.status_code != 400:  # 400 PopReceiptMismatch: already being processed
                raise
        if sent.envelope.payload_ref is not None:
            await self.delete_payload(sent.envelope.payload_ref)

    async def delete_payload(self, ref: PayloadRef) -> None:
        """Delete a kept or claim-checked payload (gone already is fine)."""
        with contextlib.suppress(ResourceNotFoundError):
            await self.blobs().get_blob_client(ref.container, ref.blob).delete_blob()

    async def _claim_check(self, envelope: Envelope) -> Envelope:
        ref = await self.store_payload(envelope)
        return envelope.model_copy(update={"request": None, "raw": None, "payload_ref": ref})

    async def store_payload(self, envelope: Envelope) -> PayloadRef:
        """Keep the envelope's payload in Blob (claim check, and for replaying failed messages);
        an envelope that is already a claim check keeps its reference."""
        if envelope.payload_ref is not None:
            return envelope.payload_ref
        payload: dict[str, Any] = (
            {"request": envelope.request} if envelope.request is not None else {"raw": envelope.raw}
        )
        data = dumps(payload).encode()
        name = f"{envelope.id}.json"
        container = self.blobs().get_container_client(self.payload_container)
        try:
            await container.upload_blob(name, data, overwrite=True)
        except ResourceNotFoundError:
            await _create_ignoring_race(container.create_container)
            await container.upload_blob(name, data, overwrite=True)
        return PayloadRef(
            container=self.payload_container,
            blob=name,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )

    async def load_payload(self, envelope: Envelope) -> Envelope:
        """The envelope with its payload inline again (reads and verifies the claim check)."""
        ref = envelope.payload_ref
        if ref is None:
            return envelope
        blob = self.blobs().get_blob_client(ref.container, ref.blob)
        try:
            downloader = await blob.download_blob()
            data = await downloader.readall()
        except ResourceNotFoundError:
            raise PayloadMissing(
                f"payload blob {ref.container}/{ref.blob} does not exist"
            ) from None
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise PayloadMissing(
                f"payload blob {ref.container}/{ref.blob} does not match its SHA-256"
            )
        payload = json.loads(data)
        return envelope.model_copy(
            update={
                "request": payload.get("request"),
                "raw": payload.get("raw"),
                "payload_ref": None,
            }
        )

    async def ping(self) -> dict[str, Any]:
        """Queue reachability for the health check: the approximate depth of both queues."""
        depth = {}
        for name in (self.queue_name, self.poison_queue_name):
            try:
                props = await self.queue(name).get_queue_properties()
                depth[name] = props.approximate_message_count
            except ResourceNotFoundError:
                depth[name] = 0
        return depth


async def _create_ignoring_race(create: Any) -> None:
    with contextlib.suppress(ResourceExistsError):
        await create()
