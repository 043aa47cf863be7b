"""Every setting the gateway reads, read once and validated.

Settings come from the environment (app settings in Azure, ``local.settings.json`` locally). A wrong
value is a start-up error that names the setting, not a failure on the first message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Literal, TypedDict
from urllib.parse import urlsplit

from mailgw.pacing.limits import (
    DEFAULT_DAILY_RECIPIENTS,
    SMTP_PER_MINUTE,
    LimitsError,
    MailboxLimits,
    PacingLimits,
    parse_overrides,
)
from mailgw.storage import StorageConnection

if TYPE_CHECKING:
    from mailgw.client_cert import ClientCertificate

TransportName = Literal["graph", "smtp", "relay", "outbox"]
TRANSPORTS: tuple[TransportName, ...] = ("graph", "smtp", "relay", "outbox")
GraphMode = Literal["sendmail", "draft"]
GRAPH_MODES: tuple[GraphMode, ...] = ("sendmail", "draft")
AuthMode = Literal["keys", "entra"]
API_AUTH_MODES: tuple[AuthMode, ...] = ("keys", "entra")
CredentialMode = Literal[
    "managed_identity", "federated_managed_identity", "workload_identity", "default"
]
CREDENTIAL_MODES: tuple[CredentialMode, ...] = (
    "managed_identity",
    "federated_managed_identity",
    "workload_identity",
    "default",
)

MiB = 1024 * 1024
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
#: Microsoft Graph's host in each cloud (public, US Government L4 and L5, China); each is also the
#: resource its tokens are issued for.
GRAPH_CLOUD_HOSTS = frozenset(
    {
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }
)
PUBLIC_GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: the events' ``source`` where the gateway cannot tell its URL (no WEBSITE_HOSTNAME)
DEFAULT_EVENTS_SOURCE = "urn:mailgw:gateway"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and says what is expected."""


@dataclass(frozen=True)
class IdentitySettings:
    """Who the gateway is towards Graph and Exchange (``MAILGW_CREDENTIAL``, mailgw/identity.py).

    azure-identity itself reads ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` (managed identity) and
    ``AZURE_TENANT_ID``/``AZURE_FEDERATED_TOKEN_FILE`` (workload identity)."""

    mode: CredentialMode = "managed_identity"
    #: AZURE_CLIENT_ID: a user-assigned identity (or the workload identity's app)
    client_id: str | None = None
    #: MAILGW_TENANT_ID: the tenant that owns the mailboxes (federated_managed_identity)
    tenant_id: str | None = None
    #: MAILGW_APP_CLIENT_ID: the app registration that trusts the identity (federated)
    app_client_id: str | None = None


