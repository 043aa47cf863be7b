"""mailgw.auth.EntraTokens against an Entra ID stand-in over real HTTP: every way a token can be
wrong is a 401 (or 403 without the role) with a reason, and the provider is asked no more than
needed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from functions.problems import Problem, problem_for
from mailgw.auth import (
    KEY_REFRESH_MIN_SECONDS,
    KEY_RETRY_SECONDS,
    KEY_SET_MAX_AGE_SECONDS,
    ROLE_READ,
    ROLE_REPLAY,
    ROLE_SEND,
    EntraTokens,
    create_api_auth,
)
from mailgw.errors import GatewayError
from mailgw.settings import Settings, SettingsError
from standins.entra import API_APP_ID, CALLER_APP_ID, EntraStandIn, entra_standin

METADATA = "v2.0/.well-known/openid-configuration"
KEYS = "discovery/v2.0/keys"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[EntraStandIn]:
    with entra_standin() as standin:
        yield standin


def validator(idp: EntraStandIn, clock: Clock | None = None) -> EntraTokens:
    return EntraTokens(idp.authority, idp.tenant_id, (API_APP_ID,), clock=clock or Clock())


async def refused(tokens: EntraTokens, authorization: str | None, *roles: str) -> Problem:
    with pytest.raises(GatewayError) as caught:
        await tokens.authorize(authorization, *roles)
    return problem_for(caught.value)


async def test_a_valid_token_with_the_role_names_the_caller(idp: EntraStandIn) -> None:
    caller = await validator(idp).authorize(f"Bearer {idp.token((ROLE_SEND,))}", ROLE_SEND)
    assert caller.app_id == CALLER_APP_ID
    assert caller.roles == {ROLE_SEND}
    assert caller.object_id


async def test_one_of_several_roles_is_enough(idp: EntraStandIn) -> None:
    tokens = validator(idp)
    reader = await tokens.authorize(f"Bearer {idp.token((ROLE_READ,))}", ROLE_READ, ROLE_SEND)
    sender = await tokens.authorize(f"bearer {idp.token((ROLE_SEND,))}", ROLE_READ, ROLE_SEND)
    assert (set(reader.roles), set(sender.roles)) == ({ROLE_READ}, {ROLE_SEND})
    problem = await refused(tokens, f"Bearer {idp.token((ROLE_REPLAY,))}", ROLE_READ, ROLE_SEND)
    assert problem.status == 403  # a valid token, but none of the roles asked for


@pytest.mark.parametrize("authorization", [None, "", "Basic dXNlcjpwYXNz", "Bearer "])
async def test_no_bearer_token_is_a_401_with_a_bare_challenge(
    idp: EntraStandIn, authorization: str | None
) -> None:
    problem = await refused(validator(idp), authorization, ROLE_SEND)
    assert problem.status == 401
    assert problem.type == "urn:mailgw:problem:unauthorized"
    assert (problem.headers or {})["WWW-Authenticate"] == 'Bearer realm="mailgw"'  # RFC 6750 §3.1
    assert "Bearer <token>" in problem.detail
    assert idp.fetches == {}  # nothing to check, nothing fetched


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda idp: "Bearer not-a-jwt", "not a JWT"),
        (lambda idp: f"Bearer {idp.token(lifetime=-3600)}", "expired"),
        (lambda idp: f"Bearer {idp.token(not_before=time.time() + 3600)}", "not valid yet"),
        (lambda idp: f"Bearer {idp.token(audience='https://graph.microsoft.com')}", "audience"),
        (
            lambda idp: (
                f"Bearer {idp.token(issuer='https://sts.windows.net/' + idp.tenant_id + '/')}"
            ),
            "v1 token",
        ),
        (lambda idp: f"Bearer {idp.token(kid='unknown-kid')}", "does not publish"),
        (
            lambda idp: (
                "Bearer "
                + idp.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
            ),
            "signature",
        ),
        (lambda idp: f"Bearer {idp.token(exp=None)}", 'missing the "exp" claim'),
    ],
    ids=[
        "garbage",
        "expired",
        "nbf",
        "audience",
        "v1-issuer",
        "unknown-key",
        "forged",
        "no-exp",
    ],
)
async def test_every_bad_token_is_a_401_with_its_reason(
    idp: EntraStandIn, make: object, reason: str
) -> None:
    authorization = make(idp)  # type: ignore[operator]
    problem = await refused(validator(idp), authorization, ROLE_SEND)
    assert problem.status == 401
    assert reason in problem.detail
    assert (problem.headers or {})["WWW-Authenticate"].startswith(
        'Bearer realm="mailgw", error="invalid_token"'
    )


async def test_a_token_signed_with_hs256_is_refused_before_any_key_lookup(
    idp: EntraStandIn,
) -> None:
    import jwt

    forged = jwt.encode({"aud": API_APP_ID, "roles": [ROLE_SEND]}, "s" * 32, algorithm="HS256")
    problem = await refused(validator(idp), f"Bearer {forged}", ROLE_SEND)
    assert problem.status == 401 and "Only RS256" in problem.detail
    assert idp.fetches == {}


async def test_a_token_without_the_role_is_a_403(idp: EntraStandIn) -> None:
    problem = await refused(validator(idp), f"Bearer {idp.token((ROLE_SEND,))}", ROLE_REPLAY)
    assert problem.status == 403
    assert problem.type == "urn:mailgw:problem:forbidden"
    assert ROLE_REPLAY in problem.detail and CALLER_APP_ID in problem.detail
    assert 'error="insufficient_scope"' in (problem.headers or {})["WWW-Authenticate"]


async def test_a_token_of_another_tenant_is_refused_by_its_issuer(idp: EntraStandIn) -> None:
    """Entra signs every tenant's tokens with the same keys: the issuer alone tells them apart."""
    other = "11111111-2222-3333-4444-555555555555"
    token = idp.token(issuer=f"{idp.authority}/{other}/v2.0", tid=other)
    problem = await refused(validator(idp), f"Bearer {token}", ROLE_SEND)
    assert problem.status == 401
    assert f"not issued by {idp.issuer}" in problem.detail


