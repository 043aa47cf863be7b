"""SMTP replies (client submission and relay connector) → transient or permanent, with a hint."""

from __future__ import annotations

import re

from mailgw.transports.errors import DeliveryError, quota_exceeded

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
#: the store driver's refusals name their exception: ``STOREDRV.Submission.Exception:<Name>``
_STOREDRV_EXCEPTION = re.compile(r"STOREDRV\.[A-Za-z]+\.Exception:(\w+)", re.IGNORECASE)
_SMTP_AUTH_HINT = (
    "the OAuth token was refused: grant the identity SMTP.SendAsApp (Office 365 Exchange Online), "
    "register it in Exchange (New-ServicePrincipal) and give it FullAccess or SendAs on the mailbox"
)

_SEND_AS_HINT = (
    "the identity may not send as this sender: grant Send As on the 'from' mailbox "
    "(Add-RecipientPermission -AccessRights SendAs)"
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
    "5.7.60": (False, _SEND_AS_HINT),
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
    # Exchange's store refused the submission; the exception it names says why (below).
    "5.2.0": (
        False,
        "Exchange Online's mailbox store refused the message: the reply names the cause; fix "
        "it, then replay",
    ),
    "4.3.2": (
        True,
        "Exchange limits concurrent connections per mailbox (3); the gateway retries later",
    ),
}
_QUOTA_HINT = "the mailbox or message is over a size or quota limit: free space or shrink it"

#: ``STOREDRV`` exception (lower case) → (transient, hint). Exchange answers several unrelated
#: refusals with the same 5.2.0, so the exception's name, not the code, says what to do.
STOREDRV_EXCEPTIONS: dict[str, tuple[bool, str]] = {
    "sendasdeniedexception": (False, _SEND_AS_HINT),
    "outboundspamexception": (
        False,
        "Exchange Online blocked the mailbox from sending (outbound spam): release it under "
        "Restricted entities in the Microsoft Defender portal, then replay",
    ),
}


#: the store's refusal for the mailbox's daily sending quota (10,000 recipients in 24 hours)
_DAILY_QUOTA_EXCEPTION = "submissionquotaexceededexception"
#: a transient reply that names a sending rate: Exchange's per-minute limit, not an outage
_RATE_REPLY = re.compile(
    r"\brate\b|too many messages|submission quota|message limit", re.IGNORECASE
)

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


def without_addresses(text: str) -> str:
    """A server's reply with every email address in it replaced: what is recorded and logged of
    a refused recipient (a Bcc one included) is that it was refused, never who it was."""
    return _ADDRESS.sub("<recipient>", text)


def enhanced_status(message: str) -> str | None:
    match = _ENHANCED.search(message)
    return ".".join(match.groups()) if match else None


def classify_smtp(code: int, message: str, *, may_have_sent: bool = False) -> DeliveryError:
    """One SMTP reply → transient (4xx) or permanent (5xx), with a hint for the known replies."""
    enhanced = enhanced_status(message)
    label = f"smtp/{code}-{enhanced}" if enhanced else f"smtp/{code}"
    exception = _STOREDRV_EXCEPTION.search(message)
    if exception and exception.group(1).lower() == _DAILY_QUOTA_EXCEPTION:
        return quota_exceeded(label, message, "daily")
    if 400 <= code < 500 and _RATE_REPLY.search(message):
        return quota_exceeded(label, message, "minute")
    known = STOREDRV_EXCEPTIONS.get(exception.group(1).lower()) if exception else None
    if known is None and enhanced in SMTP_CODES:
        known = SMTP_CODES[enhanced]
    if known is not None:
        is_transient, hint = known
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
