"""Credential factory for ``MAILGW_CREDENTIAL``: no secrets, only identities.

- ``managed_identity``: the Function App's identity (``AZURE_CLIENT_ID`` picks a user-assigned one).
  azure-identity's own ``ManagedIdentityCredential``, which on App Service / Functions talks to
  ``IDENTITY_ENDPOINT`` with ``IDENTITY_HEADER``.
- ``federated_managed_identity``: cross-tenant sending. The user-assigned identity's token for
  ``api://AzureADTokenExchange`` is the client assertion of an app registration in the mail tenant
  (``MAILGW_TENANT_ID``, ``MAILGW_APP_CLIENT_ID``); no client secret exists anywhere.
- ``workload_identity``: federated tokens from ``AZURE_FEDERATED_TOKEN_FILE`` (Kubernetes).
- ``default``: ``DefaultAzureCredential``, for a developer's ``az login``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mailgw import telemetry
from mailgw.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential

#: The audience a federated credential's assertion must carry differs per national cloud.
TOKEN_EXCHANGE_AUDIENCES = {
    "graph.microsoft.us": "api://AzureADTokenExchangeUSGov",
    "dod-graph.microsoft.us": "api://AzureADTokenExchangeUSGov",
    "microsoftgraph.chinacloudapi.cn": "api://AzureADTokenExchangeChina",
}


def token_exchange_scope(graph_endpoint: str) -> str:
    """``api://AzureADTokenExchange[USGov|China]/.default``, following MAILGW_GRAPH_ENDPOINT."""
    host = urlsplit(graph_endpoint).hostname or ""
    return TOKEN_EXCHANGE_AUDIENCES.get(host, "api://AzureADTokenExchange") + "/.default"


def create_credential(settings: Settings) -> AsyncTokenCredential:
    """One credential per process: azure-identity caches and refreshes its tokens."""
    identity = settings.identity
    if identity.mode == "managed_identity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=identity.client_id)
    if identity.mode == "federated_managed_identity":
        from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
        from azure.identity.aio import ClientAssertionCredential

        # Settings.from_env refuses federated_managed_identity without these two.
        assert identity.tenant_id is not None
        assert identity.app_client_id is not None
        managed = SyncManagedIdentityCredential(client_id=identity.client_id)
        exchange_scope = token_exchange_scope(settings.graph_endpoint)

        def assertion() -> str:
            # Called only when the app token needs renewing (about hourly); the managed identity
            # endpoint is local to the instance, so this short synchronous call is acceptable.
            token: str = managed.get_token(exchange_scope).token
            return token

        return ClientAssertionCredential(
            tenant_id=identity.tenant_id, client_id=identity.app_client_id, func=assertion
        )
    if identity.mode == "workload_identity":
        from azure.identity.aio import WorkloadIdentityCredential

        return WorkloadIdentityCredential()
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=identity.client_id)


class SingleFlightCredential:
    """One token request at a time per scope, however many sends want a token at once.

    azure-identity caches tokens but does not merge concurrent requests: twenty sends on a cold
    instance would make twenty calls to the identity endpoint (and it throttles). Waiters share
    the first caller's token; a cached token is returned until five minutes before it expires.
    """

    REFRESH_MARGIN = 300

    def __init__(self, inner: AsyncTokenCredential):
        self.inner = inner
        self._tokens: dict[tuple[str, ...], AccessToken] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        if claims or tenant_id:  # a challenge: never answer it from the cache
            return await self._fetch(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )
        key = tuple(scopes)
        async with self._locks.setdefault(key, asyncio.Lock()):
            token = self._tokens.get(key)
            if token is None or token.expires_on - self.REFRESH_MARGIN <= time.time():
                token = await self._fetch(*scopes, enable_cae=enable_cae, **kwargs)
                self._tokens[key] = token
            return token

    async def _fetch(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """A request to the identity endpoint, counted (``mailgw.token.fetches``)."""
        with telemetry.fetching_token(scopes):
            return await self.inner.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> SingleFlightCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


def token_roles(token: str) -> str:
    """The app roles an access token carries, for a diagnosis (not a check: unverified)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return "an opaque token"
    roles = claims.get("roles")
    if not isinstance(roles, list) or not roles:
        return "roles: none"
    return "roles: " + ", ".join(str(r) for r in roles)
