"""Storage clients built from the same settings the Functions host reads.

The host resolves a binding's ``connection`` name (``AzureWebJobsStorage`` by default) either as a
connection string or, identity-based, as ``<name>__queueServiceUri`` / ``__blobServiceUri`` /
``__tableServiceUri`` with ``__credential=managedidentity`` and ``__clientId``. The app's own
clients (and the dev host) read exactly those settings: one storage configuration, not two.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient, TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

Service = Literal["queue", "blob", "table"]
C_co = TypeVar("C_co", covariant=True)

# Azurite's published development account (https://learn.microsoft.com/azure/storage/common/storage-use-azurite).
# It is a well-known constant of the emulator, not a secret; it only ever reaches 127.0.0.1.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_DEFAULT_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}


def azurite_connection_string(
    host: str = "127.0.0.1", ports: Mapping[str, int] = AZURITE_DEFAULT_PORTS
) -> str:
    """The explicit form of ``UseDevelopmentStorage=true`` (the queue and blob SDKs lack it)."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{ports['blob']}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{ports['queue']}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{ports['table']}/{AZURITE_ACCOUNT};"
    )


class StorageConfigError(ValueError):
    """A storage connection setting is missing or malformed; the message names the setting."""


@dataclass(frozen=True)
class StorageConnection:
    """One storage connection as the host reads it: a connection string or identity-based URIs."""

    name: str
    connection_string: str | None = None
    service_uris: Mapping[str, str] | None = None
    credential_kind: str | None = None
    client_id: str | None = None

    @classmethod
    def from_settings(
        cls, name: str = "AzureWebJobsStorage", env: Mapping[str, str] | None = None
    ) -> StorageConnection:
        env = os.environ if env is None else env
        value = env.get(name, "").strip()
        if value:
            if value.replace(" ", "").lower() == "usedevelopmentstorage=true":
                value = azurite_connection_string()
            return cls(name=name, connection_string=value)
        prefix = f"{name}__"
        uris = {
            service: env[f"{prefix}{service}ServiceUri"].rstrip("/")
            for service in ("queue", "blob", "table")
            if env.get(f"{prefix}{service}ServiceUri")
        }
        account = env.get(f"{prefix}accountName", "").strip()
        if account:
            for service, suffix in (("queue", "queue"), ("blob", "blob"), ("table", "table")):
                uris.setdefault(service, f"https://{account}.{suffix}.core.windows.net")
        if not uris:
            raise StorageConfigError(
                f"storage connection '{name}' is not configured: set {name} to a connection string "
                f"(UseDevelopmentStorage=true for Azurite) or {name}__queueServiceUri / "
                f"{name}__blobServiceUri / {name}__tableServiceUri for identity-based access"
            )
        credential_kind = env.get(f"{prefix}credential", "").strip().lower() or None
        if credential_kind not in (None, "managedidentity"):
            raise StorageConfigError(
                f"{prefix}credential must be 'managedidentity' (or unset for "
                f"DefaultAzureCredential); got {credential_kind!r}"
            )
        return cls(
            name=name,
            service_uris=uris,
            credential_kind=credential_kind,
            client_id=env.get(f"{prefix}clientId", "").strip() or None,
        )

    def service_uri(self, service: Service) -> str:
        assert self.service_uris is not None
        try:
            return self.service_uris[service]
        except KeyError:
            raise StorageConfigError(
                f"storage connection '{self.name}' has no {service} endpoint: "
                f"set {self.name}__{service}ServiceUri"
            ) from None

    def describe(self) -> str:
        """``account NAME (queue endpoint)``, never the key: for commands that say what they use."""
        if self.connection_string:
            parts = dict(
                item.split("=", 1) for item in self.connection_string.split(";") if "=" in item
            )
            account = parts.get("AccountName", "?")
            suffix = parts.get("EndpointSuffix", "core.windows.net")
            endpoint = parts.get("QueueEndpoint") or f"https://{account}.queue.{suffix}"
            return f"account {account} ({endpoint.rstrip('/')})"
        assert self.service_uris is not None
        endpoint = self.service_uris.get("queue") or next(iter(self.service_uris.values()))
        url = urlsplit(endpoint)
        first_label = (url.hostname or "").split(".")[0]
        # https://NAME.queue.core.windows.net, or an emulator's http://127.0.0.1:10001/NAME
        local = first_label.isdigit() or first_label == "localhost"
        account = url.path.strip("/").split("/")[0] if local else first_label
        signed_in = "managed identity" if self.credential_kind else "DefaultAzureCredential"
        return f"account {account or '?'} ({endpoint}, {signed_in})"

    def credential(self) -> AsyncTokenCredential:
        """The token credential for identity-based connections (cached: one per connection)."""
        return _credential_for(self.credential_kind, self.client_id)


_CREDENTIALS: dict[tuple[str | None, str | None], Any] = {}