@pytest.mark.parametrize(
    "issuer",
    [
        lambda idp: idp.issuer + "/",
        lambda idp: idp.issuer.upper(),
        lambda idp: idp.issuer.replace("/v2.0", ""),
        lambda idp: f"{idp.authority}/{idp.tenant_id}x/v2.0",
    ],
    ids=["trailing-slash", "case", "v1-shape", "tenant-suffix"],
)
async def test_the_issuer_must_match_exactly(idp: EntraStandIn, issuer: object) -> None:
    token = idp.token(issuer=issuer(idp))  # type: ignore[operator]
    problem = await refused(validator(idp), f"Bearer {token}", ROLE_SEND)
    assert "not issued by" in problem.detail


async def test_user_tokens_need_a_client_app_named_in_the_setting(idp: EntraStandIn) -> None:
    """A delegated token (scp) can be obtained by any app a user consents to: only named client
    apps may call on a user's behalf, and the user still needs the role."""
    user_token = f"Bearer {idp.token((ROLE_SEND,), scp='user_impersonation', idtyp=None)}"
    problem = await refused(validator(idp), user_token, ROLE_SEND)
    assert problem.status == 403
    assert "MAILGW_API_DELEGATED_CLIENTS" in problem.detail
    allowed = EntraTokens(
        idp.authority, idp.tenant_id, (API_APP_ID,), delegated_clients=(CALLER_APP_ID,)
    )
    caller = await allowed.authorize(user_token, ROLE_SEND)
    assert caller.app_id == CALLER_APP_ID
    no_role = f"Bearer {idp.token((), scp='user_impersonation')}"
    assert (await refused(allowed, no_role, ROLE_SEND)).status == 403


async def test_a_roles_claim_that_is_not_a_list_grants_nothing(idp: EntraStandIn) -> None:
    token = idp.token(roles=ROLE_SEND)  # a string, not a list
    problem = await refused(validator(idp), f"Bearer {token}", ROLE_SEND)
    assert problem.status == 403


async def test_metadata_and_keys_are_fetched_once_for_many_concurrent_calls(
    idp: EntraStandIn,
) -> None:
    tokens = validator(idp)
    token = f"Bearer {idp.token()}"
    await asyncio.gather(*(tokens.authorize(token, ROLE_SEND) for _ in range(20)))
    assert idp.fetches == {METADATA: 1, KEYS: 1}


async def test_unknown_keys_refetch_the_set_at_most_once_a_minute(idp: EntraStandIn) -> None:
    clock = Clock()
    tokens = validator(idp, clock)
    await tokens.authorize(f"Bearer {idp.token()}", ROLE_SEND)
    for _ in range(5):  # an attacker's random kids do not each cost a call to the provider
        await refused(tokens, f"Bearer {idp.token(kid='nope')}", ROLE_SEND)
    assert idp.fetches[KEYS] == 1

    idp.rotate()  # the tenant rolls its key: the first token signed with it triggers one refresh
    clock.now += KEY_REFRESH_MIN_SECONDS
    await tokens.authorize(f"Bearer {idp.token()}", ROLE_SEND)
    assert idp.fetches == {METADATA: 1, KEYS: 2}


