"""Stand-in for the Microsoft Graph v1.0 mail endpoints, for msgraph-sdk (kiota/httpx) or others.

Served under ``{url}/v1.0`` (point the client's base URL there; see ``test_standins.py`` for the
msgraph-sdk construction)::

    POST   /users/{user}/sendMail                         JSON {"message", "saveToSentItems"} -> 202
    POST   /users/{user}/sendMail   (Content-Type: text/plain, Base64 MIME)                -> 202
    POST   /users/{user}/messages                         create draft                    -> 201
    GET    /users/{user}/messages/{id}[?$expand=attachments]                              -> 200
    PATCH  /users/{user}/messages/{id}                                                    -> 200
    DELETE /users/{user}/messages/{id}                                                    -> 204
    POST   /users/{user}/messages/{id}/send                                               -> 202
    GET    /users/{user}[/mailFolders/{SentItems|Drafts}]/messages?$filter=..&$select=..  -> 200
    GET    /users/{user}/messages/{id}/attachments                                        -> 200
    POST   /users/{user}/messages/{id}/attachments        fileAttachment                  -> 201
    POST   /users/{user}/messages/{id}/attachments/createUploadSession                    -> 201
    PUT    <uploadUrl>   Content-Range: bytes a-b/total   (no Authorization)        -> 200 | 201
    DELETE <uploadUrl>                                                                    -> 204

One module per part: :mod:`.sendmail`, :mod:`.drafts` (messages and small attachments),
:mod:`.uploads` (upload sessions and the upload URL), :mod:`.submission` (what sending checks and
records, and the submission lag), :mod:`.mailstore` (drafts and sent items, regular and immutable
ids), :mod:`.folders` (listings with ``$filter`` on ``internetMessageId`` or an extended
property), :mod:`.payloads`
(message JSON and MIME as Exchange reads them), :mod:`.auth`, :mod:`.faults`, :mod:`.errors`,
:mod:`.records`; :mod:`.server` wires them (routes, per-mailbox limits, admin API).

What it checks, as Graph/Exchange do (codes marked "documented" or quoted messages are Graph's;
the rest are plausible stand-ins, see the end of this docstring):

- ``Authorization: Bearer`` on every Graph call, verified by a pluggable ``token_verifier``
  (default: a token from :mod:`standins.identity` whose resource is in :attr:`audiences`) -> 401
  ``InvalidAuthenticationToken``; ``/me`` with an app token -> 400.
- The application permission each operation needs, from the token's roles -> 403
  ``ErrorAccessDenied``: Mail.Send for sendMail and ``/send``, Mail.ReadWrite for drafts,
  attachments and upload sessions, Mail.Read or Mail.ReadWrite for reading
  (:data:`standins.graph.auth.REQUIRED_ROLES`; the identity stand-in grants both by default).
- Property names are matched case-insensitively (kiota sends ``{"Message": ..,
  "SaveToSentItems": ..}``) and normalised to camelCase; an unknown property -> 400
  ``RequestBodyRead``. Attachments need ``@odata.type`` ``#microsoft.graph.fileAttachment``,
  a ``name`` and valid Base64 ``contentBytes``.
- Recipients: none, or a malformed address, at send time -> 400 ``ErrorInvalidRecipients``.
  ``internetMessageHeaders``: at most 5 (``InvalidInternetMessageHeaderCollection``), names
  starting with ``X-`` (``InvalidInternetMessageHeader``).
- Request bodies over ``max_request_bytes`` (4,000,000: "4 MB", the stricter reading) -> 413
  "The maximum request length supported is 4MB." (code ``RequestEntityTooLarge``: unverified).
- ``createUploadSession`` below 3 MiB -> 400 ``ErrorAttachmentSizeShouldNotBeLessThanMinimumSize``
  (documented); a message over ``max_message_bytes`` -> 400 ``ErrorMessageSizeExceeded`` (one
  status wherever it arises; see :data:`ERRORS`).
- Upload PUTs: ``Content-Type: application/octet-stream`` (else 415), contiguous
  ``Content-Range``, ``Content-Length`` equal to the range and the body, every fragment but the
  last a multiple of ``upload_chunk_multiple`` (327,680 B), at most ``max_upload_chunk_bytes``.
  Outlook says not to send ``Authorization`` there: it is recorded, and answered 401 when
  ``reject_authorization_on_upload`` is set (off by default, because here the upload URL shares
  the Graph host, so an ``allowed_hosts``-restricted client still sends it). The 320 KiB rule is
  OneDrive's and stricter than Outlook's (whose own example PUTs 2 MiB and which advises < 4 MB
  per PUT): a client passing it, e.g. 12 x 320 KiB, satisfies both. Intermediate fragments ->
  200 ``{"ExpirationDateTime", "nextExpectedRanges": ["<next>"]}``, the last -> 201 with
  ``Location`` and an empty body, exactly as Outlook's upload endpoint.
- Per mailbox at most ``concurrency_limit`` (4) requests in flight; the next one -> 429
  ``ApplicationThrottled`` "Application is over its MailboxConcurrency limit." with
  ``Retry-After``. :attr:`GraphStandIn.max_in_flight` records the peak the client *attempted*.

Exchange sends a draft asynchronously: with ``submit_lag_seconds`` a draft still reads
``isDraft: true`` for that long after the 202 to ``/send``, then with ``transit_seconds`` it is
found nowhere (404, in no listing) for that long, then it is in Sent Items. A second ``/send`` of
a draft still waiting is accepted and delivered again (a duplicate, as the real one would be).
Every new JSON draft gets an ``internetMessageId``; a MIME draft keeps its ``Message-ID``.
Extended properties are stored and filterable, and returned only with ``$expand``.

Choices where Graph's behaviour is not documented: a sent draft answers GET with 404
``ErrorItemNotFound`` under its old regular id (Exchange moves it to Sent Items, where it gets a
new one); under its immutable id (``Prefer: IdType="ImmutableId"``) it answers 200 with
``isDraft: false``; ``/send`` of an item no longer in Drafts is 404 ``ErrorItemNotFound``.
Status/code pairs for malformed requests and upload-range errors (including the 415 for another
upload ``Content-Type``) are plausible, not verified against the service.

Every request is recorded (:attr:`GraphStandIn.requests`), every accepted message is in
:attr:`GraphStandIn.delivered` with its attachments as bytes. Faults are scripted FIFO, global or
per mailbox/operation: :meth:`GraphStandIn.fail_next` and helpers, and
:meth:`GraphStandIn.accept_then_fail` for ambiguous outcomes (delivered, then 504 / a slow
answer / a dropped connection).

Admin API (:mod:`standins.admin`; :class:`RemoteGraphStandIn` is its client). ``GET
/_standin/delivered`` lists the accepted messages, oldest first, each::

    {"receivedAt": "2026-05-04T09:30:12.123456Z",    # when Exchange accepted it (UTC, ISO 8601)
     "mailbox": "noreply@contoso.com",                # the /users/{user} it was sent as
     "from": "noreply@contoso.com",                   # the message's from, else the mailbox
     "to": [...], "cc": [...], "bcc": [...],          # addresses
     "subject": "...", "size": 1234,
     "via": "sendMail" | "mime" | "draft",
     "mimeBase64": "..." | null,                      # the MIME message, when it came as MIME
     "message": {...},                                # the Graph message JSON as Exchange read
                                                      # it (camelCase keys; attachments carry
                                                      # contentBytes), for MIME: fields parsed
     "attachments": [{"id", "name", "contentType", "size", "isInline", "contentId",
                      "contentBytes"}],
     "saveToSentItems": true, "messageId": "<draft id>" | null,
     "token": {"kind", "client_id", "resource", "tenant", "expires_on", "serial"} | null,
     "time": <monotonic seconds>, "wallTime": <epoch seconds>}

``GET /_standin/requests`` lists every request (method, path, query, headers, json, bodySize,
bodyBase64 for small non-JSON bodies, operation, mailbox, messageId, token, status, errorCode,
fault, throttled, time, responded, wallTime). ``GET /_standin/stats``: maxInFlight, inFlight,
delivered, requests, pendingFaults. ``POST /_standin/faults``: ``{"preset": code}`` or
``{"status", "code", "message"}``, plus ``n``, ``retryAfter``, ``mailbox``, ``operation``,
``mode`` (respond | status | delay | drop), ``delaySeconds``. ``POST /_standin/config``:
``latencySeconds``, ``concurrencyLimit``, ``audiences``, ``submitLagSeconds``,
``transitSeconds``, ``completeSubmissions`` (true: end every lag now), ``randomFaults``
(``{"rate", "seed", "faults": [<fault JSON>]}``: a share of the calls no scripted fault took
get one drawn at random; null: off).
"""

from __future__ import annotations

from standins.graph.auth import (
    GRAPH_AUDIENCES,
    TokenVerifier,
    accept_any_token,
    standin_token_verifier,
)
from standins.graph.errors import ERRORS, GraphError
from standins.graph.faults import Fault
from standins.graph.records import DeliveredAttachment, DeliveredMessage, Recorded
from standins.graph.remote import RemoteGraphStandIn
from standins.graph.server import GraphStandIn

__all__ = [
    "ERRORS",
    "GRAPH_AUDIENCES",
    "DeliveredAttachment",
    "DeliveredMessage",
    "Fault",
    "GraphError",
    "GraphStandIn",
    "Recorded",
    "RemoteGraphStandIn",
    "TokenVerifier",
    "accept_any_token",
    "standin_token_verifier",
]
