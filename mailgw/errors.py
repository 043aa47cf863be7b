"""Failed delivery outcomes: transient (retry later) or permanent (poison, with a hint).

Transports raise :class:`DeliveryError`; anything else escaping a transport is a crash, which the
Functions host retries and finally moves to the poison queue after ``maxDequeueCount``.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from mailgw.models import ErrorInfo


@dataclass
class DeliveryError(Exception):
    code: str
    message: str
    transient: bool
    hint: str = ""
    retry_after: float | None = None
    throttled: bool = False
    ambiguous: bool = False
    #: transport progress to resume from on the next attempt (e.g. the Graph draft's id)
    checkpoint: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, hint=self.hint)


def permanent(code: str, message: str, hint: str = "") -> DeliveryError:
    return DeliveryError(code, message, transient=False, hint=hint)


def transient(
    code: str, message: str, hint: str = "", retry_after: float | None = None
) -> DeliveryError:
    return DeliveryError(code, message, transient=True, hint=hint, retry_after=retry_after)


# --- Microsoft Graph ------------------------------------------------------------------------------

_RBAC_HINT = (
    "grant the identity the Mail.Send application permission and make sure the mailbox is inside "
    "its Exchange RBAC for Applications scope (check with Test-ServicePrincipalAuthorization); "
    "see docs/graph-permissions.md"
)
_SIZE_HINT = (
    "shrink the message (Exchange's MaxSendSize is 35 MB by default) or, for attachments of "
    "3-150 MB, use MAILGW_GRAPH_MODE=draft, which uploads them in chunks"
)

#: Graph error code -> (transient, operator hint). Codes are matched case-insensitively.
GRAPH_CODES: dict[str, tuple[bool, str]] = {
    "erroraccessdenied": (False, _RBAC_HINT),
    "accessdenied": (False, _RBAC_HINT),
    "authorization_requestdenied": (False, _RBAC_HINT),
    "errorsendasdenied": (
        False,
        "grant Send As on the 'from' mailbox to the identity (Add-RecipientPermission "
        "-AccessRights SendAs), or send from a mailbox it may send as",
    ),
    "mailboxnotenabledforrestapi": (
        False,
        "the 'from' mailbox is unlicensed, inactive or on-premises: license it for Exchange Online "
        "(shared mailboxes need no licence under 50 GB)",
    ),
    "errorinvaliduser": (
        False,
        "the 'from' mailbox does not exist in this tenant: check the address",
    ),
    "resourcenotfound": (
        False,
        "the 'from' mailbox does not exist in this tenant: check the address",
    ),
    "request_resourcenotfound": (
        False,
        "the 'from' mailbox does not exist in this tenant: check the address",
    ),
    "errorinvalidrecipients": (False, "fix the recipient addresses and send the request again"),
    "errormessagesizeexceeded": (False, _SIZE_HINT),
    "requestentitytoolarge": (False, _SIZE_HINT),
    "errorquotaexceeded": (
        False,
        "the 'from' mailbox is full: free space or raise its quota, then replay",
    ),
    "invalidauthenticationtoken": (
        True,
        "the token was refused: check MAILGW_CREDENTIAL and that the identity's token is for the "
        "Graph resource of MAILGW_GRAPH_ENDPOINT",
    ),
}

_STATUS_HINTS = {
    401: "the token was refused: check the identity (MAILGW_CREDENTIAL, AZURE_CLIENT_ID)",
    403: _RBAC_HINT,
    404: "the 'from' mailbox was not found: check the address and its Exchange Online licence",
    413: _SIZE_HINT,
    429: "Graph is throttling this mailbox (4 concurrent requests, 10,000 per 10 minutes); "
    "the gateway waits as told by Retry-After",
}


def token_unavailable(exc: Exception) -> DeliveryError:
    """The identity endpoint refused or failed: transient (it may recover), with what to check."""
    return DeliveryError(
        "TokenUnavailable",
        f"no token: {getattr(exc, 'message', None) or exc}",
        transient=True,
        hint="the identity endpoint refused or failed: check MAILGW_CREDENTIAL, AZURE_CLIENT_ID "
        "and that the Function App has that identity",
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def classify_graph(
    status: int | None,
    code: str | None,
    message: str,
    *,
    retry_after: float | None = None,
    may_have_sent: bool = False,
) -> DeliveryError:
    """One Graph error response → transient or permanent, with a hint an operator can act on.

    ``may_have_sent`` says whether the failed request could have sent the message (sendMail, or
    the draft's send): a 5xx to such a request is *ambiguous*, the message may be out.
    """
    code_key = (code or "").lower()
    label = code or (f"HTTP{status}" if status else "GraphError")
    if status == 429:
        return DeliveryError(
            label,
            message,
            transient=True,
            hint=_STATUS_HINTS[429],
            retry_after=retry_after,
            throttled=True,
        )
    if code_key in GRAPH_CODES:
        is_transient, hint = GRAPH_CODES[code_key]
        return DeliveryError(
            label,
            message,
            transient=is_transient,
            hint=hint,
            retry_after=retry_after if is_transient else None,
        )
    if status is not None and status >= 500:
        ambiguous = may_have_sent and status != 503  # 503: refused before any work was done
        return DeliveryError(
            label,
            message,
            transient=True,
            retry_after=retry_after,
            ambiguous=ambiguous,
            hint="Graph had a server-side failure; the gateway retries with backoff"
            + (" (the message may already have been sent)" if ambiguous else ""),
        )
    if status == 401:
        return DeliveryError(label, message, transient=True, hint=_STATUS_HINTS[401])
    return DeliveryError(
        label,
        message,
        transient=False,
        hint=_STATUS_HINTS.get(status or 0, "Graph rejected the request; see the message"),
    )


# --- SMTP (client submission and relay connector) -------------------------------------------------

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_AUTH_HINT = (
    "the OAuth token was refused: grant the identity SMTP.SendAsApp (Office 365 Exchange Online), "
    "register it in Exchange (New-ServicePrincipal) and give it FullAccess or SendAs on the mailbox"
)

#: enhanced status code → (transient, hint); the article's table of Exchange Online replies
SMTP_CODES: dict[str, tuple[bool, str]] = {
    "5.7.3": (False, _SMTP_AUTH_HINT),
    "5.7.139": (
        False,
        "SMTP AUTH is disabled for the tenant or the mailbox: Set-TransportConfig "
        "-SmtpClientAuthenticationDisabled $false, or per mailbox Set-CASMailbox -Identity "
        "<mailbox> -SmtpClientAuthenticationDisabled $false",
    ),
    "5.7.30": (
        False,
        "basic authentication is refused for client submission: the gateway must use OAuth "
        "(XOAUTH2), check that MAILGW_TRANSPORT=smtp reaches smtp.office365.com:587",
    ),
    "5.7.60": (
        False,
        "the identity may not send as this sender: grant Send As on the 'from' mailbox "
        "(Add-RecipientPermission -AccessRights SendAs)",
    ),
    "5.7.57": (
        False,
        "the server wants an authenticated client: use client submission (port 587, XOAUTH2) or a "
        "relay connector that trusts this sender's IP or certificate",
    ),
    "5.7.64": (
        False,
        "the relay connector does not recognise this sender: send from an accepted domain, and "
        "make the inbound connector trust this gateway, by its outbound IP address or by the "
        "certificate in MAILGW_RELAY_CLIENT_CERT (its subject must be the connector's "
        "TlsSenderCertificateName)",
    ),
    "5.2.0": (
        False,
        "the mailbox reached Exchange Online's sending limits (10,000 recipients a day, 30 "
        "messages a minute): replay after the 24-hour window, or spread the load over more "
        "mailboxes",
    ),
    "4.3.2": (
        True,
        "Exchange limits concurrent connections per mailbox (3); the gateway retries later",
    ),
}
_QUOTA_HINT = "the mailbox or message is over a size or quota limit: free space or shrink it"


def enhanced_status(message: str) -> str | None:
    match = _ENHANCED.search(message)
    return ".".join(match.groups()) if match else None


def classify_smtp(code: int, message: str, *, may_have_sent: bool = False) -> DeliveryError:
    """One SMTP reply → transient (4xx) or permanent (5xx), with a hint for the known replies."""
    enhanced = enhanced_status(message)
    label = f"SMTP {code} {enhanced}" if enhanced else f"SMTP {code}"
    if enhanced in SMTP_CODES:
        is_transient, hint = SMTP_CODES[enhanced]
        return DeliveryError(label, message, transient=is_transient, hint=hint)
    if (enhanced or "").startswith("5.2.") or (code == 552 and "quota" in message.lower()):
        return DeliveryError(label, message, transient=False, hint=_QUOTA_HINT)
    if 400 <= code < 500:
        return DeliveryError(
            label,
            message,
            transient=True,
            ambiguous=may_have_sent,
            hint="the server deferred the message; the gateway retries with backoff",
        )
    if code in (550, 551, 553) and enhanced and enhanced.startswith("5.1."):
        return DeliveryError(
            label, message, transient=False, hint="fix the addresses and send the request again"
        )
    return DeliveryError(
        label, message, transient=False, hint="the server refused the message; see the reply"
    )
