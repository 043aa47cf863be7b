"""SMTP clients: who may submit mail over SMTP, as whom, from where, how much.

Each client is one row in Table storage (``MAILGW_SMTP_INTAKE_CLIENTS_TABLE``): its name (the
SMTP username), an argon2id hash of its generated password (never the password), its allowed
senders (within ``MAILGW_ALLOWED_SENDERS``), an optional IP allowlist, and optional limits.
A revoked client keeps its row (who it was, when it was revoked) and can no longer log in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from mailgw.policy import SenderPolicy
from mailgw.settings import parse_sender_list
from mailgw.storage import LazyTable, StorageConnection

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

PARTITION = "smtpclient"
#: a client's name: the SMTP username (lower case, no spaces, at most 64 characters)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: argon2id, RFC 9106's second recommended option (64 MiB, 3 passes): memory-hard
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)
#: a hash to verify against when the name is unknown, so that the answer takes as long
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(24))


class ClientError(ValueError):
    """A client definition that cannot be stored (the CLI prints it)."""


@dataclass(frozen=True)
class SmtpClient:
    name: str
    senders: tuple[str, ...]
    networks: tuple[str, ...] = ()
    #: 0: the intake's default (MAILGW_SMTP_INTAKE_MAX_MESSAGE_BYTES / _PER_MINUTE)
    max_message_bytes: int = 0
    per_minute: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    revoked_at: datetime | None = None
    password_hash: str = field(default="", repr=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def policy(self) -> SenderPolicy:
        return SenderPolicy(self.senders)

    def allows_ip(self, address: str) -> bool:
        """No allowlist: any address; else one of its networks."""
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.networks)

    def describe(self) -> dict[str, Any]:
        """What ``mailgw smtp-clients list`` shows (never the hash)."""
        return {
            "username": self.name,
            "allowedSenders": list(self.senders),
            "ips": list(self.networks),
            "maxMessageBytes": self.max_message_bytes or None,
            "perMinute": self.per_minute or None,
            "createdAt": self.created_at.isoformat(),
            "revokedAt": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def check_definition(name: str, senders: Sequence[str], networks: Sequence[str]) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ClientError(
            "a client name is 1-64 lower-case letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit; got {name!r}"
        )
    if not senders:
        raise ClientError("give at least one --allow-sender (an address or *@domain)")
    try:
        parse_sender_list(",".join(senders))
    except ValueError as exc:
        raise ClientError(str(exc).replace("MAILGW_ALLOWED_SENDERS", "--allow-sender")) from None
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ClientError(f"--ip must be an address or CIDR range; got {network!r}") from None


#: letters and digits only: a password pasted into a device's form, a shell or a command line
#: (``swaks --auth-password -x...`` reads a leading dash as an option) needs no quoting
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def new_password() -> str:
    """32 random letters and digits (190 bits): nothing to guess, nothing to brute-force."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(32))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class ClientStore:
    """The clients' table. Password checks run argon2 in a worker thread (it takes ~50 ms of CPU
    and 64 MiB by design) so the event loop keeps serving other sessions. A password verified
    once is remembered for its hash (as an HMAC under a key of this process, never in clear):
    devices that connect for every message pay argon2 once, and a changed or revoked client is
    still read from the table at every login."""

    #: verified (client, password) pairs remembered at most
    VERIFIED_LIMIT = 4096

    def __init__(self, connection: StorageConnection, table_name: str) -> None:
        self.connection = connection
        self.table_name = table_name
        self._lazy = LazyTable(connection, table_name)
        self._verified: dict[bytes, None] = {}
        self._key = secrets.token_bytes(32)

    def _fingerprint(self, client: SmtpClient, password: str) -> bytes:
        material = f"{client.name}\x00{client.password_hash}\x00{password}".encode()
        return hmac.new(self._key, material, hashlib.sha256).digest()

    async def _valid(self, client: SmtpClient | None, password: str) -> bool:
        if client is None:
            await asyncio.to_thread(_verify, _DUMMY_HASH, password)  # as long as a real check
            return False
        fingerprint = self._fingerprint(client, password)
        if fingerprint in self._verified:
            return True
        if not await asyncio.to_thread(_verify, client.password_hash, password):
            return False
        if len(self._verified) >= self.VERIFIED_LIMIT:
            self._verified.pop(next(iter(self._verified)))
        self._verified[fingerprint] = None
        return True

    def table(self) -> TableClient:
        return self._lazy.client()

    async def close(self) -> None:
        await self._lazy.close()

    async def add(
        self,
        name: str,
        senders: Sequence[str],
        networks: Sequence[str] = (),
        *,
        max_message_bytes: int = 0,
        per_minute: int = 0,
    ) -> tuple[SmtpClient, str]:
        """A new client and its password (shown once: only its hash is kept)."""
        check_definition(name, senders, networks)
        password = new_password()
        client = SmtpClient(
            name=name,
            senders=parse_sender_list(",".join(senders)),
            networks=tuple(str(ipaddress.ip_network(n, strict=False)) for n in networks),
            max_message_bytes=max_message_bytes,
            per_minute=per_minute,
            password_hash=await asyncio.to_thread(_HASHER.hash, password),
        )
        try:
            await self._insert(_to_entity(client))
        except ResourceExistsError:
            raise ClientError(
                f"a client named {name!r} exists (revoked ones too): choose another name"
            ) from None
        return client, password

    async def _insert(self, entity: dict[str, Any]) -> None:
        try:
            await self.table().create_entity(entity)
        except ResourceNotFoundError:  # no table yet (locally, the first write creates it)
            with contextlib.suppress(ResourceExistsError):
                await self.table().create_table()
            await self.table().create_entity(entity)

    async def get(self, name: str) -> SmtpClient | None:
        if not NAME_PATTERN.fullmatch(name):
            return None
        try:
            entity = await self.table().get_entity(PARTITION, name)
        except ResourceNotFoundError:
            return None
        return _from_entity(entity)

    async def list(self) -> list[SmtpClient]:
        try:
            entities = [
                e async for e in self.table().query_entities(f"PartitionKey eq '{PARTITION}'")
            ]
        except ResourceNotFoundError:
            return []
        return sorted((_from_entity(e) for e in entities), key=lambda c: c.name)

    async def revoke(self, name: str) -> SmtpClient | None:
        """Revoke a client (its next login fails); None if there is no such client."""
        client = await self.get(name)
        if client is None:
            return None
        if not client.revoked:
            await self.table().update_entity(
                {
                    "PartitionKey": PARTITION,
                    "RowKey": name,
                    "revokedAt": datetime.now(UTC),
                },
                mode="merge",
            )
        return await self.get(name)

    async def authenticate(self, name: str, password: str) -> SmtpClient | None:
        """The client, if ``password`` is its password and it is not revoked. Storage errors
        propagate (the intake answers 454 4.7.0: try again later, not "wrong password")."""
        client = await self.get(name)
        if not await self._valid(client, password) or client is None or client.revoked:
            return None
        return client


def _to_entity(client: SmtpClient) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION,
        "RowKey": client.name,
        "passwordHash": client.password_hash,
        "senders": ",".join(client.senders),
        "networks": ",".join(client.networks),
        "maxMessageBytes": client.max_message_bytes,
        "perMinute": client.per_minute,
        "createdAt": client.created_at,
    }


def _from_entity(entity: Any) -> SmtpClient:
    def split(value: Any) -> tuple[str, ...]:
        return tuple(v for v in str(value or "").split(",") if v)

    return SmtpClient(
        name=str(entity["RowKey"]),
        senders=split(entity.get("senders")),
        networks=split(entity.get("networks")),
        max_message_bytes=int(entity.get("maxMessageBytes") or 0),
        per_minute=int(entity.get("perMinute") or 0),
        created_at=entity.get("createdAt") or datetime.now(UTC),
        revoked_at=entity.get("revokedAt"),
        password_hash=str(entity.get("passwordHash") or ""),
    )
