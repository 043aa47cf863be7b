"""Stand-in for Entra ID as a resource API sees it: OpenID metadata, signing keys, v2 access tokens.

What ``mailgw.auth.EntraTokens`` reads, over real HTTP on 127.0.0.1::

    GET /{tenant}/v2.0/.well-known/openid-configuration
        -> {"issuer": "<base>/{tenant-id}/v2.0", "jwks_uri": "<base>/{tenant}/discovery/v2.0/keys"}
    GET /{tenant}/discovery/v2.0/keys -> {"keys": [RSA JWKs with kid, use "sig"]}

Entra ID's own v2 issuer is ``https://login.microsoftonline.com/{tenant-id}/v2.0``; here the base is
the stand-in's address. :meth:`EntraStandIn.token` signs access tokens (RS256, the claims Entra puts
in an app-only v2 token: aud, iss, tid, oid, azp, roles, iat, nbf, exp, ver) with the current key;
:meth:`rotate` publishes a new key, :attr:`down` answers 503, and :attr:`fetches` counts requests,
so tests can see when the gateway goes back to the provider.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
API_APP_ID = "5d9c1f0e-3b7a-4c2e-9a61-0f3e8b2d4c17"
CALLER_APP_ID = "0b1e6a3c-8d2f-4e5a-b7c9-1a2b3c4d5e6f"


class EntraStandIn:
    def __init__(self, tenant_id: str = TENANT_ID) -> None:
        self.tenant_id = tenant_id
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.current_kid = ""
        self.fetches: Counter[str] = Counter()
        self.down = False
        self.rotate()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def authority(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return f"{self.authority}/{self.tenant_id}/v2.0"

    def gateway_env(self, audience: str = API_APP_ID) -> dict[str, str]:
        return {
            "MAILGW_AUTH": "entra",
            "MAILGW_API_TENANT_ID": self.tenant_id,
            "MAILGW_API_AUDIENCE": audience,
            "MAILGW_API_AUTHORITY": self.authority,
        }

    def rotate(self, *, keep_old: bool = True) -> str:
        """Publish a new signing key (Entra publishes the next key before it signs with it)."""
        if not keep_old:
            self.keys.clear()
        self.current_kid = uuid.uuid4().hex
        self.keys[self.current_kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.current_kid

    def token(
        self,
        roles: tuple[str, ...] | str = ("Messages.Send",),
        *,
        audience: str = API_APP_ID,
        issuer: str | None = None,
        lifetime: float = 3600,
        not_before: float | None = None,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        now = time.time()
        body = {
            "aud": audience,
            "iss": issuer or self.issuer,
            "tid": self.tenant_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, CALLER_APP_ID)),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, CALLER_APP_ID)),
            "azp": CALLER_APP_ID,
            "azpacr": "1",
            "idtyp": "app",
            "ver": "2.0",
            "iat": int(now),
            "nbf": int(now if not_before is None else not_before),
            "exp": int(now + lifetime),
            "roles": roles if isinstance(roles, str) else list(roles),  # a str: a malformed claim
            **claims,
        }
        body = {name: value for name, value in body.items() if value is not None}  # None: omit it
        kid = kid or self.current_kid
        signer = key or self.keys.get(kid) or self.keys[self.current_kid]
        return jwt.encode(body, signer, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    def _jwks(self) -> dict[str, Any]:
        keys = []
        for kid, private in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "kty": "RSA"})
        return {"keys": keys}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                tenant, rest = parts[0], "/".join(parts[1:])
                standin.fetches[rest] += 1
                if standin.down:
                    return self._send(503, {"error": "temporarily_unavailable"})
                if tenant != standin.tenant_id:
                    return self._send(400, {"error": "invalid_tenant"})
                if rest == "v2.0/.well-known/openid-configuration":
                    return self._send(
                        200,
                        {
                            "issuer": standin.issuer,
                            "jwks_uri": f"{standin.authority}/{tenant}/discovery/v2.0/keys",
                            "token_endpoint": f"{standin.authority}/{tenant}/oauth2/v2.0/token",
                            "id_token_signing_alg_values_supported": ["RS256"],
                        },
                    )
                if rest == "discovery/v2.0/keys":
                    return self._send(200, standin._jwks())
                self._send(404, {"error": "not_found"})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> EntraStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def entra_standin() -> Iterator[EntraStandIn]:
    standin = EntraStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()
