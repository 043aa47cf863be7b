"""The gateway's own errors: what the core raises when one of its rules says no.

The core knows no protocol. Each adapter maps these errors onto its own in one table:
``functions/problems.py`` onto problem+json (RFC 9457) for HTTP callers, ``mailgw/delivery.py``
onto the failure recorded with a queued message (``{code, message, hint}``), and the SMTP intake
onto SMTP replies. ``detail`` is written for the person who must act on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One broken rule, at a place in the caller's own document (``to[2].address``)."""

    field: str
    message: str


class GatewayError(Exception):
    """A rule of the gateway said no; ``errors`` lists the fields at fault, if any."""

    #: seconds after which trying again may succeed (None: it will not, as it is)
    retry_after: int | None = None

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)


# --- a request ------------------------------------------------------------------------------------


class InvalidRequest(GatewayError):
    """The document breaks the send request rules; every broken field is listed."""


class InvalidMailbox(GatewayError):
    """A mailbox named in a path (``/mailboxes/{address}/usage``) is no email address."""


class MessageTooLarge(GatewayError):
    """The request body, or its attachments, exceed a size limit."""


class UnsupportedMediaType(GatewayError):
    """The body is not JSON (by its declared media type)."""


class EmptyBody(GatewayError):
    """There is no body at all."""


class InvalidJson(GatewayError):
    """The body is not (acceptable) JSON."""


class InvalidIdempotencyKey(GatewayError):
    """The ``Idempotency-Key`` is not 1-255 printable ASCII characters."""


class SenderNotAllowed(GatewayError):
    """``MAILGW_ALLOWED_SENDERS`` does not allow the ``from`` mailbox."""


class IdempotencyKeyReused(GatewayError):
    """The key was used before with a different body."""


class IdempotencyKeyExhausted(GatewayError):
    """The key has been reused past every generation the gateway keeps apart."""


# --- a message ------------------------------------------------------------------------------------


class MessageNotFound(GatewayError):
    """No message with this id (unknown, another caller's, or past retention)."""


class NotReplayable(GatewayError):
    """Only a failed message whose payload was kept can be sent again."""


class NotCancelable(GatewayError):
    """An attempt to send the message has started (or it is finished): too late to cancel."""


class TemplateNotFound(GatewayError):
    """``template`` names no stored template."""


class InvalidMessage(GatewayError):
    """A queue message that is no send request (not JSON, not an object, no request)."""


class InvalidEnvelope(GatewayError):
    """A queue message that claims to be the gateway's envelope but is not a valid one."""


class PayloadMissing(GatewayError):
    """The claim-checked payload is gone or is not the bytes intake wrote."""


# --- storage and callers --------------------------------------------------------------------------


class QueueUnavailable(GatewayError):
    """The queue could not be written: nothing was accepted."""

    retry_after = 10


class TemplatesUnavailable(GatewayError):
    """The template store could not be read: the message was not accepted."""

    retry_after = 10


class StorageUnreachable(GatewayError):
    """The health probe could not reach the queue."""

    retry_after = 30


class Unauthenticated(GatewayError):
    """No credentials, or credentials that are not valid for this API.

    ``challenge``: the ``WWW-Authenticate`` value (RFC 6750), when the caller should see one."""

    def __init__(self, detail: str, challenge: str | None = None) -> None:
        super().__init__(detail)
        self.challenge = challenge


class Forbidden(GatewayError):
    """Valid credentials without the right to do this."""

    def __init__(self, detail: str, challenge: str | None = None) -> None:
        super().__init__(detail)
        self.challenge = challenge


class AuthUnavailable(GatewayError):
    """Tokens cannot be checked right now (the tenant's signing keys are unreachable)."""

    retry_after = 30
