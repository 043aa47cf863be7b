"""Microsoft Graph's answers → transient or permanent, each with a hint an operator can act on."""

from __future__ import annotations

from mailgw.transports.errors import DeliveryError, quota_exceeded

#: the application permission a request needs: sending, or (draft mode) writing drafts
SEND_PERMISSION = "Mail.Send"
DRAFT_PERMISSION = "Mail.ReadWrite"
#: refusals that mean "this identity lacks the permission the request needs"
_ACCESS_DENIED = frozenset({"erroraccessdenied", "accessdenied", "authorization_requestdenied"})


def permission_hint(permission: str) -> str:
    """What to grant after a 403, naming the permission the refused request needs."""
    why = (
        " (draft mode creates, reads and deletes drafts with it)"
        if permission != SEND_PERMISSION
        else ""
    )
    return (
        f"grant the identity the {permission} application permission{why} and make sure the "
        "mailbox is inside its Exchange RBAC for Applications scope (check with "
        "Test-ServicePrincipalAuthorization); see docs/graph-permissions.md"
    )


_SIZE_HINT = (
    "shrink the message (Exchange's MaxSendSize is 35 MB by default) or, for attachments of "
    "3-150 MB, use MAILGW_GRAPH_MODE=draft, which uploads them in chunks"
)

#: Graph error code -> (transient, operator hint). Codes are matched case-insensitively.
GRAPH_CODES: dict[str, tuple[bool, str]] = {
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
    # a block, not a quota: waiting would hold the mail silently while only an admin can act
    "errormessagesubmissionblocked": (
        False,
        "Exchange blocked this mailbox from sending (outbound spam protection or Restricted "
        "users): an admin releases it in the Microsoft Defender portal (Restricted entities), "
        "then replay",
    ),
    "errorquotaexceeded": (
        False,
        "the 'from' mailbox is full: free space or raise its quota, then replay",
    ),
    "invalidauthenticationtoken": (
        True,
        "the token was refused: check MAILGW_CREDENTIAL, and that MAILGW_GRAPH_ENDPOINT and "
        "MAILGW_GRAPH_SCOPE (if set) name the mail tenant's cloud",
    ),
}

#: Exchange's sending limits, as Graph reports them (any status): the mailbox waits for the window
QUOTA_CODES = frozenset(
    {
        "errorexceededmessagelimit",
        "errorsubmissionquotaexceeded",
        "submissionquotaexceeded",
    }
)

_STATUS_HINTS = {
    401: "the token was refused: check the identity (MAILGW_CREDENTIAL, AZURE_CLIENT_ID)",
    404: "the 'from' mailbox was not found: check the address and its Exchange Online licence",
    413: _SIZE_HINT,
    429: "Graph is throttling this mailbox (4 concurrent requests, 10,000 per 10 minutes); "
    "the gateway waits as told by Retry-After",
}


def classify_graph(
    status: int | None,
    code: str | None,
    message: str,
    *,
    retry_after: float | None = None,
    may_have_sent: bool = False,
    permission: str = SEND_PERMISSION,
) -> DeliveryError:
    """One Graph error response → transient or permanent, with a hint an operator can act on.

    ``may_have_sent`` says whether the failed request could have sent the message (sendMail, or
    the draft's send): a 5xx to such a request is *ambiguous*, the message may be out.
    ``permission``: the application permission the request needs, which a 403's hint names.
    """
    code_key = (code or "").lower()
    label = f"graph/{code}" if code else (f"graph/http-{status}" if status else "graph/error")
    if code_key in QUOTA_CODES:
        return quota_exceeded(label, message, "daily", retry_after)
    if status == 429:
        return DeliveryError(
            label,
            message,
            transient=True,
            hint=_STATUS_HINTS[429],
            retry_after=retry_after,
            throttled=True,
        )
    if code_key in _ACCESS_DENIED or (status == 403 and code_key not in GRAPH_CODES):
        return DeliveryError(label, message, transient=False, hint=permission_hint(permission))
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
