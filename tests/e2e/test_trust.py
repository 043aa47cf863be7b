"""A queue producer may send mail as an allowed sender, and nothing more (issue 9, "Trust
boundary: the queue"), end to end through the dev host.

A producer with write access to the queue can enqueue anything, including JSON that claims to be
the gateway's own envelope (``"mailgw": 1``). Such a forgery must not make the gateway read or
delete a blob of its choosing, nor mark, suppress or send a real message by reusing its id. These
tests use only the public contracts (HTTP, the queue, Blob storage), so they run unchanged
against any version of the gateway.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy
from gateway_host import ROOT, DevHost

from support import sample_request, wait_until

SECRET = b'{"request": {"from": "noreply@contoso.com", "to": ["a@example.com"], "text": "x"}}'


@pytest.fixture(scope="module")
def host(start_devhost: Callable[..., DevHost]) -> DevHost:
    return start_devhost()


@pytest.fixture
def queue(host: DevHost) -> Iterator[QueueClient]:
    client = QueueClient.from_connection_string(
        host.env["AzureWebJobsStorage"],
        host.queue,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    yield client
    client.close()


@pytest.fixture
def foreign_blob(host: DevHost) -> Iterator[tuple[str, str]]:
    """A blob the gateway has no business with (the deployment package, the host's keys...), in
    another container of the same account."""
    service = BlobServiceClient.from_connection_string(host.env["AzureWebJobsStorage"])
    container = f"secrets-{uuid.uuid4().hex[:8]}"
    service.create_container(container)
    service.get_blob_client(container, "host.keys.json").upload_blob(SECRET)
    yield container, "host.keys.json"
    service.delete_container(container)
    service.close()


def blob_exists(host: DevHost, container: str, name: str) -> bool:
    service = BlobServiceClient.from_connection_string(host.env["AzureWebJobsStorage"])
    try:
        service.get_blob_client(container, name).get_blob_properties()
    except ResourceNotFoundError:
        return False
    finally:
        service.close()
    return True


def forge(queue: QueueClient, **envelope: Any) -> str:
    """A gateway envelope written by someone who is not the gateway; its queue message id."""
    document = {"mailgw": 1, "createdAt": datetime.now(UTC).isoformat(), **envelope}
    return str(queue.send_message(json.dumps(document)).id)


def mailgw(host: DevHost, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator CLI against the dev host's storage, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mailgw", *args],
        cwd=ROOT,
        env={**host.env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_forged_payload_ref_never_reads_or_deletes_a_blob_outside_the_gateways(
    host: DevHost, queue: QueueClient, foreign_blob: tuple[str, str]
) -> None:
    container, name = foreign_blob
    forged_id = str(uuid.uuid4())
    queue_id = forge(
        queue,
        id=forged_id,
        payloadRef={
            "container": container,
            "blob": name,
            "sha256": hashlib.sha256(SECRET).hexdigest(),
            "size": len(SECRET),
        },
    )
    # Recorded as a failed message under its own queue message id, not the id it claims.
    seen = wait_until(
        lambda: host.status(queue_id, "failed"), timeout=30, what="the forgery recorded"
    )
    assert seen["lastError"]["code"] == "mailgw/invalid-envelope"
    assert host.status(forged_id) == {}
    assert list(host.outbox.glob("*.eml")) == []  # nothing was sent
    assert blob_exists(host, container, name)

    # Purging every failed message, and applying retention, leave the blob alone.
    purged = mailgw(host, "failed", "purge", "--all", "--yes")
    assert purged.returncode == 0, purged.stderr
    retention = mailgw(host, "store", "cleanup")
    assert retention.returncode == 0, retention.stderr
    assert blob_exists(host, container, name)


def test_a_forged_envelope_reusing_a_scheduled_messages_id_does_not_touch_it(
    host: DevHost, queue: QueueClient
) -> None:
    send_at = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
    accepted = host.post_json("/api/v1/messages", sample_request(subject="real", sendAt=send_at))
    assert accepted.status == 202
    real_id = accepted.json()["id"]
    # An invalid request under the real id: before, its poisoning marked the real message
    # failed, and the real copy was then dropped as a stale replay.
    queue_id = forge(queue, id=real_id, request={"from": "noreply@contoso.com", "to": ["x"]})
    wait_until(lambda: host.status(queue_id, "failed"), timeout=30, what="the forgery recorded")
    assert host.status(real_id)["status"] in ("scheduled", "queued")

    # A valid request under the real id, with a replay number from the future: it must not be
    # sent as that message either.
    forge(queue, id=real_id, replay=9, request=sample_request(subject="forged"))
    sent = wait_until(
        lambda: host.status(real_id, "sent"),
        timeout=60,
        what="the real message sent",
    )
    assert sent["replays"] == 0
    emls = [p.read_text(errors="replace") for p in host.outbox.glob("*.eml")]
    assert sum("Subject: real" in e for e in emls) == 1
    assert not any("Subject: forged" in e for e in emls)


def test_a_forged_poison_report_does_not_fail_a_real_message(
    host: DevHost, queue: QueueClient
) -> None:
    """The poison queue is a queue too: a report there claiming a real id changes nothing."""
    send_at = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    accepted = host.post_json("/api/v1/messages", sample_request(subject="kept", sendAt=send_at))
    real_id = accepted.json()["id"]
    poison = QueueClient.from_connection_string(
        host.env["AzureWebJobsStorage"],
        f"{host.queue}-poison",
        message_encode_policy=TextBase64EncodePolicy(),
    )
    try:
        document = {
            "mailgw": 1,
            "id": real_id,
            "createdAt": datetime.now(UTC).isoformat(),
            "request": sample_request(),
            "error": {"code": "graph/ErrorSendAsDenied", "message": "forged", "hint": ""},
        }
        poison_id = poison.send_message(json.dumps(document)).id
    finally:
        poison.close()
    wait_until(
        lambda: host.status(poison_id, "failed"), timeout=30, what="the forged report recorded"
    )
    sent = wait_until(
        lambda: host.status(real_id, "sent"),
        timeout=60,
        what="the real message sent",
    )
    assert [h["outcome"] for h in sent["history"]].count("failed") == 0


def test_a_functions_key_in_the_url_reaches_no_problem_and_no_log(host: DevHost) -> None:
    secret = "a-functions-key-" + uuid.uuid4().hex
    unknown = str(uuid.uuid4())
    response = host.request("GET", f"/api/v1/messages/{unknown}?code={secret}")
    assert response.status == 404
    assert response.json()["instance"] == f"/api/v1/messages/{unknown}"
    bad = host.request(
        "POST", f"/api/v1/messages?code={secret}", b"{", {"Content-Type": "application/json"}
    )
    assert bad.status == 400
    assert secret not in bad.body.decode()
    assert secret not in host.log()


def test_in_functions_key_mode_every_key_holder_is_the_same_caller(host: DevHost) -> None:
    """Keys mode keeps the first wave's behaviour (docs/trust-model.md): the host checks a key,
    not who holds it, so the deployment shares one idempotency scope and every key holder reads
    and cancels any message. Ownership is Entra ID mode's (tests/e2e/test_entra_auth.py)."""
    key = f"order-{uuid.uuid4().hex[:8]}"
    scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    first = host.post_json(
        "/api/v1/messages",
        sample_request(sendAt=scheduled),
        {"x-functions-key": "key-of-app-a", "Idempotency-Key": key},
    )
    assert first.status == 202, first.body
    again = host.post_json(
        "/api/v1/messages",
        sample_request(sendAt=scheduled),
        {"x-functions-key": "key-of-app-b", "Idempotency-Key": key},
    )
    assert again.json()["id"] == first.json()["id"]  # one scope: the deployment's
    message_id = first.json()["id"]
    seen = host.request("GET", f"/api/v1/messages/{message_id}", None, {"x-functions-key": "b"})
    assert seen.status == 200 and seen.json()["id"] == message_id
    canceled = host.request(
        "DELETE", f"/api/v1/messages/{message_id}", None, {"x-functions-key": "b"}
    )
    assert canceled.status == 200 and canceled.json()["status"] == "canceled"
