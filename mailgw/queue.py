"""The outbound mail queue: sealed envelopes in, claim check for large payloads, poison queue out.

A storage queue message holds at most 64 KiB, and the host's Base64 encoding spends a third of that.
Anything larger (a 20 MB attachment) is written to Blob storage first and the queue message carries
only a reference with the payload's SHA-256, so delivery can prove it read what intake wrote.

Every envelope is sealed on the way in (:mod:`mailgw.seal`) and its seal checked on the way out, and
every copy that needs a claim check gets a blob of its own (``<id>/<random>.json``): taking back
one copy never deletes a payload that another copy, or a failed message kept for replay, uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from pydantic import ValidationError

from mailgw import telemetry
from mailgw.errors import InvalidEnvelope, InvalidMessage, PayloadMissing
from mailgw.models import Envelope, MimePayload, PayloadRef
from mailgw.seal import EnvelopeSeal
from mailgw.storage import StorageConnection, blob_service_client, queue_client

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

QUEUE_MESSAGE_LIMIT = 64 * 1024
# Base64 turns 3 bytes into 4 characters; keep a margin for the service's own framing.
INLINE_LIMIT = QUEUE_MESSAGE_LIMIT * 3 // 4 - 1024
MAX_VISIBILITY_DELAY = timedelta(days=7)
#: How long a message stays in the queue once it is due: the service's usual seven days. The
#: time-to-live is set explicitly (delay + this) so a message scheduled close to seven days ahead
#: can never expire before it is due.
TIME_TO_LIVE_AFTER_DUE = timedelta(days=7)


@dataclass(frozen=True)
class SentMessage:
    """A message as enqueued: enough to take it back (the queue's id and pop receipt), and the
    claim-check blob this very enqueue created, if any (the only payload a take-back deletes)."""

    queue: str
    message_id: str
    pop_receipt: str
    envelope: Envelope
    created_payload: PayloadRef | None = None
    #: when the queue service will drop it (its time-to-live, counted from now)
    expires_on: datetime | None = None


def dumps(document: dict[str, Any]) -> str:
    """Compact JSON, ASCII only: a lone surrogate in hostile input (valid JSON, not valid UTF-8)
    is kept escaped instead of failing the write that records it."""
    return json.dumps(document, separators=(",", ":"))


def parse_document(text: str) -> Any:
    """JSON, or :class:`InvalidMessage` saying why not. Integers past Python's digit limit and
    absurd nesting are refused like any other bad JSON, never raised as a crash."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(
            f"the queue message is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage(f"the queue message is not acceptable JSON: {exc}") from None


class MailQueue:
    """Sends envelopes to ``MAILGW_QUEUE`` (or its poison twin), moving large payloads to Blob."""

    def __init__(
        self,
        connection: StorageConnection,
        queue_name: str,
        payload_container: str,
        seal: EnvelopeSeal,
    ):
        self.connection = connection
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self.poison_poison_queue_name = f"{queue_name}-poison-poison"
        self.payload_container = payload_container
        self.seal = seal
        self._queues: dict[str, QueueClient] = {}
        self._blobs: BlobServiceClient | None = None

    def queue(self, name: str | None = None) -> QueueClient:
        name = name or self.queue_name
        if name not in self._queues:
            self._queues[name] = queue_client(self.connection, name)
        return self._queues[name]

    def raw_queue(self, name: str) -> QueueClient:
        """A client that hands message content over undecoded (bytes), for a queue that may hold
        what the host itself could not decode."""
        key = f"{name}#raw"
        if key not in self._queues:  # no decode policy: the SDK hands over the text as stored
            self._queues[key] = queue_client(self.connection, name, message_decode_policy=None)
        return self._queues[key]

    def blobs(self) -> BlobServiceClient:
        if self._blobs is None:
            self._blobs = blob_service_client(self.connection)
        return self._blobs

    async def close(self) -> None:
        for client in self._queues.values():
            await client.close()
        if self._blobs is not None:
            await self._blobs.close()

    # --- writing ----------------------------------------------------------------------------------

    async def enqueue(
        self, envelope: Envelope, *, delay: timedelta | None = None, poison: bool = False
    ) -> SentMessage:
        """Seal and send an envelope, claim-checking its payload when the message would be too
        large. Returns where it went, with what is needed to take it back (:meth:`delete`)."""
        queue_name = self.poison_queue_name if poison else self.queue_name
        with telemetry.enqueuing(envelope, queue_name) as traced:
            return await self._enqueue(traced, queue_name, delay)

    async def _enqueue(
        self, envelope: Envelope, queue_name: str, delay: timedelta | None
    ) -> SentMessage:
        created = None
        text = dumps(envelope.to_json())
        if len(text.encode()) > INLINE_LIMIT:
            created = await self.store_payload(envelope)
            envelope = envelope.model_copy(
                update={"request": None, "raw": None, "mime": None, "payload_ref": created}
            )
        envelope = await self.seal.seal(envelope)
        text = dumps(envelope.to_json())
        # Rounded up: a server's Retry-After (or a sendAt) is never undercut by a fraction.
        wait = timedelta(0) if delay is None else min(delay, MAX_VISIBILITY_DELAY)
        seconds = max(math.ceil(wait.total_seconds()), 0)
        sent = await self._send(queue_name, text, seconds)
        return SentMessage(
            queue_name, sent.id, sent.pop_receipt or "", envelope, created, sent.expires_on
        )

    async def _send(self, queue_name: str, text: str, visibility: int) -> QueueMessage:
        client = self.queue(queue_name)
        ttl = visibility + int(TIME_TO_LIVE_AFTER_DUE.total_seconds())
        try:
            return await client.send_message(
                text, visibility_timeout=visibility or None, time_to_live=ttl
            )
        except ResourceNotFoundError:
            # Bicep creates the queues in Azure; locally the first message creates them.
            await _create_ignoring_race(client.create_queue)
            return await client.send_message(
                text, visibility_timeout=visibility or None, time_to_live=ttl
            )

    async def delete(self, sent: SentMessage) -> None:
        """Take back a message this process sent. If a worker has received it meanwhile (its pop
        receipt changed, or it is gone), it stays with its payload: delivery recognises the copy
        by its id and does not send it twice. Only a payload this enqueue created is deleted."""
        try:
            await self.queue(sent.queue).delete_message(sent.message_id, sent.pop_receipt)
        except ResourceNotFoundError:
            return  # received and finished already: its payload may be kept for a replay
        except HttpResponseError as error:
            if error.status_code == 400:  # PopReceiptMismatch: being processed right now
                return
            raise
        if sent.created_payload is not None:
            await self.delete_payload(sent.envelope.id, sent.created_payload)

    # --- payloads ---------------------------------------------------------------------------------

    async def store_payload(self, envelope: Envelope) -> PayloadRef:
        """Keep the envelope's payload in a blob of its own (claim check, and for replaying failed
        messages); an envelope that is already a claim check keeps its reference."""
        if envelope.payload_ref is not None:
            return envelope.payload_ref
        payload: dict[str, Any]
        if envelope.request is not None:
            payload = {"request": envelope.request}
        elif envelope.mime is not None:
            payload = {"mime": envelope.mime.model_dump(mode="json", by_alias=True)}
        else:
            payload = {"raw": envelope.raw}
        data = dumps(payload).encode()
        name = f"{envelope.id}/{uuid.uuid4().hex}.json"
        container = self.blobs().get_container_client(self.payload_container)
        try:
            await container.upload_blob(name, data, overwrite=False)
        except ResourceNotFoundError:
            await _create_ignoring_race(container.create_container)
            await container.upload_blob(name, data, overwrite=False)
        return PayloadRef(
            container=self.payload_container,
            blob=name,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )

    def owns(self, message_id: str, ref: PayloadRef) -> bool:
        """A payload of this message in the gateway's own container: the only blobs the gateway
        reads or deletes for it, whatever a reference says."""
        return ref.container == self.payload_container and (
            ref.blob.startswith(f"{message_id}/") or ref.blob == f"{message_id}.json"
        )

    async def delete_payload(self, message_id: str, ref: PayloadRef) -> None:
        """Delete a kept or claim-checked payload of ``message_id`` (gone already is fine)."""
        if not self.owns(message_id, ref):
            return
        with contextlib.suppress(ResourceNotFoundError):
            await self.blobs().get_blob_client(ref.container, ref.blob).delete_blob()

    async def load_payload(self, envelope: Envelope) -> Envelope:
        """The envelope with its payload inline again (reads and verifies the claim check)."""
        ref = envelope.payload_ref
        if ref is None:
            return envelope
        if not self.owns(envelope.id, ref):
            raise PayloadMissing(f"payload {ref.container}/{ref.blob} is not this message's")
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
        payload = parse_document(data.decode("utf-8", errors="replace"))
        if not isinstance(payload, dict):
            payload = {}
        mime = payload.get("mime")
        try:
            kept = MimePayload.model_validate(mime) if mime is not None else None
        except ValidationError as exc:
            raise PayloadMissing(f"the kept MIME payload is malformed: {exc}") from None
        return envelope.model_copy(
            update={
                "request": payload.get("request"),
                "raw": payload.get("raw"),
                "mime": kept,
                "payload_ref": None,
            }
        )

    # --- reading ----------------------------------------------------------------------------------

    async def read(self, text: str, queue_message_id: str, now: datetime) -> Envelope:
        """A queue message as an envelope: the gateway's own (its seal verified), or a producer's
        bare send request, which gets the queue message id as its message id. Raises
        :class:`InvalidMessage` (not a JSON object) or :class:`InvalidEnvelope` (claims to be
        the gateway's but is malformed or its seal does not verify)."""
        document = parse_document(text)
        if not isinstance(document, dict):
            raise InvalidMessage("the queue message is not a JSON object")
        if "mailgw" not in document:
            bare = Envelope(id=queue_message_id, created_at=now, request=document, source="queue")
            _writable(bare)
            return bare
        try:
            envelope = Envelope.model_validate(document)
            sealed = await self.seal.verify(envelope)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise InvalidEnvelope(f"the gateway envelope is malformed: {reason}") from None
        except Exception as exc:  # whatever the content makes the check raise, it is not ours
            raise InvalidEnvelope(f"the gateway envelope is malformed: {exc}") from None
        if not sealed:
            raise InvalidEnvelope(
                "the message claims to be the gateway's envelope but does not carry its seal: "
                "it was not written by this gateway, and nothing it claims was used"
            )
        return envelope

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


def _writable(envelope: Envelope) -> None:
    """A producer's request the gateway could not write back as JSON (nesting past the
    serializer's depth) is refused like any other bad message, never raised later as a crash."""
    try:
        dumps(envelope.to_json())
    except Exception as exc:
        raise InvalidMessage(f"the queue message cannot be processed: {exc}") from None


async def _create_ignoring_race(create: Any) -> None:
    with contextlib.suppress(ResourceExistsError):
        await create()
