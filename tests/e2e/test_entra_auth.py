"""MAILGW_AUTH=entra end to end: the dev host serves the real function_app.py with anonymous routes
and the app checks Entra ID tokens (from a stand-in identity provider over HTTP) on every route
but health. Refused calls enqueue nothing; the sender policy still applies to a valid caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from gateway_host import DevHost

from mailgw.auth import ROLE_READ, ROLE_READ_ALL, ROLE_REPLAY, ROLE_SEND
from standins.entra import EntraStandIn, entra_standin
from support import sample_request, wait_until


@pytest.fixture(scope="module")
def idp() -> Iterator[EntraStandIn]:
    with entra_standin() as standin:
        yield standin


@pytest.fixture(scope="module")
def host(start_devhost: Callable[..., DevHost], idp: EntraStandIn) -> DevHost:
    return start_devhost(**idp.gateway_env())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_routes_are_anonymous_to_the_host(host: DevHost) -> None:
    assert "Function keys are not enforced" not in host.log()  # no key-protected route left


def test_health_needs_no_token(host: DevHost) -> None:
    assert host.request("GET", "/api/v1/health").status == 200


def test_calls_without_a_valid_token_or_role_are_refused_and_nothing_is_sent(
    host: DevHost, idp: EntraStandIn
) -> None:
    refused = [
        (None, 401, "urn:mailgw:problem:unauthorized"),
        (idp.token(lifetime=-3600), 401, "urn:mailgw:problem:unauthorized"),
        (idp.token(audience="https://graph.microsoft.com"), 401, "urn:mailgw:problem:unauthorized"),
        (idp.token((ROLE_READ,)), 403, "urn:mailgw:problem:forbidden"),
    ]
    for token, status, problem_type in refused:
        headers = bearer(token) if token else {}
        response = host.post_json("/api/v1/messages", sample_request(subject="refused"), headers)
        assert response.status == status, response.body
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == problem_type
        assert response.headers["www-authenticate"].startswith('Bearer realm="mailgw"')

    accepted = host.post_json(
        "/api/v1/messages", sample_request(subject="accepted"), bearer(idp.token((ROLE_SEND,)))
    )
    assert accepted.status == 202, accepted.body
    message_id = accepted.json()["id"]
    wait_until(lambda: (host.outbox / f"{message_id}.eml").exists(), what="the accepted message")
    # Refused requests queued before it would have been delivered with it: only one .eml exists.
    assert [p.name for p in host.outbox.glob("*.eml")] == [f"{message_id}.eml"]

    status_path = f"/api/v1/messages/{message_id}"
    assert host.request("GET", status_path).status == 401
    assert host.request("GET", status_path, headers=bearer(idp.token((ROLE_READ,)))).status == 200
    assert host.request("GET", status_path, headers=bearer(idp.token((ROLE_SEND,)))).status == 200
    replay = f"{status_path}/replay"
    assert host.request("POST", replay, headers=bearer(idp.token((ROLE_SEND,)))).status == 403
    # With the role, the replay itself answers: a sent message is not replayable (409).
    answer = host.request("POST", replay, headers=bearer(idp.token((ROLE_REPLAY,))))
    assert answer.status == 409, answer.body


def test_the_sender_policy_still_applies_to_a_valid_caller(
    host: DevHost, idp: EntraStandIn
) -> None:
    response = host.post_json(
        "/api/v1/messages",
        sample_request(**{"from": "ceo@contoso.com"}),
        bearer(idp.token((ROLE_SEND,))),
    )
    assert response.status == 403
    assert response.json()["type"] == "urn:mailgw:problem:sender-not-allowed"


OTHER_APP = "5c1d2e3f-0000-4000-8000-0000000000b2"


def test_an_idempotency_key_belongs_to_the_calling_app(host: DevHost, idp: EntraStandIn) -> None:
    """Two apps that both use order-43 make two messages, and neither sees the other's 422."""
    ours = bearer(idp.token((ROLE_SEND,)))
    theirs = bearer(idp.token((ROLE_SEND,), azp=OTHER_APP))
    key = {"Idempotency-Key": "order-43"}
    first = host.post_json("/api/v1/messages", sample_request(subject="ours"), {**ours, **key})
    second = host.post_json("/api/v1/messages", sample_request(subject="theirs"), {**theirs, **key})
    assert (first.status, second.status) == (202, 202), (first.body, second.body)
    assert first.json()["id"] != second.json()["id"]
    again = host.post_json("/api/v1/messages", sample_request(subject="ours"), {**ours, **key})
    assert again.json() == first.json()
    reused = host.post_json("/api/v1/messages", sample_request(subject="other"), {**ours, **key})
    assert reused.status == 422  # our own key, another body


