"""Who may call the HTTP API: Functions keys (the host checks them) or Entra ID access tokens.

With ``MAILGW_AUTH=entra`` the routes are anonymous to the Functions host and this module checks an
Entra ID v2 access token on every call but the health probe: RS256 signature against the tenant's
published keys, lifetime, audience (the gateway's API app registration) and issuer (that tenant),
then an app role per route. The check lives in the app rather than in App Service Authentication
so that it travels with the code: a deployment cannot run with it silently switched off, and the
same code runs locally against a stand-in identity provider.

Token signatures and JWK parsing are PyJWT's; this module only fetches the tenant's OpenID
metadata and key set (with httpx), caches them, and maps every failure to a problem response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import jwt

from mailgw.errors import AuthUnavailable, Forbidden, Unauthenticated
from mailgw.state.record import Viewer

if TYPE_CHECKING:
    from mailgw.settings import Settings

log = logging.getLogger("mailgw.auth")

#: App roles of the gateway's API app registration (docs/authentication.md).
ROLE_SEND = "Messages.Send"
ROLE_READ = "Messages.Read"
ROLE_REPLAY = "Messages.Replay"
#: Operators: read (and, with Messages.Replay, replay) any app's messages, not only their own.
ROLE_READ_ALL = "Messages.ReadAll"

#: Clock skew tolerated on exp/nbf, as Entra ID's own libraries do.
LEEWAY_SECONDS = 300
#: A token naming an unknown key makes the key set be fetched again, but not more often than this:
#: otherwise anyone could make every request cost a call to the identity provider.
KEY_REFRESH_MIN_SECONDS = 60.0
#: Before any key is known, a failed fetch is retried this soon (every call needs the keys).
KEY_RETRY_SECONDS = 5.0
#: Keys roll over; the set is refreshed at least this often even when every kid is known.
KEY_SET_MAX_AGE_SECONDS = 24 * 3600.0
_REALM = 'Bearer realm="mailgw"'


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, as the token names it (for logs and audit)."""

    object_id: str | None
    app_id: str | None
    roles: frozenset[str]

    def viewer(self) -> Viewer:
        """Whose messages this caller may see: its app's own, or any with Messages.ReadAll."""
        return Viewer(self.app_id, sees_all=ROLE_READ_ALL in self.roles)


class ApiAuth(Protocol):
    async def authorize(self, authorization: str | None, *any_of: str) -> Caller | None:
        """Raise :class:`Unauthenticated` or :class:`Forbidden` unless the caller holds one of
        ``any_of``."""
        ...


class FunctionKeys:
    """``MAILGW_AUTH=keys``: the Functions host checked the key before the function ran."""

    async def authorize(self, authorization: str | None, *any_of: str) -> Caller | None:
        return None


def create_api_auth(settings: Settings) -> ApiAuth:
    if settings.api_auth == "keys":
        return FunctionKeys()
    if not settings.api_tenant_id or not settings.api_audiences:  # the routes are anonymous now
        raise ValueError("MAILGW_AUTH=entra needs MAILGW_API_TENANT_ID and MAILGW_API_AUDIENCE")
    return EntraTokens(
        settings.api_authority,
        settings.api_tenant_id,
        settings.api_audiences,
        delegated_clients=settings.api_delegated_clients,
    )


def unauthorized(detail: str, *, token_seen: bool = True) -> Unauthenticated:
    """With RFC 6750's challenge; no error code when no token came at all (§3.1)."""
    challenge = _REALM
    if token_seen:
        challenge += f', error="invalid_token", error_description="{_quoted(detail)}"'
    return Unauthenticated(detail, challenge)


def forbidden(detail: str) -> Forbidden:
    """With RFC 6750's ``insufficient_scope``: a valid token that may not do this."""
    challenge = f'{_REALM}, error="insufficient_scope", error_description="{_quoted(detail)}"'
    return Forbidden(detail, challenge)


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


