"""``mailgw doctor``: is this configuration ready to deliver mail? Checked without sending any.

Each check says what it saw, and when it fails, what to do: the settings (as the app validates them
at load), the sender policy, the storage the gateway uses (reachable with this identity; a queue,
table or container not created yet is fine, the first use creates it), the transport (a Graph
token; an SMTP connection with STARTTLS and, given a mailbox, AUTH; the outbox folder), and the
Entra ID keys when the API takes tokens. Run it with the app's settings and identity: on an
operator's machine, ``MAILGW_CREDENTIAL=default`` and DefaultAzureCredential test *your* sign-in,
not the Function App's managed identity, so a token check passing there proves the settings and
the network path, not the app's permissions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceNotFoundError

from mailgw.errors import GatewayError
from mailgw.settings import Settings, SettingsError
from mailgw.storage import StorageConfigError
from mailgw.transports.errors import DeliveryError

CHECK_TIMEOUT_SECONDS = 20.0


class CheckFailed(Exception):
    """A check that saw something wrong: what it saw, and what to do."""

    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail, self.hint = detail, hint


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    hint: str = ""


async def diagnose(env: Mapping[str, str], mailbox: str | None = None) -> list[Finding]:
    """Every check, in the order a delivery needs them; a wrong setting stops the rest."""
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        return [
            Finding(
                "settings", False, str(exc), "fix the setting it names; the app would not start"
            )
        ]
    findings = [
        Finding("settings", True, f"transport {settings.transport}, queue {settings.queue}")
    ]
    findings.append(_senders(settings))
    probe_as = mailbox or _probe_mailbox(settings)
    try:
        checks = _storage_checks(settings)
    except StorageConfigError as exc:
        findings.append(Finding("storage", False, str(exc), "set the storage setting it names"))
        checks = []
    checks.append((f"transport {settings.transport}", lambda: _probe_transport(settings, probe_as)))
    if settings.api_auth == "entra":
        checks.append(("api tokens", lambda: _entra_keys(settings)))
    for name, check in checks:
        findings.append(await _run(name, check, settings))
    return findings


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{'ok  ' if finding.ok else 'FAIL'} {finding.check}: {finding.detail}")
        if finding.hint:
            lines.append(f"     -> {finding.hint}")
    return "\n".join(lines)


async def _run(name: str, check: Callable[[], Awaitable[str]], settings: Settings) -> Finding:
    try:
        return Finding(name, True, await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS))
    except DeliveryError as exc:
        return Finding(name, False, f"{exc.code}: {exc.message}", exc.hint)
    except CheckFailed as exc:
        return Finding(name, False, exc.detail, exc.hint)
    except GatewayError as exc:
        return Finding(
            name, False, exc.detail, f"check MAILGW_API_AUTHORITY ({settings.api_authority})"
        )
    except TimeoutError:
        return Finding(
            name,
            False,
            f"no answer within {CHECK_TIMEOUT_SECONDS:.0f} s",
            "check the network path and the endpoint in the settings",
        )
    except StorageConfigError as exc:
        return Finding(name, False, str(exc), "set the storage setting it names")
    except ValueError as exc:  # what the SDKs raise for a setting they cannot use
        return Finding(name, False, f"{type(exc).__name__}: {exc}", _storage_hint(settings))
    except AzureError as exc:
        message = (str(exc).splitlines() or [""])[0]
        return Finding(name, False, f"{type(exc).__name__}: {message}", _storage_hint(settings))
    except OSError as exc:  # the outbox folder (the SMTP transport classifies its own)
        return Finding(
            name, False, f"{type(exc).__name__}: {exc}", "check the path and its permissions"
        )


def _probe_mailbox(settings: Settings) -> str | None:
    """The first mailbox the policy names; for ``*@domain`` only, that domain's postmaster (a
    relay connector judges the domain; SMTP AUTH needs a real mailbox, so --mailbox then)."""
    exact = [s for s in settings.allowed_senders if not s.startswith("*@")]
    if exact:
        return exact[0]
    if settings.allowed_senders and settings.transport == "relay":
        return "postmaster@" + settings.allowed_senders[0].removeprefix("*@")
    return None


def _senders(settings: Settings) -> Finding:
    if not settings.allowed_senders:
        return Finding(
            "senders",
            False,
            "MAILGW_ALLOWED_SENDERS is empty: every message would be refused with 403",
            "list the mailboxes (or *@domain) the gateway may send as",
        )
    return Finding("senders", True, ", ".join(settings.allowed_senders))


def _storage_checks(settings: Settings) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
    from mailgw.storage import blob_service_client, queue_client, table_service_client

    connection = settings.storage()
    fail_fast = {"retry_total": 0}  # a diagnosis reports the first failure; delivery retries

    async def queue(name: str) -> str:
        async with queue_client(connection, name, **fail_fast) as client:
            try:
                properties = await client.get_queue_properties()
            except ResourceNotFoundError:
                return "reachable; not created yet (the first message creates it)"
            return f"reachable, {properties.approximate_message_count} message(s) waiting"

    async def table() -> str:
        async with table_service_client(connection, **fail_fast) as service:
            client = service.get_table_client(settings.state_table)
            try:
                async for _ in client.list_entities(results_per_page=1, select=["PartitionKey"]):
                    break
            except ResourceNotFoundError:
                return "reachable; not created yet (the first message creates it)"
            return "reachable"

    async def container() -> str:
        async with blob_service_client(connection, **fail_fast) as service:
            try:
                await service.get_container_client(
                    settings.payload_container
                ).get_container_properties()
            except ResourceNotFoundError:
                return "reachable; not created yet (the first large message creates it)"
            return "reachable"

    async def poison() -> str:
        seen = await queue(settings.poison_queue)
        waiting = seen.startswith("reachable, ") and not seen.startswith("reachable, 0 ")
        return seen + ("; see `mailgw failed list`" if waiting else "")

    async def poison_poison() -> str:
        seen = await queue(f"{settings.poison_queue}-poison")
        if seen.startswith("reachable, ") and not seen.startswith("reachable, 0 "):
            raise CheckFailed(
                seen.replace("waiting", "whose failure could not be recorded"),
                "recording failed messages failed repeatedly (storage trouble): the "
                "sweep_poison_poison timer records them every 5 minutes; if they stay, look up "
                "the exceptions of record_failure and sweep_poison_poison",
            )
        return seen

    return [
        (f"queue {settings.queue}", lambda: queue(settings.queue)),
        (f"poison queue {settings.poison_queue}", poison),
        (f"poison-poison queue {settings.poison_queue}-poison", poison_poison),
        (f"state table {settings.state_table}", table),
        (f"payload container {settings.payload_container}", container),
    ]


async def _probe_transport(settings: Settings, mailbox: str | None) -> str:
    from mailgw.transports import create_transport

    transport = create_transport(settings)
    try:
        return await transport.probe(mailbox)
    finally:
        await transport.aclose()


async def _entra_keys(settings: Settings) -> str:
    from mailgw.auth import EntraTokens, create_api_auth

    tokens = create_api_auth(settings)  # the very validator the API uses
    assert isinstance(tokens, EntraTokens)  # only called with MAILGW_AUTH=entra
    issuer, keys = await tokens.published_keys()
    return f"{keys} signing key(s) of {issuer}"


def _storage_hint(settings: Settings) -> str:
    if settings.storage().connection_string:
        return "check AzureWebJobsStorage (locally: is Azurite running? `make run` starts it)"
    return (
        "check the AzureWebJobsStorage__* service URIs, and that this identity has the Storage "
        "Queue, Table and Blob Data Contributor roles on the account"
    )