def test_a_message_is_visible_only_to_its_app_unless_read_all(
    host: DevHost, idp: EntraStandIn
) -> None:
    sent = host.post_json(
        "/api/v1/messages", sample_request(subject="mine"), bearer(idp.token((ROLE_SEND,)))
    )
    path = f"/api/v1/messages/{sent.json()['id']}"
    other = idp.token((ROLE_SEND, ROLE_READ, ROLE_REPLAY), azp=OTHER_APP)
    for method, route in (("GET", path), ("POST", f"{path}/replay")):
        answer = host.request(method, route, headers=bearer(other))
        assert answer.status == 404, answer.body  # as if it did not exist
        assert answer.json()["type"] == "urn:mailgw:problem:not-found"
    operator = idp.token((ROLE_READ_ALL, ROLE_REPLAY), azp=OTHER_APP)
    assert host.request("GET", path, headers=bearer(operator)).status == 200
    wait_until(
        lambda: host.request("GET", path, headers=bearer(operator)).json()["status"] == "sent",
        what="the message sent",
    )
    # an operator may replay any app's message (here: 409, it was sent, not failed)
    assert host.request("POST", f"{path}/replay", headers=bearer(operator)).status == 409
    assert host.request("GET", path, headers=bearer(idp.token((ROLE_READ,)))).status == 200


def test_an_app_cancels_and_batches_as_itself(host: DevHost, idp: EntraStandIn) -> None:
    """Cancel needs Messages.Send and the caller's own message: another app, even one that may
    read every message (Messages.ReadAll), gets 404. A keyed batch is the calling app's too."""
    ours = bearer(idp.token((ROLE_SEND,)))
    later = sample_request(sendAt=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    accepted = host.post_json("/api/v1/messages", later, ours)
    assert accepted.status == 202, accepted.body
    path = f"/api/v1/messages/{accepted.json()['id']}"
    assert host.request("DELETE", path).status == 401
    reader = bearer(idp.token((ROLE_READ,)))
    assert host.request("DELETE", path, headers=reader).status == 403
    for roles in ((ROLE_SEND,), (ROLE_SEND, ROLE_READ_ALL)):
        answer = host.request("DELETE", path, headers=bearer(idp.token(roles, azp=OTHER_APP)))
        assert answer.status == 404, (roles, answer.body)
    canceled = host.request("DELETE", path, headers=ours)
    assert (canceled.status, canceled.json()["status"]) == (200, "canceled")

    key = {"Idempotency-Key": "batch-43"}
    body = {"messages": [sample_request(subject="b")]}
    mine = host.post_json("/api/v1/messages:batch", body, {**ours, **key})
    theirs = host.post_json(
        "/api/v1/messages:batch", body, {**bearer(idp.token((ROLE_SEND,), azp=OTHER_APP)), **key}
    )
    assert (mine.status, theirs.status) == (207, 207)
    assert mine.json()["results"][0]["id"] != theirs.json()["results"][0]["id"]
    assert host.post_json("/api/v1/messages:batch", body, reader).status == 403
