"""Stand-in for Azure App Service's managed identity endpoint and a minimal Entra ID token endpoint.

Managed identity (what ``azure.identity[.aio].ManagedIdentityCredential`` uses when
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set; see ``azure/identity/_credentials/
app_service.py``)::

    GET /msi/token?api-version=2019-08-01&resource=<resource>[&client_id=<id>]
    X-IDENTITY-HEADER: <secret>
    -> 200 {"access_token", "expires_on" (epoch seconds, string), "resource",
            "token_type": "Bearer", "client_id"}

Errors are App Service's shape ``{"statusCode": n, "message": "..."}``: a missing or wrong header
is 401; an identity the app does not have is 400 "Unable to load the proper Managed Identity.".
azure-identity turns a body without ``access_token`` into ``ClientAuthenticationError``; its
pipeline retries 408/429/500/502/503/504 (and any status with ``Retry-After``) up to 3 times, the
first retry immediately, so ``fail_next(500)`` is invisible to a caller unless the credential was
built with ``retry_total=0``.

Entra ID token endpoint for the federated flow (user-assigned managed identity as a federated
credential of an app registration; ``azure.identity.aio.ClientAssertionCredential``)::

    POST /{tenant}/oauth2/v2.0/token   (application/x-www-form-urlencoded)
    grant_type=client_credentials&client_id=<app>&scope=<resource>/.default
    &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
    &client_assertion=<a managed identity token this stand-in issued for api://AzureADTokenExchange>
    -> 200 {"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}

azure-identity only accepts an ``https://`` authority (``normalize_authority`` raises ValueError
for ``http://``; ClientAssertionCredential uses azure-identity's own AadClient, not MSAL, so there
is no instance discovery to disable). Start the stand-in with ``tls=True``: it then also listens
with TLS on a second port, using a throw-away CA written to :attr:`IdentityStandIn.ca_file`, and
the credential is built with ``authority=identity.authority, connection_verify=identity.ca_file``.

Tokens are opaque to clients but verifiable by :mod:`standins.graph` (shared HMAC key)::

    <kind>.<client_id>.<b64url(resource)>.<b64url(tenant)>.<expires_on>.<serial>.<b64url(roles)>.<hmac>

``kind`` is ``mi`` (managed identity) or ``app`` (client credentials). ``roles`` are the application
permissions the identity holds (Entra's ``roles`` claim, space-separated here): every token carries
:attr:`IdentityStandIn.app_roles`, by default what the gateway is granted in draft mode
(``Mail.Send`` and ``Mail.ReadWrite``); the Graph stand-in refuses an operation whose permission
is missing. (Entra puts only the roles for the token's resource in it; here one set serves every
resource, since a stand-in's resource is its own URL.)
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import itertools
import secrets
import tempfile
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from standins import LOOPBACK, StandInServer, _bind, json_response
from standins.faults import ScriptedFault

__all__ = [
    "DEFAULT_SIGNING_KEY",
    "GATEWAY_APP_ROLES",
    "GRAPH_RESOURCE",
    "SYSTEM_ASSIGNED_CLIENT_ID",
    "TOKEN_EXCHANGE_RESOURCE",
    "IdentityRequest",
    "IdentityStandIn",
    "InvalidToken",
    "TokenClaims",
    "TokenIssue",
    "issue_token",
    "verify_token",
]

#: shared by default so stand-ins in separate processes verify each other's tokens
DEFAULT_SIGNING_KEY = b"mailgw-standins-token-key-v1"
GRAPH_RESOURCE = "https://graph.microsoft.com"
TOKEN_EXCHANGE_RESOURCE = "api://AzureADTokenExchange"
#: the application permissions the gateway's identity is granted (draft mode needs both)
GATEWAY_APP_ROLES: tuple[str, ...] = ("Mail.ReadWrite", "Mail.Send")
#: client id reported for the system-assigned identity
SYSTEM_ASSIGNED_CLIENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "mailgw-standin-system-identity"))
API_VERSION = "2019-08-01"
#: RFC 7523 client assertion type (what azure-identity and MSAL send)
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

Flow = Literal["managed_identity", "client_credentials"]


class InvalidToken(ValueError):
    """A bearer token the stand-ins did not issue, or that expired; ``str()`` is the reason."""


@dataclass(frozen=True)
class TokenClaims:
    kind: str  # "mi" | "app"
    client_id: str
    resource: str
    tenant: str
    expires_on: int
    serial: int
    #: the application permissions (Entra's ``roles`` claim)
    roles: tuple[str, ...] = ()


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str, key: bytes) -> str:
    return _b64u(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def issue_token(
    kind: str,
    client_id: str,
    resource: str,
    expires_on: int,
    serial: int,
    *,
    tenant: str = "",
    key: bytes = DEFAULT_SIGNING_KEY,
    roles: Collection[str] = GATEWAY_APP_ROLES,
) -> str:
    if "." in kind or "." in client_id:
        raise ValueError("kind and client_id must not contain '.'")
    payload = ".".join(
        [
            kind,
            client_id,
            _b64u(resource.encode()),
            _b64u(tenant.encode()),
            str(expires_on),
            str(serial),
            _b64u(" ".join(roles).encode()),
        ]
    )
    return f"{payload}.{_sign(payload, key)}"


def verify_token(
    token: str, *, key: bytes = DEFAULT_SIGNING_KEY, now: float | None = None
) -> TokenClaims:
    """Return the claims of a token issued with ``key``; raise :class:`InvalidToken` otherwise."""
    parts = token.split(".")
    if len(parts) != 8:
        raise InvalidToken("IDX14100: JWT is not well formed.")
    payload, signature = ".".join(parts[:7]), parts[7]
    if not hmac.compare_digest(_sign(payload, key), signature):
        raise InvalidToken("Signature validation failed.")
    kind, client_id, resource, tenant, expires_on, serial, roles = parts[:7]
    claims = TokenClaims(
        kind=kind,
        client_id=client_id,
        resource=_unb64u(resource).decode(),
        tenant=_unb64u(tenant).decode(),
        expires_on=int(expires_on),
        serial=int(serial),
        roles=tuple(_unb64u(roles).decode().split()),
    )
    if claims.expires_on <= (time.time() if now is None else now):
        raise InvalidToken("Lifetime validation failed, the token is expired.")
    return claims


@dataclass(frozen=True)
class TokenIssue:
    """One token handed out. ``time`` is ``time.monotonic()`` at issue."""

    flow: Flow
    resource: str
    client_id: str
    time: float
    wall_time: float
    expires_on: int
    token: str
    tenant: str = ""
    #: for client_credentials: the managed identity whose token was the client assertion
    assertion_client_id: str | None = None
    roles: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IdentityRequest:
    """Every request to the token endpoints, answered or not."""

    flow: Flow
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str] | None
    time: float
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class _Fault(ScriptedFault):
    status: int
    message: str
    retry_after: str | None
    flow: Flow | None


@dataclass
class _TlsMaterial:
    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path


def _make_tls_material() -> _TlsMaterial:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost (EC P-256, 1 day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from standins.certs import common_name, issue, private_key_pem

    backdate, lifetime = dt.timedelta(minutes=5), dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = common_name("mailgw stand-in CA")
    ca_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca_cert = issue(
        ca_key,
        ca_name,
        backdate=backdate,
        lifetime=lifetime,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (ca_usage, True),
            (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
        ],
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
    cert = issue(
        key,
        common_name(LOOPBACK),
        issuer=(ca_name, ca_key),
        backdate=backdate,
        lifetime=lifetime,
        extensions=[
            (x509.SubjectAlternativeName(names), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="standin-tls-"))
    material = _TlsMaterial(
        directory=directory,
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
    )
    material.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    material.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    material.key_file.write_bytes(private_key_pem(key))
    return material


class IdentityStandIn(StandInServer[_Fault]):
    """App Service managed identity endpoint + Entra ID client-credentials token endpoint.

    Knobs (plain attributes, changeable while running): ``lifetime_seconds`` (default 86,400, as
    real managed identity tokens last about a day; azure-identity refreshes a token at half its
    life when that life is two hours or more, and 5 minutes before expiry otherwise),
    ``expected_client_id`` (the only user-assigned identity the app has; another ``client_id`` is
    400), ``system_assigned`` (whether a request without ``client_id`` gets a token),
    ``federations`` (app client id -> managed identity client ids trusted as its federated
    credential; ``None`` trusts any identity), ``tenant_id`` (``None`` accepts any tenant),
    ``app_roles`` (the application permissions every token carries).
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        identity_header: str | None = None,
        lifetime_seconds: int = 86_400,
        expected_client_id: str | None = None,
        system_assigned: bool = True,
        signing_key: bytes = DEFAULT_SIGNING_KEY,
        tls: bool = False,
        tls_port: int = 0,
        tenant_id: str | None = None,
        federations: Mapping[str, Collection[str]] | None = None,
        port_fallback: bool = False,
        app_roles: Collection[str] = GATEWAY_APP_ROLES,
    ) -> None:
        super().__init__(host=host, port=port, port_fallback=port_fallback)
        self.identity_header = identity_header or secrets.token_hex(16)
        self.lifetime_seconds = lifetime_seconds
        self.expected_client_id = expected_client_id
        self.system_assigned = system_assigned
        self.signing_key = signing_key
        self.tenant_id = tenant_id
        self.app_roles: tuple[str, ...] = tuple(app_roles)
        self.federations = (
            None if federations is None else {k: set(v) for k, v in federations.items()}
        )
        self.issued: list[TokenIssue] = []
        self.requests: list[IdentityRequest] = []
        self._serial = itertools.count(1)
        self._tls = tls
        self._requested_tls_port = tls_port
        self._tls_port: int | None = None
        self._tls_material: _TlsMaterial | None = None

    # --- addresses ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT``."""
        return f"{self.url}/msi/token"

    def env(self) -> dict[str, str]:
        """Environment for ManagedIdentityCredential: ``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``.

        With ``monkeypatch``: ``for k, v in identity.env().items(): monkeypatch.setenv(k, v)``.
        Remove ``IDENTITY_SERVER_THUMBPRINT`` (Service Fabric) and ``MSI_ENDPOINT`` if your
        environment has them, or azure-identity picks another flavour.
        """
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.identity_header}

    @property
    def authority(self) -> str:
        """``https://127.0.0.1:TLS_PORT`` for ClientAssertionCredential(authority=...)."""
        if self._tls_port is None:
            raise RuntimeError("start IdentityStandIn(tls=True) to serve the Entra endpoint")
        return f"https://{LOOPBACK}:{self._tls_port}"

    @property
    def ca_file(self) -> str:
        """PEM of the CA that signed the TLS certificate (``connection_verify=``)."""
        if self._tls_material is None:
            raise RuntimeError("start IdentityStandIn(tls=True) to get a CA file")
        return str(self._tls_material.ca_file)

    def token_url(self, tenant: str) -> str:
        """The Entra token endpoint over TLS (what azure-identity builds from the authority)."""
        return f"{self.authority}/{tenant}/oauth2/v2.0/token"

    def ready_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"url": self.url, **self.env()}
        if self._tls_port is not None:
            info.update(authority=self.authority, caFile=self.ca_file)
        return info

    # --- knobs --------------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        n: int = 1,
        *,
        message: str | None = None,
        retry_after: float | None = None,
        flow: Flow | None = None,
    ) -> _Fault:
        """Answer the next ``n`` token requests (of ``flow``, or any) with ``status``."""
        return self.fault_queue.add(
            _Fault(
                status=status,
                message=message or f"stand-in injected failure ({status})",
                remaining=n,
                retry_after=None if retry_after is None else f"{retry_after:g}",
                flow=flow,
            )
        )

    # --- admin (standins.admin): reset forgets tokens issued, which stay valid ------------------
    def recordings(self) -> Mapping[str, list[Any]]:
        return {"issued": self.issued, "requests": self.requests}

    def configure_json(self, config: Mapping[str, Any]) -> None:
        """``appRoles``: the application permissions the tokens issued from now on carry."""
        if set(config) - {"appRoles"}:
            raise ValueError(f"unknown settings {sorted(set(config) - {'appRoles'})}")
        if "appRoles" in config:
            self.app_roles = tuple(str(role) for role in config["appRoles"])

    def add_fault_json(self, item: Mapping[str, Any]) -> object:
        """``{"status", "n", "message", "retryAfter", "flow"}``."""
        return self.fail_next(
            int(item["status"]),
            int(item.get("n", 1)),
            message=item.get("message"),
            retry_after=item.get("retryAfter"),
            flow=item.get("flow"),
        )

    def tokens_for(self, resource: str) -> list[TokenIssue]:
        return [t for t in self.issued if t.resource.rstrip("/") == resource.rstrip("/")]

    def verify(self, token: str) -> TokenClaims:
        return verify_token(token, key=self.signing_key)

    def _take_fault(self, flow: Flow) -> _Fault | None:
        return self.fault_queue.take(lambda fault: fault.flow in (None, flow))

    def _issue(
        self,
        flow: Flow,
        kind: str,
        client_id: str,
        resource: str,
        tenant: str = "",
        assertion_client_id: str | None = None,
    ) -> TokenIssue:
        now = time.time()
        expires_on = int(now) + self.lifetime_seconds
        token = issue_token(
            kind,
            client_id,
            resource,
            expires_on,
            next(self._serial),
            tenant=tenant,
            key=self.signing_key,
            roles=self.app_roles,
        )
        issue = TokenIssue(
            flow=flow,
            resource=resource,
            client_id=client_id,
            time=time.monotonic(),
            wall_time=now,
            expires_on=expires_on,
            token=token,
            tenant=tenant,
            assertion_client_id=assertion_client_id,
            roles=self.app_roles,
        )
        self.issued.append(issue)
        return issue

    # --- server -------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get("/msi/token", self._managed_identity)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._entra_token)
        return app

    async def _start_extra_sites(self, runner: web.AppRunner) -> None:
        if not self._tls:
            return
        import ssl

        self._tls_material = _make_tls_material()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._tls_material.cert_file, self._tls_material.key_file)
        sock = _bind(LOOPBACK, self._requested_tls_port)
        site = web.SockSite(runner, sock, ssl_context=context)
        await site.start()
        self._tls_port = int(sock.getsockname()[1])

    async def _on_close(self) -> None:
        material, self._tls_material = self._tls_material, None
        self._tls_port = None
        if material is not None:
            for path in (material.ca_file, material.cert_file, material.key_file):
                path.unlink(missing_ok=True)
            material.directory.rmdir()

    def _record(
        self, request: web.Request, flow: Flow, form: dict[str, str] | None
    ) -> IdentityRequest:
        entry = IdentityRequest(
            flow=flow,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            form=form,
            time=time.monotonic(),
        )
        self.requests.append(entry)
        return entry

    @staticmethod
    def _app_service_error(entry: IdentityRequest, status: int, message: str) -> web.Response:
        entry.status = status
        return json_response(
            {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
            status=status,
        )

    async def _managed_identity(self, request: web.Request) -> web.Response:
        entry = self._record(request, "managed_identity", None)
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return self._app_service_error(entry, 401, "Unauthorized: missing or invalid header")
        fault = self._take_fault("managed_identity")
        if fault is not None:
            response = self._app_service_error(entry, fault.status, fault.message)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        if request.query.get("api-version") != API_VERSION:
            return self._app_service_error(entry, 400, "api-version is missing or unsupported")
        resource = request.query.get("resource", "")
        if not resource:
            return self._app_service_error(entry, 400, "Resource is missing")
        requested = request.query.get("client_id")
        if requested is None and any(k in request.query for k in ("object_id", "mi_res_id")):
            requested = self.expected_client_id  # identified by another id: treat as the UAMI
        if requested is None:
            if not self.system_assigned:
                return self._app_service_error(
                    entry, 400, "Unable to load the proper Managed Identity."
                )
            client_id = SYSTEM_ASSIGNED_CLIENT_ID
        else:
            if self.expected_client_id is not None and requested != self.expected_client_id:
                return self._app_service_error(
                    entry, 400, "Unable to load the proper Managed Identity."
                )
            client_id = requested
        issue = self._issue("managed_identity", "mi", client_id.replace(".", "_"), resource)
        entry.status = 200
        return json_response(
            {
                "access_token": issue.token,
                "expires_on": str(issue.expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            }
        )

    @staticmethod
    def _entra_error(
        entry: IdentityRequest, status: int, error: str, code: int, description: str
    ) -> web.Response:
        entry.status = status
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id = str(uuid.uuid4())
        return json_response(
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id}",
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace_id,
                "correlation_id": str(uuid.uuid4()),
            },
            status=status,
        )

    async def _entra_token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        raw_form = await request.post()
        form = {k: str(v) for k, v in raw_form.items()}
        entry = self._record(request, "client_credentials", form)
        fault = self._take_fault("client_credentials")
        if fault is not None:
            response = self._entra_error(
                entry, fault.status, "temporarily_unavailable", 50000, fault.message
            )
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        if self.tenant_id is not None and tenant != self.tenant_id:
            return self._entra_error(
                entry, 400, "invalid_request", 90002, f"Tenant '{tenant}' not found."
            )
        if form.get("grant_type") != "client_credentials":
            return self._entra_error(
                entry,
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        app_client_id = form.get("client_id", "")
        if not app_client_id:
            return self._entra_error(
                entry,
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        scope = form.get("scope", "")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return self._entra_error(
                entry,
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
            return self._entra_error(
                entry,
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        try:
            assertion = verify_token(form["client_assertion"], key=self.signing_key)
        except InvalidToken as exc:
            return self._entra_error(
                entry, 401, "invalid_client", 700211, f"Client assertion is not valid: {exc}"
            )
        if assertion.kind != "mi" or assertion.resource.rstrip("/") != TOKEN_EXCHANGE_RESOURCE:
            return self._entra_error(
                entry,
                400,
                "invalid_request",
                700212,
                f"No matching federated identity record found for presented assertion audience "
                f"'{assertion.resource}'.",
            )
        trusted = None if self.federations is None else self.federations.get(app_client_id, set())
        if trusted is not None and assertion.client_id not in trusted:
            return self._entra_error(
                entry,
                400,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Subject: '{assertion.client_id}'.",
            )
        resource = scopes[0][: -len("/.default")]
        issue = self._issue(
            "client_credentials",
            "app",
            app_client_id.replace(".", "_"),
            resource,
            tenant=tenant,
            assertion_client_id=assertion.client_id,
        )
        entry.status = 200
        lifetime = max(0, issue.expires_on - int(issue.wall_time))
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": issue.token,
            }
        )


def main(argv: list[str] | None = None) -> None:
    from standins.cli import signing_key, stand_in_parser

    parser = stand_in_parser(
        "identity", "App Service managed identity + Entra token endpoint stand-in (loopback)."
    )
    parser.add_argument("--identity-header", default=None, help="IDENTITY_HEADER (random)")
    parser.add_argument("--client-id", default=None, help="the only user-assigned identity")
    parser.add_argument("--no-system-assigned", action="store_true")
    parser.add_argument("--lifetime", type=int, default=86_400, help="token lifetime, seconds")
    parser.add_argument("--tls", action="store_true", help="also serve the Entra endpoint on TLS")
    parser.add_argument("--tls-port", type=int, default=0)
    parser.add_argument("--tenant-id", default=None)
    parser.add_argument(
        "--app-role",
        action="append",
        default=None,
        help=f"application permission in every token (repeatable; default {GATEWAY_APP_ROLES})",
    )
    args = parser.parse_args(argv)
    IdentityStandIn(
        port=args.port,
        port_fallback=args.port_fallback,
        identity_header=args.identity_header,
        lifetime_seconds=args.lifetime,
        expected_client_id=args.client_id,
        system_assigned=not args.no_system_assigned,
        signing_key=signing_key(args),
        tls=args.tls,
        tls_port=args.tls_port,
        tenant_id=args.tenant_id,
        app_roles=GATEWAY_APP_ROLES if args.app_role is None else args.app_role,
    ).run_cli()


#: Variables that make azure-identity pick another managed-identity flavour than App Service's.
OTHER_MI_VARIABLES = (
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
)


def use_identity_standin(server: IdentityStandIn, monkeypatch: Any) -> None:
    """Point azure-identity's ManagedIdentityCredential at ``server`` and nothing else
    (``monkeypatch``: pytest's fixture)."""
    for name in OTHER_MI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


if __name__ == "__main__":
    main()
