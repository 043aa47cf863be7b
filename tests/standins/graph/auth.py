"""Who may call, and do what: the bearer token on every Graph call (401
``InvalidAuthenticationToken`` without a valid one), and the application permission each
operation needs in the token's ``roles`` (403 ``ErrorAccessDenied`` without it). The token
verifier is pluggable; by default it accepts tokens that :mod:`standins.identity` issued for one
of the stand-in's audiences.

Permissions, as Graph's API reference lists them for application access: sendMail and a draft's
``/send`` need ``Mail.Send``; creating, changing and deleting drafts, their attachments and
upload sessions need ``Mail.ReadWrite``; reading or listing messages, or attachments, takes
``Mail.Read`` or ``Mail.ReadWrite``. The upload URL is pre-authenticated (no token, no
permission). Exchange RBAC for Applications (permissions granted per mailbox scope, outside the
token) is not modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from standins.graph.errors import GraphError
from standins.graph.records import Recorded
from standins.identity import (
    DEFAULT_SIGNING_KEY,
    GRAPH_RESOURCE,
    InvalidToken,
    TokenClaims,
    verify_token,
)

__all__ = [
    "GRAPH_AUDIENCES",
    "REQUIRED_ROLES",
    "TokenVerifier",
    "accept_any_token",
    "authenticate",
    "authorize",
    "standin_token_verifier",
]

#: Graph's audiences: its resource URI and its application id
GRAPH_AUDIENCES = (GRAPH_RESOURCE, "00000003-0000-0000-c000-000000000000")

_READ = frozenset({"Mail.Read", "Mail.ReadWrite"})
_WRITE = frozenset({"Mail.ReadWrite"})
_SEND = frozenset({"Mail.Send"})
#: operation -> the application permissions any one of which allows it
REQUIRED_ROLES: dict[str, frozenset[str]] = {
    "sendMail": _SEND,
    "send": _SEND,
    "createMessage": _WRITE,
    "getMessage": _READ,
    "listMessages": _READ,
    "updateMessage": _WRITE,
    "deleteMessage": _WRITE,
    "listAttachments": _READ,
    "addAttachment": _WRITE,
    "createUploadSession": _WRITE,
}

TokenVerifier = Callable[[str], TokenClaims]
"""Return the token's claims or raise :class:`standins.identity.InvalidToken` (-> 401)."""

_WWW_AUTHENTICATE = {
    "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline'
    '.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
}


def standin_token_verifier(
    audiences: Iterable[str] = GRAPH_AUDIENCES, key: bytes = DEFAULT_SIGNING_KEY
) -> TokenVerifier:
    """Accept tokens issued by :class:`standins.identity.IdentityStandIn` for ``audiences``."""
    allowed = {a.rstrip("/") for a in audiences}

    def verify(token: str) -> TokenClaims:
        claims = verify_token(token, key=key)
        if claims.resource.rstrip("/") not in allowed:
            raise InvalidToken(f"Invalid audience '{claims.resource}'.")
        return claims

    return verify


def accept_any_token(token: str) -> TokenClaims:
    """A verifier for using the Graph stand-in without the identity stand-in."""
    every_role = tuple(sorted(set().union(*REQUIRED_ROLES.values())))
    return TokenClaims(
        kind="any",
        client_id="",
        resource=GRAPH_RESOURCE,
        tenant="",
        expires_on=0,
        serial=0,
        roles=every_role,
    )


def authenticate(rec: Recorded, verifier: TokenVerifier) -> TokenClaims:
    """The claims of the request's bearer token; 401 as Graph answers when there is none."""
    scheme, _, token = (rec.header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GraphError(
            401, "InvalidAuthenticationToken", "Access token is empty.", _WWW_AUTHENTICATE
        )
    try:
        return verifier(token.strip())
    except InvalidToken as exc:
        raise GraphError(401, "InvalidAuthenticationToken", str(exc), _WWW_AUTHENTICATE) from exc


def authorize(claims: TokenClaims, operation: str, required: Mapping[str, Collection[str]]) -> None:
    """403 ``ErrorAccessDenied``, as Graph answers, unless the token holds one of the
    permissions ``required`` names for ``operation`` (an operation it does not name is free)."""
    allowed = required.get(operation)
    if allowed is not None and not set(allowed) & set(claims.roles):
        raise GraphError.canned("ErrorAccessDenied")