def _credential_for(kind: str | None, client_id: str | None) -> AsyncTokenCredential:
    key = (kind, client_id)
    if key not in _CREDENTIALS:
        if kind == "managedidentity":
            from azure.identity.aio import ManagedIdentityCredential

            _CREDENTIALS[key] = ManagedIdentityCredential(client_id=client_id)
        else:
            from azure.identity.aio import DefaultAzureCredential

            _CREDENTIALS[key] = DefaultAzureCredential(managed_identity_client_id=client_id)
    credential: AsyncTokenCredential = _CREDENTIALS[key]
    return credential


async def close_credentials() -> None:
    """Close the cached storage credentials (a one-shot command, before its event loop ends)."""
    while _CREDENTIALS:
        _, credential = _CREDENTIALS.popitem()
        await credential.close()


#: The SDKs' own retries wait 15 s, 18 s, 24 s (Storage) or up to 2 min (Tables' azure-core
#: policy, 10 retries) and connect for up to 5 min: an HTTP caller would hear nothing for minutes
#: before a 503. Here: two quick retries and a 10 s connect timeout; after that the caller (told
#: Retry-After) or the queue (visibilityTimeout) retries. Callers may pass their own retry_total.
RETRIES = 2
CONNECT_TIMEOUT_SECONDS = 10


def use_env_settings() -> bool:
    """azure-core's ``use_env_settings`` for the aiohttp transport: on only where a proxy is set.

    With it on (azure-core's default) aiohttp looks up ``~/.netrc`` and the proxies in a worker
    thread on every request, which cost about a third of each storage request's client CPU
    (bench/storage_requests.py). Where no HTTP(S) proxy is configured those lookups find nothing,
    so turning them off changes no request; where one is (in the environment, any case, or on
    Windows and macOS in the system settings, as ``urllib`` reads them) they stay on."""
    return bool({"http", "https"} & urllib.request.getproxies().keys())


def _storage_options(options: dict[str, Any]) -> dict[str, Any]:
    """Queue and Blob: keywords of their async ExponentialRetry, 1 s then 3 s (±1 s)."""
    return {
        "retry_total": RETRIES,
        "initial_backoff": 1,
        "increment_base": 2,
        "random_jitter_range": 1,
        "connection_timeout": CONNECT_TIMEOUT_SECONDS,
        **options,
    }


def _table_options(options: dict[str, Any]) -> dict[str, Any]:
    """Tables: azure-core's retry keywords, 0.5 s then 1 s."""
    return {
        "retry_total": RETRIES,
        "retry_backoff_factor": 0.5,
        "retry_backoff_max": 4,
        "connection_timeout": CONNECT_TIMEOUT_SECONDS,
        **options,
    }


class _ClientKind(Protocol[C_co]):
    """A storage SDK's client class: made from an account URL or from a connection string."""

    def __call__(self, url: str, /, *args: Any, **kwargs: Any) -> C_co: ...

    def from_connection_string(self, conn_str: str, /, *args: Any, **kwargs: Any) -> C_co: ...


def _client(
    connection: StorageConnection,
    service: Service,
    kind: _ClientKind[C_co],
    *args: Any,
    **options: Any,
) -> C_co:
    """Every storage client is made the one way: from the connection string when there is one,
    else from the service's URI with the connection's credential. ``args``: what follows the
    account (a queue name)."""
    options = {"use_env_settings": use_env_settings(), **options}
    if connection.connection_string:
        return kind.from_connection_string(connection.connection_string, *args, **options)
    return kind(
        connection.service_uri(service), *args, credential=connection.credential(), **options
    )


def queue_service_client(connection: StorageConnection, **options: Any) -> QueueServiceClient:
    """An async queue service client (for queue management: create, list, properties)."""
    from azure.storage.queue.aio import QueueServiceClient

    return _client(connection, "queue", QueueServiceClient, **_storage_options(options))


def queue_client(connection: StorageConnection, queue_name: str, **options: Any) -> QueueClient:
    """An async client for one queue, Base64-encoding like the Functions host (``messageEncoding``).

    azure-storage-queue sends text unencoded by default, and a service client does not pass its
    encoding on to the queue clients it makes, so the policies are set here, on every queue client.
    """
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    policies: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        **_storage_options(options),
    }
    return _client(connection, "queue", QueueClient, queue_name, **policies)


def blob_service_client(connection: StorageConnection, **options: Any) -> BlobServiceClient:
    from azure.storage.blob.aio import BlobServiceClient

    return _client(connection, "blob", BlobServiceClient, **_storage_options(options))


def table_service_client(connection: StorageConnection, **options: Any) -> TableServiceClient:
    from azure.data.tables.aio import TableServiceClient

    return _client(connection, "table", TableServiceClient, **_table_options(options))


class LazyTable:
    """One table's client, made on first use (with its service client) and closed with it: what
    the state store and the SMTP client store share."""

    def __init__(self, connection: StorageConnection, name: str) -> None:
        self.connection = connection
        self.name = name
        self._service: TableServiceClient | None = None
        self._table: TableClient | None = None

    def client(self) -> TableClient:
        if self._table is None:
            self._service = table_service_client(self.connection)
            self._table = self._service.get_table_client(self.name)
        return self._table

    async def close(self) -> None:
        if self._table is not None:
            await self._table.close()
        if self._service is not None:
            await self._service.close()