class EntraTokens:
    """Validates Entra ID v2 access tokens of one tenant for the gateway's API."""

    def __init__(
        self,
        authority: str,
        tenant_id: str,
        audiences: tuple[str, ...],
        *,
        delegated_clients: tuple[str, ...] = (),
        timeout_seconds: float = 10.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.metadata_url = (
            f"{authority.rstrip('/')}/{tenant_id}/v2.0/.well-known/openid-configuration"
        )
        self.audiences = audiences
        self.delegated_clients = frozenset(delegated_clients)
        self.timeout = timeout_seconds
        self.clock = clock
        self._issuer: str | None = None
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()

    async def authorize(self, authorization: str | None, *any_of: str) -> Caller:
        token = _bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("The bearer token is not a JWT.") from None
        if header.get("alg") != "RS256":
            raise unauthorized("Only RS256-signed tokens are accepted.")
        key = await self._key(str(header.get("kid", "")))
        claims = self._decode(token, key)
        roles = claims.get("roles")
        caller = Caller(
            object_id=claims.get("oid"),
            app_id=claims.get("azp") or claims.get("appid"),
            roles=frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset(),
        )
        if "scp" in claims and caller.app_id not in self.delegated_clients:
            # A user's token, obtained by some client app on the user's behalf: any app a user
            # consents to could get one. Only the client apps named in the setting may.
            raise forbidden(
                f"App {caller.app_id} called on behalf of a user, and it is not one of the client "
                "apps in MAILGW_API_DELEGATED_CLIENTS; call with the app's own token instead."
            )
        if any_of and not caller.roles & set(any_of):
            wanted = " or ".join(any_of)
            raise forbidden(
                f"The caller (app {caller.app_id}) has no {wanted} role on the gateway's API; "
                "assign it to the calling identity (docs/authentication.md)."
            )
        return caller

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        assert self._issuer is not None  # set by _key
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=list(self.audiences),
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("The token has expired; request a new one.") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("The token is not valid yet (nbf).") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(
                "The token is for another audience; request one with scope "
                f"{self.audiences[0]}/.default (the gateway API's application id)."
            ) from None
        except jwt.InvalidIssuerError:
            raise unauthorized(
                f"The token was not issued by {self._issuer}: it belongs to another tenant, or it "
                "is a v1 token (set requestedAccessTokenVersion to 2 on the API app registration)."
            ) from None
        except jwt.InvalidSignatureError:
            raise unauthorized("The token's signature does not verify.") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"The token is invalid: {exc}.") from None
        return claims

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None and self.clock() - self._fetched_at <= KEY_SET_MAX_AGE_SECONDS:
            return key
        async with self._lock:  # one fetch at a time; those who waited see its result
            now = self.clock()
            wanted = key is None or now - self._fetched_at > KEY_SET_MAX_AGE_SECONDS
            pause = KEY_REFRESH_MIN_SECONDS if self._keys else KEY_RETRY_SECONDS
            if wanted and now - self._attempted_at >= pause:
                self._attempted_at = now  # failed attempts count too: an outage is not a reason
                try:  # to let every request (or every made-up kid) call the provider again
                    await self._refresh()
                except AuthUnavailable:
                    if not self._keys:
                        raise
                    log.warning("Entra ID keys not refreshed; the known keys stay in use")
            key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._keys:  # never fetched: a recent attempt failed
            raise _unavailable()
        raise unauthorized("The token is signed with a key the tenant does not publish.")

    async def published_keys(self) -> tuple[str, int]:
        """The issuer and the number of signing keys the tenant publishes (``mailgw doctor``)."""
        await self._refresh()
        return str(self._issuer), len(self._keys)

    async def _refresh(self) -> None:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                if self._jwks_uri is None:
                    metadata = await _get_json(http, self.metadata_url)
                    self._issuer, self._jwks_uri = (
                        str(metadata["issuer"]),
                        str(metadata["jwks_uri"]),
                    )
                key_set = jwt.PyJWKSet.from_dict(await _get_json(http, self._jwks_uri))
        except (httpx.HTTPError, KeyError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning("Entra ID metadata or keys unavailable from %s: %s", self.metadata_url, exc)
            raise _unavailable() from exc
        self._keys = {k.key_id: k for k in key_set.keys if k.key_id}
        self._fetched_at = self.clock()


def _unavailable() -> AuthUnavailable:
    return AuthUnavailable(
        "The gateway cannot read its tenant's signing keys right now; retry later."
    )


async def _get_json(http: Any, url: str) -> Any:
    response = await http.get(url)
    response.raise_for_status()
    return response.json()


def _bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if not authorization:
        raise unauthorized(
            "This gateway accepts Entra ID access tokens: send Authorization: Bearer <token>.",
            token_seen=False,
        )
    if scheme.lower() != "bearer" or not token.strip():  # RFC 6750 §3.1: no error code then
        raise unauthorized("The Authorization header must be 'Bearer <token>'.", token_seen=False)
    return token.strip()