@dataclass(frozen=True)
class SmtpIntakeSettings:
    """The SMTP intake (``mailgw-smtp``, docs/smtp-intake.md): where it listens, its TLS
    certificate, its clients' table, and the limits of a client that sets none of its own."""

    #: MAILGW_SMTP_INTAKE_HOST: the address both listeners bind
    host: str = "0.0.0.0"
    #: MAILGW_SMTP_INTAKE_PORT: submission with STARTTLS required before AUTH (0: off)
    port: int = 587
    #: MAILGW_SMTP_INTAKE_TLS_PORT: submission over implicit TLS (0: off)
    tls_port: int = 465
    #: MAILGW_SMTP_INTAKE_CERT_FILE / _KEY_FILE: PEM certificate chain and key (one file may
    #: hold both); in Azure, the Key Vault certificate mounted as a secret volume
    cert_file: str | None = None
    key_file: str | None = None
    #: MAILGW_SMTP_INTAKE_HOSTNAME: the name in the greeting (default: this host's FQDN)
    hostname: str | None = None
    #: MAILGW_SMTP_INTAKE_CLIENTS_TABLE: the clients and their password hashes
    clients_table: str = "mailgwsmtpclients"
    #: MAILGW_SMTP_INTAKE_MAX_MESSAGE_BYTES: a client's message size limit unless it has one
    max_message_bytes: int = 35 * MiB
    #: MAILGW_SMTP_INTAKE_PER_MINUTE: a client's messages per minute unless it has its own
    per_minute: int = 120


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration. Defaults are what a production deployment wants."""

    queue: str = "mail-outbound"
    allowed_senders: tuple[str, ...] = ()
    transport: TransportName = "graph"
    outbox_dir: str = "outbox"
    graph_endpoint: str = "https://graph.microsoft.com"
    payload_container: str = "mail-payloads"
    #: the Blob container of message templates (``mailgw templates put``)
    template_container: str = "mail-templates"
    max_request_bytes: int = 100 * MiB
    max_attachment_bytes: int = 150 * MiB
    max_attempts: int = 8
    max_age_seconds: int = 24 * 3600
    graph_mode: GraphMode = "sendmail"
    graph_timeout_seconds: int = 30
    #: MAILGW_GRAPH_SCOPE; None: the Graph audience of the endpoint's cloud (:attr:`graph_scope`)
    graph_token_scope: str | None = None
    #: how long a draft handed to ``/send`` may still read as a draft (or not be found) before
    #: the gateway concludes that the submission did not happen (draft mode)
    graph_submit_grace_seconds: int = 300
    mailbox_concurrency: int = 4
    #: pacing (docs/operations.md, "Budgets and pacing"): recipients per rolling 24 h per mailbox
    mailbox_daily_recipients: int = DEFAULT_DAILY_RECIPIENTS
    #: messages per minute per mailbox; None: not paced per minute (the default but for smtp)
    mailbox_per_minute: int | None = None
    #: MAILGW_MAILBOX_LIMITS: per-mailbox overrides, by lower-case address
    mailbox_limits: Mapping[str, MailboxLimits] = field(default_factory=dict, hash=False)
    #: recipients per rolling 24 h for the whole tenant; None: off
    tenant_daily_recipients: int | None = None
    smtp_host: str = "smtp.office365.com"
    smtp_port: int = 587
    smtp_ca_file: str | None = None
    smtp_token_scope: str = "https://outlook.office365.com/.default"
    smtp_timeout_seconds: int = 30
    smtp_connections: int = 3
    relay_host: str | None = None
    relay_port: int = 25
    #: the relay's TLS client certificate, for a certificate-based inbound connector
    relay_client_cert: ClientCertificate | None = field(default=None, repr=False)
    state_table: str = "mailgwstate"
    retention_days: int = 30
    idempotency_hours: int = 24
    #: how HTTP callers authenticate: Functions keys (checked by the host) or Entra ID tokens
    api_auth: AuthMode = "keys"
    api_tenant_id: str | None = None
    api_audiences: tuple[str, ...] = ()
    api_authority: str = ENTRA_AUTHORITY
    #: client apps allowed to call on behalf of a user (delegated tokens); none: app tokens only
    api_delegated_clients: tuple[str, ...] = ()
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    smtp_intake: SmtpIntakeSettings = field(default_factory=SmtpIntakeSettings)
    #: outcome events (docs/events.md): a storage queue and/or an Event Grid topic; None: off
    events_queue: str | None = None
    eventgrid_endpoint: str | None = None
    #: the events' ``source``: this gateway's URL
    events_source: str = DEFAULT_EVENTS_SOURCE
    events_timeout_seconds: int = 5
    storage_connection_name: str = "AzureWebJobsStorage"
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def poison_queue(self) -> str:
        """The host's naming: ``<queue>-poison``."""
        return f"{self.queue}-poison"

    @property
    def retention(self) -> timedelta:
        """How long a message's record (and its kept payload) lives after acceptance."""
        return timedelta(days=self.retention_days)

    @property
    def idempotency_window(self) -> timedelta:
        """How long an ``Idempotency-Key`` answers with its first message."""
        return timedelta(hours=self.idempotency_hours)

    @property
    def graph_scope(self) -> str:
        """The scope of the gateway's Graph tokens: MAILGW_GRAPH_SCOPE, else
        :func:`default_graph_scope` of the endpoint."""
        return self.graph_token_scope or default_graph_scope(self.graph_endpoint)

    @property
    def pacing(self) -> PacingLimits:
        """Every mailbox's budgets (the defaults, the overrides) and the tenant's."""
        default = MailboxLimits(
            daily_recipients=self.mailbox_daily_recipients,
            per_minute=self.mailbox_per_minute,
            concurrency=self.mailbox_concurrency,
        )
        return PacingLimits(default, self.mailbox_limits, self.tenant_daily_recipients)

    def storage(self) -> StorageConnection:
        return StorageConnection.from_settings(self.storage_connection_name, self.env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)

        def get(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        transport = get("MAILGW_TRANSPORT", "graph").lower()
        if transport not in TRANSPORTS:
            raise SettingsError(
                f"MAILGW_TRANSPORT must be one of {', '.join(TRANSPORTS)}; got {transport!r}"
            )
        graph_mode = get("MAILGW_GRAPH_MODE", cls.graph_mode).lower()
        if graph_mode not in GRAPH_MODES:
            raise SettingsError(
                f"MAILGW_GRAPH_MODE must be one of {', '.join(GRAPH_MODES)}; got {graph_mode!r}"
            )
        concurrency = _positive_int(env, "MAILGW_MAILBOX_CONCURRENCY", cls.mailbox_concurrency)
        if concurrency > 4:
            raise SettingsError(
                "MAILGW_MAILBOX_CONCURRENCY must be 1-4: Graph allows 4 concurrent requests per "
                f"app and mailbox, more only collects 429s; got {concurrency}"
            )
        smtp = _smtp_settings(env, transport)
        state_table = get("MAILGW_STATE_TABLE", cls.state_table)
        if not (3 <= len(state_table) <= 63 and state_table.isalnum() and state_table[0].isalpha()):
            raise SettingsError(
                "MAILGW_STATE_TABLE must be a table name: 3-63 letters and digits, starting with a "
                f"letter; got {state_table!r}"
            )
        queue = get("MAILGW_QUEUE", cls.queue)
        if not _valid_queue_name(queue):
            raise SettingsError(
                "MAILGW_QUEUE must be a valid storage queue name (3-63 lowercase letters, digits "
                f"and single hyphens) short enough for its '-poison' twin; got {queue!r}"
            )
        endpoint = get("MAILGW_GRAPH_ENDPOINT", cls.graph_endpoint).rstrip("/")
        if not _acceptable_endpoint(endpoint):
            raise SettingsError(
                "MAILGW_GRAPH_ENDPOINT must be an https:// URL (http only on loopback); "
                f"got {endpoint!r}"
            )
        scope = get("MAILGW_GRAPH_SCOPE", "") or None
        if scope is not None and (
            not scope.endswith("/.default") or any(c.isspace() for c in scope)
        ):
            raise SettingsError(
                "MAILGW_GRAPH_SCOPE must be a resource's '/.default' scope, as app-only tokens "
                f"need (for example {PUBLIC_GRAPH_SCOPE}); got {scope!r}"
            )
        return cls(
            **_api_auth_settings(env),
            identity=identity_settings(env, required=transport in ("graph", "smtp")),
            queue=queue,
            allowed_senders=parse_sender_list(env.get("MAILGW_ALLOWED_SENDERS", "")),
            transport=transport,  # checked against TRANSPORTS above
            outbox_dir=get("MAILGW_OUTBOX_DIR", cls.outbox_dir),
            graph_endpoint=endpoint,
            payload_container=get("MAILGW_PAYLOAD_CONTAINER", cls.payload_container),
            template_container=get("MAILGW_TEMPLATE_CONTAINER", cls.template_container),
            max_request_bytes=_positive_int(env, "MAILGW_MAX_REQUEST_BYTES", cls.max_request_bytes),
            max_attachment_bytes=_positive_int(
                env, "MAILGW_MAX_ATTACHMENT_BYTES", cls.max_attachment_bytes
            ),
            max_attempts=_positive_int(env, "MAILGW_MAX_ATTEMPTS", cls.max_attempts),
            state_table=state_table,
            **smtp,
            retention_days=_positive_int(env, "MAILGW_RETENTION_DAYS", cls.retention_days),
            idempotency_hours=_positive_int(env, "MAILGW_IDEMPOTENCY_HOURS", cls.idempotency_hours),
            max_age_seconds=_positive_int(env, "MAILGW_MAX_AGE_SECONDS", cls.max_age_seconds),
            graph_mode=graph_mode,  # checked against GRAPH_MODES above
            graph_timeout_seconds=_positive_int(
                env, "MAILGW_GRAPH_TIMEOUT_SECONDS", cls.graph_timeout_seconds
            ),
            graph_token_scope=scope,
            graph_submit_grace_seconds=_positive_int(
                env, "MAILGW_GRAPH_SUBMIT_GRACE_SECONDS", cls.graph_submit_grace_seconds
            ),
            mailbox_concurrency=concurrency,
            **_pacing_settings(env, transport, concurrency),
            smtp_intake=smtp_intake_settings(env),
            **_events_settings(env),
            env=env,
        )


def default_graph_scope(endpoint: str) -> str:
    """Graph's own audience in the endpoint's cloud. Any other host (an egress proxy, a local
    stand-in) still forwards to Graph, which accepts only tokens for itself: the public cloud's
    audience, not the host's URL, which Entra would refuse to issue a token for."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return f"https://{host}/.default" if host in GRAPH_CLOUD_HOSTS else PUBLIC_GRAPH_SCOPE


def parse_sender_list(raw: str) -> tuple[str, ...]:
    """``a@x.com, *@y.com`` → normalised, lower-case entries; anything else is a start-up error."""
    entries = []
    for item in raw.replace(";", ",").split(","):
        entry = item.strip().lower()
        if not entry:
            continue
        local, at, domain = entry.partition("@")
        if not at or not local or not domain or "@" in domain or "*" in domain:
            raise SettingsError(
                "MAILGW_ALLOWED_SENDERS entries must be mailbox addresses or '*@domain' patterns; "
                f"got {item.strip()!r}"
            )
        if "*" in local and local != "*":
            raise SettingsError(
                "MAILGW_ALLOWED_SENDERS: only a whole '*' local part is a pattern; "
                f"got {item.strip()!r}"
            )
        entries.append(entry)
    return tuple(entries)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number; got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive; got {value}")
    return value


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class _SmtpSettings(TypedDict):
    smtp_host: str
    smtp_port: int
    smtp_ca_file: str | None
    smtp_token_scope: str
    smtp_timeout_seconds: int
    smtp_connections: int
    relay_host: str | None
    relay_port: int
    relay_client_cert: ClientCertificate | None


def _smtp_settings(env: Mapping[str, str], transport: str) -> _SmtpSettings:
    """SMTP submission and relay settings; port 465 is refused with the reason."""

    def port(name: str, default: int) -> int:
        value = _positive_int(env, name, default)
        if value == 465:
            raise SettingsError(
                f"{name}=465 (implicit TLS) is not supported by Exchange Online: use 587 with "
                "STARTTLS for client submission, 25 with STARTTLS for a relay connector"
            )
        if value > 65535:
            raise SettingsError(f"{name} must be a TCP port; got {value}")
        return value

    ca_file = env.get("MAILGW_SMTP_CA_FILE", "").strip() or None
    if ca_file and not os.path.isfile(ca_file):
        raise SettingsError(f"MAILGW_SMTP_CA_FILE names no file: {ca_file!r}")
    relay_host = env.get("MAILGW_RELAY_HOST", "").strip() or None
    if transport == "relay" and not relay_host:
        raise SettingsError(
            "MAILGW_RELAY_HOST is required when MAILGW_TRANSPORT=relay: your domain's MX host, "
            "<domain>.mail.protection.outlook.com"
        )
    client_cert = None
    raw_cert = env.get("MAILGW_RELAY_CLIENT_CERT", "").strip()
    if raw_cert and transport == "relay":  # only the relay presents it; elsewhere it is unused
        from mailgw.client_cert import load_client_certificate

        client_cert = load_client_certificate(raw_cert)
    connections = _positive_int(env, "MAILGW_SMTP_CONNECTIONS", Settings.smtp_connections)
    if connections > 3:
        raise SettingsError(
            "MAILGW_SMTP_CONNECTIONS must be 1-3: Exchange Online allows 3 concurrent "
            f"connections per mailbox; got {connections}"
        )
    return {
        "smtp_host": env.get("MAILGW_SMTP_HOST", "").strip() or Settings.smtp_host,
        "smtp_port": port("MAILGW_SMTP_PORT", Settings.smtp_port),
        "smtp_ca_file": ca_file,
        "smtp_token_scope": env.get("MAILGW_SMTP_TOKEN_SCOPE", "").strip()
        or Settings.smtp_token_scope,
        "smtp_timeout_seconds": _positive_int(
            env, "MAILGW_SMTP_TIMEOUT_SECONDS", Settings.smtp_timeout_seconds
        ),
        "smtp_connections": connections,
        "relay_host": relay_host,
        "relay_port": port("MAILGW_RELAY_PORT", Settings.relay_port),
        "relay_client_cert": client_cert,
    }


def smtp_intake_settings(env: Mapping[str, str]) -> SmtpIntakeSettings:
    """``MAILGW_SMTP_INTAKE_*``: read by ``mailgw-smtp`` (the Functions app ignores them)."""
    defaults = SmtpIntakeSettings()

    def value(name: str) -> str | None:
        return env.get(name, "").strip() or None

    def port(name: str, default: int) -> int:
        raw = value(name)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) > 65535:
            raise SettingsError(f"{name} must be a TCP port (0: off); got {raw!r}")
        return int(raw)

    for name in ("MAILGW_SMTP_INTAKE_CERT_FILE", "MAILGW_SMTP_INTAKE_KEY_FILE"):
        path = value(name)
        if path is not None and not os.path.isfile(path):
            raise SettingsError(f"{name} names no file: {path!r}")
    table = value("MAILGW_SMTP_INTAKE_CLIENTS_TABLE") or defaults.clients_table
    if not (3 <= len(table) <= 63 and table.isalnum() and table[0].isalpha()):
        raise SettingsError(
            "MAILGW_SMTP_INTAKE_CLIENTS_TABLE must be a table name: 3-63 letters and digits, "
            f"starting with a letter; got {table!r}"
        )
    return SmtpIntakeSettings(
        host=value("MAILGW_SMTP_INTAKE_HOST") or defaults.host,
        port=port("MAILGW_SMTP_INTAKE_PORT", defaults.port),
        tls_port=port("MAILGW_SMTP_INTAKE_TLS_PORT", defaults.tls_port),
        cert_file=value("MAILGW_SMTP_INTAKE_CERT_FILE"),
        key_file=value("MAILGW_SMTP_INTAKE_KEY_FILE"),
        hostname=value("MAILGW_SMTP_INTAKE_HOSTNAME"),
        clients_table=table,
        max_message_bytes=_positive_int(
            env, "MAILGW_SMTP_INTAKE_MAX_MESSAGE_BYTES", defaults.max_message_bytes
        ),
        per_minute=_positive_int(env, "MAILGW_SMTP_INTAKE_PER_MINUTE", defaults.per_minute),
    )


_IDENTITY_NEEDS = {
    "AZURE_CLIENT_ID": "(the user-assigned identity) ",
    "MAILGW_TENANT_ID": "(the tenant that owns the mailboxes) ",
    "MAILGW_APP_CLIENT_ID": "(the app registration that trusts it) ",
    "AZURE_TENANT_ID": "",
    "AZURE_FEDERATED_TOKEN_FILE": "",
}


def identity_settings(env: Mapping[str, str], *, required: bool) -> IdentitySettings:
    """``MAILGW_CREDENTIAL`` and what its mode needs. ``required``: the transport uses the
    identity, so a typo is a start-up error rather than a surprise on the first send."""

    def value(name: str) -> str | None:
        return env.get(name, "").strip() or None

    raw = (value("MAILGW_CREDENTIAL") or "managed_identity").lower()
    mode = next((known for known in CREDENTIAL_MODES if known == raw), None)
    if mode is None:
        if required:
            raise SettingsError(
                f"MAILGW_CREDENTIAL must be one of {', '.join(CREDENTIAL_MODES)}; got {raw!r}"
            )
        mode = "managed_identity"
    needs: tuple[str, ...] = ()
    if mode == "federated_managed_identity":
        needs = ("AZURE_CLIENT_ID", "MAILGW_TENANT_ID", "MAILGW_APP_CLIENT_ID")
    if mode == "workload_identity":
        needs = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE")
    for name in needs:
        if required and not value(name):
            raise SettingsError(
                f"{name} is required {_IDENTITY_NEEDS[name]}when MAILGW_CREDENTIAL={mode}"
            )
    return IdentitySettings(
        mode=mode,
        client_id=value("AZURE_CLIENT_ID"),
        tenant_id=value("MAILGW_TENANT_ID"),
        app_client_id=value("MAILGW_APP_CLIENT_ID"),
    )


class _ApiAuthSettings(TypedDict):
    api_auth: AuthMode
    api_tenant_id: str | None
    api_audiences: tuple[str, ...]
    api_authority: str
    api_delegated_clients: tuple[str, ...]


def _api_auth_settings(env: Mapping[str, str]) -> _ApiAuthSettings:
    """MAILGW_AUTH=entra needs the tenant and the audience: without them every call would be a
    401, so their absence is a start-up error, not a surprise on the first request."""
    mode = env.get("MAILGW_AUTH", "").strip().lower() or "keys"
    if mode not in API_AUTH_MODES:
        raise SettingsError(f"MAILGW_AUTH must be one of {', '.join(API_AUTH_MODES)}; got {mode!r}")
    tenant = env.get("MAILGW_API_TENANT_ID", "").strip() or None
    audiences = _comma_list(env.get("MAILGW_API_AUDIENCE", ""))
    authority = (env.get("MAILGW_API_AUTHORITY", "").strip() or ENTRA_AUTHORITY).rstrip("/")
    if mode == "entra":
        if not tenant:
            raise SettingsError(
                "MAILGW_API_TENANT_ID is required when MAILGW_AUTH=entra: the directory (tenant) "
                "id whose tokens the API accepts"
            )
        if tenant.lower() in ("common", "organizations", "consumers"):
            raise SettingsError(
                f"MAILGW_API_TENANT_ID must name one tenant, not {tenant!r}: tokens of any other "
                "tenant would be accepted"
            )
        if not audiences:
            raise SettingsError(
                "MAILGW_API_AUDIENCE is required when MAILGW_AUTH=entra: the application (client) "
                "id of the gateway's API app registration"
            )
        if not _acceptable_endpoint(authority):
            raise SettingsError(
                "MAILGW_API_AUTHORITY must be an https:// URL (http only on loopback); "
                f"got {authority!r}"
            )
    return {
        "api_auth": "entra" if mode == "entra" else "keys",
        "api_tenant_id": tenant,
        "api_audiences": audiences,
        "api_authority": authority,
        "api_delegated_clients": _comma_list(env.get("MAILGW_API_DELEGATED_CLIENTS", "")),
    }


class _PacingSettings(TypedDict):
    mailbox_daily_recipients: int
    mailbox_per_minute: int | None
    mailbox_limits: Mapping[str, MailboxLimits]
    tenant_daily_recipients: int | None


def _pacing_settings(env: Mapping[str, str], transport: str, concurrency: int) -> _PacingSettings:
    """The budgets: per-minute pacing is on by default only for SMTP submission (Exchange's 30
    a minute); ``off`` turns it off, a number sets it for any transport."""
    daily = _positive_int(env, "MAILGW_MAILBOX_DAILY_RECIPIENTS", DEFAULT_DAILY_RECIPIENTS)
    raw = env.get("MAILGW_MAILBOX_PER_MINUTE", "").strip().lower()
    per_minute: int | None = SMTP_PER_MINUTE if transport == "smtp" else None
    if raw == "off":
        per_minute = None
    elif raw:
        per_minute = _positive_int(env, "MAILGW_MAILBOX_PER_MINUTE", 1)
    tenant = None
    if env.get("MAILGW_TENANT_DAILY_RECIPIENTS", "").strip().lower() not in ("", "off"):
        tenant = _positive_int(env, "MAILGW_TENANT_DAILY_RECIPIENTS", 1)
    default = MailboxLimits(daily, per_minute, concurrency)
    try:
        overrides = parse_overrides(env.get("MAILGW_MAILBOX_LIMITS", ""), default)
    except LimitsError as error:
        raise SettingsError(str(error)) from None
    return {
        "mailbox_daily_recipients": daily,
        "mailbox_per_minute": per_minute,
        "mailbox_limits": overrides,
        "tenant_daily_recipients": tenant,
    }


class _EventsSettings(TypedDict):
    events_queue: str | None
    eventgrid_endpoint: str | None
    events_source: str
    events_timeout_seconds: int


def _events_settings(env: Mapping[str, str]) -> _EventsSettings:
    """The outcome events' sinks and ``source``. The source defaults to the app's own URL, which
    App Service gives every instance of one app alike as ``WEBSITE_HOSTNAME``."""
    queue = env.get("MAILGW_EVENTS_QUEUE", "").strip() or None
    if queue is not None and not _valid_queue_name(queue):
        raise SettingsError(
            "MAILGW_EVENTS_QUEUE must be a valid storage queue name (3-63 lowercase letters, "
            f"digits and single hyphens); got {queue!r}"
        )
    endpoint = env.get("MAILGW_EVENTGRID_ENDPOINT", "").strip() or None
    if endpoint is not None and not _acceptable_endpoint(endpoint):
        raise SettingsError(
            "MAILGW_EVENTGRID_ENDPOINT must be the topic's https:// endpoint "
            "(https://<topic>.<region>-1.eventgrid.azure.net/api/events; http only on loopback); "
            f"got {endpoint!r}"
        )
    source = env.get("MAILGW_EVENTS_SOURCE", "").strip()
    host = env.get("WEBSITE_HOSTNAME", "").strip()
    if not source and host:
        local = urlsplit(f"//{host}").hostname in LOOPBACK_HOSTS
        source = f"{'http' if local else 'https'}://{host}"
    return {
        "events_queue": queue,
        "eventgrid_endpoint": endpoint,
        "events_source": source or DEFAULT_EVENTS_SOURCE,
        "events_timeout_seconds": _positive_int(
            env, "MAILGW_EVENTS_TIMEOUT_SECONDS", Settings.events_timeout_seconds
        ),
    }


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _acceptable_endpoint(url: str) -> bool:
    """https anywhere; plain http only to this machine (tests and stand-ins)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return False
    if not parts.hostname or parts.username or parts.password:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


def _valid_queue_name(name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return (
        3 <= len(name) <= 63 - len("-poison")
        and set(name) <= allowed
        and name[0] != "-"
        and name[-1] != "-"
        and "--" not in name
    )


@cache
def current_settings() -> Settings:
    """Settings of this process, read once (functions call this, tests build their own)."""
    return Settings.from_env()
