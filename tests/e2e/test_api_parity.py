"""The second wave of the API end to end, through `mailgw.client` against the dev host on
Azurite: batch, cancel, sandbox, templates, the OpenAPI document."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient
from gateway_host import DevHost

from mailgw.client import ApiError, AsyncClient, Client, SubmitResult
from support import run_mailgw, sample_request, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(devhost: DevHost) -> Any:
    with Client(devhost.base_url) as api:
        yield api


def _eml(host: DevHost, message_id: str) -> email.message.EmailMessage:
    path = host.outbox / f"{message_id}.eml"
    wait_until(path.exists, timeout=30, what=f"{path.name} in the outbox")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_openapi_is_served_anonymously_and_is_the_committed_document(devhost: DevHost) -> None:
    answer = devhost.request("GET", "/api/v1/openapi.json")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/json")
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert answer.json() == committed


def test_a_batch_answers_each_item_in_order(devhost: DevHost, client: Client) -> None:
    items = [
        sample_request(subject="first"),
        sample_request(to=["not an address"]),
        sample_request(**{"from": "someone@elsewhere.example"}),
        sample_request(subject="fourth"),
    ]
    answer = client.send_batch(items)
    assert (answer.accepted, answer.rejected) == (2, 2)
    first, invalid, forbidden, fourth = answer.results
    assert isinstance(first, SubmitResult) and isinstance(fourth, SubmitResult)
    assert isinstance(invalid, ApiError) and invalid.status == 400
    assert [e.field for e in invalid.errors] == ["to[0]"]
    assert isinstance(forbidden, ApiError) and forbidden.status == 403
    assert forbidden.type == "urn:mailgw:problem:sender-not-allowed"
    assert _eml(devhost, first.id)["Subject"] == "first"
    assert _eml(devhost, fourth.id)["Subject"] == "fourth"
    raw = devhost.post_json("/api/v1/messages:batch", {"messages": items[1:2]})
    assert raw.status == 207
    assert raw.json()["results"][0]["instance"] == "/api/v1/messages:batch#/messages/0"


def test_a_keyed_batch_answers_its_first_answer_and_queues_nothing_more(
    devhost: DevHost, client: Client
) -> None:
    key = f"batch-{uuid.uuid4()}"
    items = [sample_request(subject=f"keyed {i}") for i in range(3)] + [sample_request(to=[])]
    first = client.send_batch(items, idempotency_key=key)
    again = client.send_batch(items, idempotency_key=key)
    assert [getattr(r, "id", None) for r in again.results] == [
        getattr(r, "id", None) for r in first.results
    ]
    assert (again.accepted, again.rejected) == (3, 1)
    ids = [r.id for r in first.results if isinstance(r, SubmitResult)]
    for message_id in ids:
        _eml(devhost, message_id)
    assert all(client.status(m).status == "sent" for m in ids)
    with pytest.raises(ApiError) as reused:
        client.send_batch(items[:2], idempotency_key=key)
    assert reused.value.status == 422
    sent = sorted(p.name for p in devhost.outbox.glob("*.eml") if p.stem in ids)
    assert len(sent) == 3


def test_a_malformed_batch_is_one_400(devhost: DevHost) -> None:
    bodies: list[dict[str, Any]] = [
        {"messages": []},
        {"messages": "x"},
        {"mesages": [sample_request()]},
    ]
    for body in bodies:
        answer = devhost.post_json("/api/v1/messages:batch", body)
        assert answer.status == 400, body
        assert answer.headers["content-type"] == "application/problem+json"
    too_many = {"messages": [sample_request()] * 501}
    assert devhost.post_json("/api/v1/messages:batch", too_many).status == 400


def test_cancel_a_scheduled_message(devhost: DevHost, client: Client) -> None:
    later = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    accepted = client.send(sample_request(sendAt=later))
    assert accepted.status == "scheduled"
    canceled = client.cancel(accepted.id)
    assert canceled.status == "canceled"
    assert client.cancel(accepted.id).status == "canceled"  # again: its state
    # Its queued copy comes due and is picked up (the queue empties): it is not sent.
    queue = QueueClient.from_connection_string(devhost.env["AzureWebJobsStorage"], devhost.queue)
    with queue:
        wait_until(
            lambda: queue.get_queue_properties().approximate_message_count == 0,
            timeout=30,
            what="the canceled message's queued copy to be picked up",
        )
    assert not (devhost.outbox / f"{accepted.id}.eml").exists()
    assert client.status(accepted.id).status == "canceled"


def test_cancel_answers_409_once_sent_and_404_when_unknown(
    devhost: DevHost, client: Client
) -> None:
    accepted = client.send(sample_request())
    _eml(devhost, accepted.id)
    wait_until(lambda: client.status(accepted.id).status == "sent", what="sent")
    with pytest.raises(ApiError) as late:
        client.cancel(accepted.id)
    assert (late.value.status, late.value.type) == (409, "urn:mailgw:problem:not-cancelable")
    with pytest.raises(ApiError) as unknown:
        client.cancel(str(uuid.uuid4()))
    assert unknown.value.status == 404


def test_a_sandbox_message_is_recorded_as_sent_but_never_mailed(
    devhost: DevHost, client: Client
) -> None:
    accepted = client.send(sample_request(sandbox=True))
    state = wait_until(
        lambda: (s := client.status(accepted.id)).status == "sent" and s, what="sandbox sent"
    )
    assert state.sandbox is True
    assert [step.outcome for step in state.history][-1] == "sent"
    assert not (devhost.outbox / f"{accepted.id}.eml").exists()
    assert client.status(client.send(sample_request()).id).sandbox is None


def test_templates_through_the_cli_and_the_api(
    devhost: DevHost, client: Client, tmp_path: Path
) -> None:
    env = {k: v for k, v in devhost.env.items()}
    env["MAILGW_TEMPLATE_CONTAINER"] = devhost.env.get(
        "MAILGW_TEMPLATE_CONTAINER", "mail-templates"
    )
    name = f"receipt-{uuid.uuid4().hex[:8]}"
    (tmp_path / "r.html").write_text("<p>Hello {{ customer }}, total {{ order.total }}</p>")
    (tmp_path / "r.txt").write_text("Hello {{ customer }}")
    put = run_mailgw(
        "templates", "put", name, "--subject", "Receipt {{ order.id }}",
        "--html", "r.html", "--text", "r.txt", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == f"{name}: version 1 stored"
    (tmp_path / "r.txt").write_text("Hi {{ customer }}")
    put2 = run_mailgw(
        "templates", "put", name, "--subject", "Receipt {{ order.id }}",
        "--html", "r.html", "--text", "r.txt", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert put2.stdout.strip() == f"{name}: version 2 stored"
    listing = run_mailgw("templates", "list", cwd=tmp_path, env=env)
    assert f"{name}  version 2  (2 in all" in listing.stdout
    shown = json.loads(run_mailgw("templates", "show", name, cwd=tmp_path, env=env).stdout)
    assert shown["version"] == 2 and shown["text"] == "Hi {{ customer }}"

    data = {"customer": "<b>Ann</b>", "order": {"id": "42", "total": "9.50"}}
    request = sample_request(template=name, templateData=data)
    for part in ("subject", "text", "html"):
        request.pop(part)
    accepted = client.send(request)
    message = _eml(devhost, accepted.id)
    assert message["Subject"] == "Receipt 42"
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    assert "Hello &lt;b&gt;Ann&lt;/b&gt;, total 9.50" in html.get_content()  # autoescaped
    assert text.get_content().strip() == "Hi <b>Ann</b>"  # text is not HTML
    state = client.status(accepted.id)
    assert state.template is not None and (state.template.name, state.template.version) == (
        name,
        2,
    )

    missing = dict(request, templateData={"order": {"id": "1", "total": "2"}})
    with pytest.raises(ApiError) as refused:
        client.send(missing)
    assert refused.value.status == 400
    assert [e.field for e in refused.value.errors] == ["templateData.customer"]
    with pytest.raises(ApiError) as unknown:
        client.send(dict(request, template="no-such-template"))
    assert (unknown.value.status, unknown.value.type) == (
        400,
        "urn:mailgw:problem:template-not-found",
    )
    with pytest.raises(ApiError) as both:
        client.send(dict(request, subject="also a subject"))
    assert [e.field for e in both.value.errors] == ["template"]


async def test_the_async_client(devhost: DevHost) -> None:
    async with AsyncClient(devhost.base_url) as api:
        health = await api.health()
        accepted = await asyncio.gather(*(api.send(sample_request()) for _ in range(3)))
        states = [await api.status(a.id) for a in accepted]
    assert health.status == "ok"
    assert len({a.id for a in accepted}) == 3
    assert all(s.id == a.id for s, a in zip(states, accepted, strict=True))
