"""Tokens for Graph: one per process, for Graph's audience in the endpoint's cloud (or
MAILGW_GRAPH_SCOPE), from the identity the settings choose; wrong identity settings fail at
start-up, naming the setting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import aclosing

import pytest
from azure.identity.aio import ManagedIdentityCredential
from graph_helpers import SENDER, body, outbound, unsent_refusal
from msgraph.generated.models.message import Message
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)

from mailgw.services import check_configuration
from mailgw.settings import Settings, SettingsError, current_settings
from mailgw.transports.errors import DeliveryError
from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn
from standins.identity import GRAPH_RESOURCE, SYSTEM_ASSIGNED_CLIENT_ID, IdentityStandIn

UAMI = "5b1e0f7a-1111-4222-8333-0000000000aa"


async def test_one_token_for_many_sends_sequential_and_concurrent(
    transport: GraphTransport, graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    for i in range(10):
        await transport.send(outbound(body(subject=f"seq {i}")))
    await asyncio.gather(
        *(
            transport.send(outbound(body(**{"from": f"box{i % 3}@contoso.com"}, subject=f"c{i}")))
            for i in range(10)
        )
    )
    assert len(graph.delivered) == 20
    assert len(identity.issued) == 1
    assert len({r.header("Authorization") for r in graph.requests}) == 1


async def test_a_cold_transport_fetches_one_token_for_concurrent_first_sends(
    transport: GraphTransport, graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    """A fresh instance takes a burst from the queue (batchSize 16 by default): the first sends
    run concurrently, and each one that finds no cached token asks the identity endpoint."""
    await asyncio.gather(
        *(
            transport.send(outbound(body(**{"from": f"box{i % 5}@contoso.com"}, subject=f"{i}")))
            for i in range(20)
        )
    )
    assert len(graph.delivered) == 20
    assert len(identity.issued) == 1, (
        f"{len(identity.issued)} tokens for one credential: concurrent cold sends are not "
        "de-duplicated (azure-identity has no single-flight); warm the token once"
    )


async def test_an_endpoint_of_another_host_still_gets_tokens_for_graph(
    transport: GraphTransport, graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    """MAILGW_GRAPH_ENDPOINT on a stand-in (or an egress proxy): the token stays Graph's, which
    Entra issues and Graph accepts, not one for the URL in between (Entra would refuse it)."""
    assert graph.url not in graph.audiences  # the stand-in, like Graph, takes Graph's tokens only
    await transport.send(outbound())

    (issued,) = identity.issued
    assert issued.resource == GRAPH_RESOURCE
    assert identity.requests[0].query["resource"] == GRAPH_RESOURCE
    (request,) = graph.requests
    assert request.token is not None and request.token.resource == GRAPH_RESOURCE
    assert request.status == 202
    assert transport.settings.graph_scope == f"{GRAPH_RESOURCE}/.default"


async def test_mailgw_graph_scope_overrides_the_audience(
    graph_settings: Callable[..., Settings], graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    graph.audiences = {"api://graph-proxy"}  # say, a proxy that wants tokens of its own
    settings = graph_settings(MAILGW_GRAPH_SCOPE="api://graph-proxy/.default")
    async with aclosing(GraphTransport(settings)) as transport:
        await transport.send(outbound())
        assert (
            await transport.probe(SENDER)
            == "token for api://graph-proxy/.default (an opaque token)"
        )
    assert [t.resource for t in identity.issued] == ["api://graph-proxy"]
    (request,) = graph.requests
    assert request.status == 202


async def test_system_assigned_identity_by_default(
    transport: GraphTransport, graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    assert isinstance(transport.credential.inner, ManagedIdentityCredential)
    await transport.send(outbound())
    assert "client_id" not in identity.requests[0].query
    assert identity.issued[0].client_id == SYSTEM_ASSIGNED_CLIENT_ID


async def test_user_assigned_identity_from_azure_client_id(
    graph_settings: Callable[..., Settings], graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    identity.expected_client_id = UAMI
    identity.system_assigned = False  # only the user-assigned identity gets a token
    transport = GraphTransport(graph_settings(AZURE_CLIENT_ID=UAMI))
    try:
        await transport.send(outbound())
    finally:
        await transport.aclose()

    assert identity.requests[0].query.get("client_id") == UAMI
    assert [t.client_id for t in identity.issued] == [UAMI]
    assert graph.requests[0].token is not None and graph.requests[0].token.client_id == UAMI
    assert len(graph.delivered) == 1


async def test_identity_endpoint_failing_is_a_transient_token_error_with_a_hint(
    transport: GraphTransport, graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    identity.fail_next(500, n=10)  # more than azure-identity's own retries
    hint = ["MAILGW_CREDENTIAL", "AZURE_CLIENT_ID"]
    await unsent_refusal(transport, "mailgw/token-unavailable", hint=hint)
    assert graph.requests == []  # nothing reached Graph: it cannot have been sent
    assert len(identity.requests) >= 2

    identity.clear_faults()  # the endpoint recovers: the same transport sends
    await transport.send(outbound())
    assert len(graph.delivered) == 1


async def test_an_identity_the_app_does_not_have_is_a_token_error(
    graph_settings: Callable[..., Settings], graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    identity.expected_client_id = UAMI
    transport = GraphTransport(
        graph_settings(AZURE_CLIENT_ID="00000000-dead-beef-0000-000000000000")
    )
    try:
        with pytest.raises(DeliveryError) as failed:
            await transport.send(outbound())
    finally:
        await transport.aclose()
    assert failed.value.code == "mailgw/token-unavailable" and failed.value.transient
    assert graph.requests == []


# --- start-up errors ----------------------------------------------------------------------------

FEDERATED = {
    "MAILGW_CREDENTIAL": "federated_managed_identity",
    "AZURE_CLIENT_ID": UAMI,
    "MAILGW_TENANT_ID": "contoso.onmicrosoft.com",
    "MAILGW_APP_CLIENT_ID": "9d8c7b6a-0000-4000-8000-00000000a99a",
}
WORKLOAD = {
    "MAILGW_CREDENTIAL": "workload_identity",
    "AZURE_TENANT_ID": "72f988bf-0000-4000-8000-000000000001",
    "AZURE_CLIENT_ID": UAMI,
    "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
}


def without(settings: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in settings.items() if k != name}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"MAILGW_CREDENTIAL": "client_secret"}, "MAILGW_CREDENTIAL"),
        ({"MAILGW_CREDENTIAL": "managedidentity"}, "MAILGW_CREDENTIAL"),
        *[(without(FEDERATED, n), n) for n in FEDERATED if n != "MAILGW_CREDENTIAL"],
        *[(without(WORKLOAD, n), n) for n in WORKLOAD if n != "MAILGW_CREDENTIAL"],
    ],
)
async def test_identity_settings_errors_name_the_setting(
    graph_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, str],
    named: str,
) -> None:
    for name in (*FEDERATED, *WORKLOAD):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError, match=named):  # when the app loads, before any send
        graph_settings(**overrides)


@pytest.mark.parametrize("complete", [FEDERATED, WORKLOAD])
def test_complete_identity_settings_pass_the_check(complete: dict[str, str]) -> None:
    identity = Settings.from_env({"MAILGW_TRANSPORT": "graph", **complete}).identity
    assert identity.mode == complete["MAILGW_CREDENTIAL"]
    assert identity.client_id == complete["AZURE_CLIENT_ID"]


def test_identity_settings_are_not_checked_when_no_transport_needs_them() -> None:
    outbox = Settings.from_env({"MAILGW_TRANSPORT": "outbox", "MAILGW_CREDENTIAL": "typo"})
    assert outbox.identity.mode == "managed_identity"


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """The process environment as the app loads it (current_settings() is read once: reset)."""
    for name in (*FEDERATED, *WORKLOAD, "MAILGW_TRANSPORT"):
        monkeypatch.delenv(name, raising=False)

    def apply(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    current_settings.cache_clear()
    yield apply
    current_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAILGW_CREDENTIAL": "manged_identity"}, "MAILGW_CREDENTIAL"),
        (without(FEDERATED, "MAILGW_APP_CLIENT_ID"), "MAILGW_APP_CLIENT_ID"),
        (without(WORKLOAD, "AZURE_FEDERATED_TOKEN_FILE"), "AZURE_FEDERATED_TOKEN_FILE"),
    ],
)
def test_identity_settings_are_checked_when_the_app_loads(
    app_env: Callable[..., None], env: dict[str, str], named: str
) -> None:
    """Not on the first delivery: the transport itself is built lazily."""
    app_env(MAILGW_TRANSPORT="graph", **env)
    with pytest.raises(SettingsError, match=named):
        check_configuration()


def test_identity_settings_are_not_required_by_other_transports(
    app_env: Callable[..., None],
) -> None:
    app_env(MAILGW_TRANSPORT="outbox", MAILGW_CREDENTIAL="federated_managed_identity")
    assert check_configuration().transport == "outbox"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"MAILGW_GRAPH_MODE": "bulk"}, "MAILGW_GRAPH_MODE"),
        ({"MAILGW_GRAPH_MODE": "draft"}, None),
        ({"MAILGW_MAILBOX_CONCURRENCY": "5"}, "MAILGW_MAILBOX_CONCURRENCY"),
        ({"MAILGW_MAILBOX_CONCURRENCY": "0"}, "MAILGW_MAILBOX_CONCURRENCY"),
        ({"MAILGW_MAILBOX_CONCURRENCY": "4"}, None),
        ({"MAILGW_GRAPH_TIMEOUT_SECONDS": "soon"}, "MAILGW_GRAPH_TIMEOUT_SECONDS"),
        ({"MAILGW_GRAPH_ENDPOINT": "http://graph.microsoft.com"}, "MAILGW_GRAPH_ENDPOINT"),
        ({"MAILGW_GRAPH_SCOPE": "https://graph.microsoft.com"}, "MAILGW_GRAPH_SCOPE"),
        ({"MAILGW_GRAPH_SCOPE": "Mail.Send"}, "MAILGW_GRAPH_SCOPE"),
        ({"MAILGW_GRAPH_SUBMIT_GRACE_SECONDS": "0"}, "MAILGW_GRAPH_SUBMIT_GRACE_SECONDS"),
    ],
)
def test_graph_settings_errors_name_the_setting(
    overrides: dict[str, str], named: str | None
) -> None:
    env = {"MAILGW_TRANSPORT": "graph", **overrides}
    if named is None:
        Settings.from_env(env)
        return
    with pytest.raises(SettingsError, match=named) as failed:
        Settings.from_env(env)
    assert next(iter(overrides.values())) in str(failed.value)  # and says what it got


# --- sovereign clouds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        (None, "https://graph.microsoft.com/.default"),
        ("https://graph.microsoft.us", "https://graph.microsoft.us/.default"),
        ("https://graph.microsoft.us/", "https://graph.microsoft.us/.default"),
        ("https://dod-graph.microsoft.us", "https://dod-graph.microsoft.us/.default"),
        (
            "https://microsoftgraph.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
    ],
)
def test_scope_follows_the_graph_endpoint(endpoint: str | None, scope: str) -> None:
    env = {} if endpoint is None else {"MAILGW_GRAPH_ENDPOINT": endpoint}
    settings = Settings.from_env(env)
    assert settings.graph_scope == scope
    assert settings.graph_endpoint == scope.removesuffix("/.default")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://graph-egress.contoso.com",
        "http://127.0.0.1:7072",
        "https://GRAPH.microsoft.com.evil",
    ],
)
def test_any_other_host_gets_the_public_graph_scope(endpoint: str) -> None:
    settings = Settings.from_env({"MAILGW_GRAPH_ENDPOINT": endpoint})
    assert settings.graph_scope == "https://graph.microsoft.com/.default"
    explicit = Settings.from_env(
        {
            "MAILGW_GRAPH_ENDPOINT": endpoint,
            "MAILGW_GRAPH_SCOPE": " https://graph.microsoft.us/.default ",
        }
    )
    assert explicit.graph_scope == "https://graph.microsoft.us/.default"


async def test_sovereign_endpoint_builds_a_client_for_that_cloud(
    graph_settings: Callable[..., Settings],
) -> None:
    settings = graph_settings(MAILGW_GRAPH_ENDPOINT="https://graph.microsoft.us")
    transport = GraphTransport(settings)
    try:
        assert transport.client.request_adapter.base_url == "https://graph.microsoft.us/v1.0"
        builder = transport.client.users.by_user_id(SENDER).send_mail
        info = builder.to_post_request_information(SendMailPostRequestBody(message=Message()))
        info.path_parameters["baseurl"] = transport.client.request_adapter.base_url  # as sent
        assert info.url.startswith("https://graph.microsoft.us/v1.0/users/noreply")
        assert info.url.endswith("/sendMail")
        assert settings.graph_scope == "https://graph.microsoft.us/.default"
    finally:
        await transport.aclose()


async def test_the_readiness_probe_gets_a_token_and_sends_nothing(
    transport: GraphTransport, graph: GraphStandIn, identity: IdentityStandIn
) -> None:
    seen = await transport.probe(SENDER)
    assert seen == f"token for {GRAPH_RESOURCE}/.default (an opaque token)"
    (issued,) = identity.issued
    assert issued.resource == GRAPH_RESOURCE
    assert graph.requests == []


async def test_the_readiness_probe_reports_a_refused_identity_with_a_hint(
    transport: GraphTransport, identity: IdentityStandIn
) -> None:
    identity.fail_next(400, 10, message="Unable to load the proper Managed Identity.")
    with pytest.raises(DeliveryError) as caught:
        await transport.probe(SENDER)
    assert caught.value.code == "mailgw/token-unavailable"
    assert "MAILGW_CREDENTIAL" in caught.value.hint


def test_token_roles_are_read_for_the_diagnosis_only() -> None:
    import jwt

    from mailgw.identity import token_roles

    signed = jwt.encode({"roles": ["Mail.Send"]}, "k" * 32, algorithm="HS256")
    assert token_roles(signed) == "roles: Mail.Send"
    assert token_roles(jwt.encode({}, "k" * 32, algorithm="HS256")) == "roles: none"
    assert token_roles("opaque") == "an opaque token"


@pytest.mark.parametrize(
    ("granted", "mode", "refused", "missing"),
    [
        (("Mail.Send",), "draft", "createMessage", "Mail.ReadWrite"),  # draft mode needs both
        (("Mail.ReadWrite",), "sendmail", "sendMail", "Mail.Send"),
        (("Mail.ReadWrite",), "draft", "send", "Mail.Send"),
    ],
)
async def test_a_missing_graph_permission_is_a_permanent_access_denied(
    graph_settings: Callable[..., Settings],
    graph: GraphStandIn,
    identity: IdentityStandIn,
    granted: tuple[str, ...],
    mode: str,
    refused: str,
    missing: str,
) -> None:
    """The stand-in refuses what the token's roles do not allow, as Graph does; the hint names
    the permission that is missing, not one the identity already holds."""
    identity.app_roles = granted
    transport = GraphTransport(graph_settings(MAILGW_GRAPH_MODE=mode))
    try:
        with pytest.raises(DeliveryError) as denied:
            await transport.send(outbound(body(subject="denied")))
    finally:
        await transport.aclose()
    assert (denied.value.code, denied.value.transient) == ("graph/ErrorAccessDenied", False)
    assert (graph.requests[-1].operation, graph.requests[-1].status) == (refused, 403)
    assert graph.delivered == []
    assert f"the {missing} application permission" in denied.value.hint
    (held,) = granted
    assert f"the {held} application permission" not in denied.value.hint
