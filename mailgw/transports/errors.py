"""Failed delivery outcomes: transient (retry later) or permanent (poison, with a hint).

Transports raise :class:`DeliveryError`; anything else escaping a transport is a crash, which the
Functions host retries and finally moves to the poison queue after ``maxDequeueCount``. The tables
that classify each provider's answers are beside their transports (``graph_errors``,
``smtp_errors``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

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
    #: the provider has the message and has not finished with it (Graph's asynchronous send):
    #: look again soon, without counting a failed attempt
    pending: bool = False
    #: transport progress to resume from on the next attempt (e.g. the Graph draft's id)
    checkpoint: dict[str, str] | None = None
    #: Exchange refused for its sending quota, of the day (``daily``: recipients per 24 h) or
    #: of the minute (``minute``: a rate reply): the mailbox waits for the window, not a retry
    quota: Literal["daily", "minute"] | None = None

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, hint=self.hint)


QUOTA_HINT = (
    "the mailbox reached Exchange Online's sending limits (10,000 recipients a day, 30 messages "
    "a minute): the gateway holds the mailbox's mail until the window ends and sends it then; to "
    "send more, spread the load over more mailboxes or use a High Volume Email account "
    "(docs/operations.md, Budgets and pacing)"
)


def quota_exceeded(
    code: str, message: str, window: Literal["daily", "minute"], retry_after: float | None = None
) -> DeliveryError:
    """Exchange's own sending limit: wait for its window (it is not the message's fault)."""
    return DeliveryError(
        code, message, transient=True, hint=QUOTA_HINT, retry_after=retry_after, quota=window
    )


def permanent(code: str, message: str, hint: str = "") -> DeliveryError:
    return DeliveryError(code, message, transient=False, hint=hint)


def transient(
    code: str, message: str, hint: str = "", retry_after: float | None = None
) -> DeliveryError:
    return DeliveryError(code, message, transient=True, hint=hint, retry_after=retry_after)


def token_unavailable(exc: Exception) -> DeliveryError:
    """The identity endpoint refused or failed: transient (it may recover), with what to check."""
    return DeliveryError(
        "mailgw/token-unavailable",
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