async def test_a_withdrawn_key_stops_working_at_the_daily_refresh(idp: EntraStandIn) -> None:
    clock = Clock()
    tokens = validator(idp, clock)
    old = f"Bearer {idp.token()}"
    await tokens.authorize(old, ROLE_SEND)
    idp.rotate(keep_old=False)
    clock.now += KEY_SET_MAX_AGE_SECONDS + 1
    problem = await refused(tokens, old, ROLE_SEND)
    assert "does not publish" in problem.detail
    await tokens.authorize(f"Bearer {idp.token()}", ROLE_SEND)


async def test_provider_down_at_start_is_a_503_then_recovers(idp: EntraStandIn) -> None:
    clock = Clock()
    tokens = validator(idp, clock)
    idp.down = True
    token = f"Bearer {idp.token()}"
    problems = await asyncio.gather(*(refused(tokens, token, ROLE_SEND) for _ in range(8)))
    assert {(p.status, (p.headers or {})["Retry-After"]) for p in problems} == {(503, "30")}
    assert idp.fetches == {METADATA: 1}  # the 7 that waited did not each call again
    idp.down = False
    assert (await refused(tokens, token, ROLE_SEND)).status == 503  # too soon to try again
    clock.now += KEY_RETRY_SECONDS
    await tokens.authorize(token, ROLE_SEND)
    assert idp.fetches == {METADATA: 2, KEYS: 1}


async def test_made_up_keys_during_an_outage_cost_one_call_a_minute(idp: EntraStandIn) -> None:
    clock = Clock()
    tokens = validator(idp, clock)
    await tokens.authorize(f"Bearer {idp.token()}", ROLE_SEND)
    idp.down = True
    clock.now += KEY_REFRESH_MIN_SECONDS
    for _ in range(5):
        problem = await refused(tokens, f"Bearer {idp.token(kid=uuid.uuid4().hex)}", ROLE_SEND)
        assert problem.status == 401  # an unknown key, not an outage: the known keys work
    assert idp.fetches[KEYS] == 2  # one attempt for the five
    await tokens.authorize(f"Bearer {idp.token()}", ROLE_SEND)


async def test_provider_down_at_the_daily_refresh_keeps_the_known_keys(idp: EntraStandIn) -> None:
    clock = Clock()
    tokens = validator(idp, clock)
    token = f"Bearer {idp.token()}"
    await tokens.authorize(token, ROLE_SEND)
    idp.down = True
    clock.now += KEY_SET_MAX_AGE_SECONDS + 1
    await tokens.authorize(token, ROLE_SEND)  # served with yesterday's key, not a 503
    attempts = idp.fetches[KEYS]
    await tokens.authorize(token, ROLE_SEND)
    assert idp.fetches[KEYS] == attempts  # and not one provider call per request meanwhile


def test_entra_mode_needs_tenant_and_audience() -> None:
    with pytest.raises(SettingsError, match="MAILGW_API_TENANT_ID"):
        Settings.from_env({"MAILGW_AUTH": "entra", "MAILGW_API_AUDIENCE": API_APP_ID})
    with pytest.raises(SettingsError, match="MAILGW_API_AUDIENCE"):
        Settings.from_env({"MAILGW_AUTH": "entra", "MAILGW_API_TENANT_ID": "t"})
    with pytest.raises(SettingsError, match="one tenant"):
        Settings.from_env(
            {"MAILGW_AUTH": "entra", "MAILGW_API_TENANT_ID": "common", "MAILGW_API_AUDIENCE": "a"}
        )
    with pytest.raises(SettingsError, match="MAILGW_AUTH must be one of keys, entra"):
        Settings.from_env({"MAILGW_AUTH": "easyauth"})
    with pytest.raises(SettingsError, match="MAILGW_API_AUTHORITY"):
        Settings.from_env(
            {
                "MAILGW_AUTH": "entra",
                "MAILGW_API_TENANT_ID": "t",
                "MAILGW_API_AUDIENCE": "a",
                "MAILGW_API_AUTHORITY": "http://login.example.com",
            }
        )


def test_entra_mode_without_tenant_fails_closed() -> None:
    """Settings built by hand (not from_env) cannot turn the anonymous routes into open ones."""
    with pytest.raises(ValueError, match="MAILGW_API_TENANT_ID"):
        create_api_auth(Settings(api_auth="entra"))


async def test_keys_mode_leaves_the_check_to_the_functions_host() -> None:
    auth = create_api_auth(Settings.from_env({}))
    assert await auth.authorize(None, ROLE_SEND) is None
    entra = create_api_auth(
        Settings.from_env(
            {"MAILGW_AUTH": "entra", "MAILGW_API_TENANT_ID": "t", "MAILGW_API_AUDIENCE": "a, b"}
        )
    )
    assert isinstance(entra, EntraTokens) and entra.audiences == ("a", "b")
    assert entra.metadata_url == (
        "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"
    )
