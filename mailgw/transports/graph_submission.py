"""Exactly once against Graph's asynchronous send: what a draft's state means after a ``/send``.

Exchange answers ``/send`` with 202 and sends the draft afterwards: for a while the item still
reads ``isDraft: true``, then it leaves Drafts (and may not be found for a moment), then it is in
Sent Items, under the same immutable id (Microsoft's "send mail" and "immutable ids" pages). So
after a ``/send`` whose answer was lost (a timeout, a 5xx, a worker that died), "still a draft"
and "not found" do not mean "not sent". The transport therefore

- stamps every draft with the message's id (:data:`~mailgw.transports.graph_message.STAMP_PROPERTY`
  on JSON drafts; a MIME draft carries the renderer's ``Message-ID``, its ``internetMessageId``),
  so that it can be found in Sent Items by :func:`sent_items_filter`;
- records in the checkpoint that a submission was attempted, and when, BEFORE calling ``/send``
  (:func:`mark_submitting`; the message's state record keeps it), so that a crash after ``/send``
  is also "maybe in flight";
- reads a draft in that stage as *pending* for ``MAILGW_GRAPH_SUBMIT_GRACE_SECONDS``
  (:func:`verdict`), looking again every few seconds without using an attempt
  (:func:`pending`), and only then concludes that the submission did not happen.

This module decides; :mod:`mailgw.transports.graph` does the requests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from mailgw.models import SendRequest
from mailgw.transports.errors import DeliveryError
from mailgw.transports.graph_message import STAMP_PROPERTY, needs_mime
from mailgw.transports.render import message_id_for

#: what a draft read by its immutable id showed: still a draft, sent (``isDraft: false``), or
#: not found
DraftState = Literal["draft", "sent", "missing"]
#: what to do with it: done; wait (it may be on its way); send this draft; build a new one
Verdict = Literal["sent", "pending", "send", "rebuild"]

PENDING = "graph/submission-pending"
#: checkpoint stages: the draft exists; it is complete; ``/send`` was (maybe) called
CREATED, READY, SUBMITTING = "created", "ready", "submitting"
_SUBMITTED_AT = "submittedAt"


def mark_submitting(checkpoint: dict[str, str], now: datetime) -> None:
    """``/send`` is about to be called (save the checkpoint before calling it)."""
    checkpoint.update(stage=SUBMITTING, **{_SUBMITTED_AT: now.isoformat()})


def mark_not_submitted(checkpoint: dict[str, str]) -> None:
    """``/send`` was refused before Graph did anything (429, 503, a 4xx): the draft is ready."""
    checkpoint["stage"] = READY
    checkpoint.pop(_SUBMITTED_AT, None)


def submitted_at(checkpoint: dict[str, str]) -> datetime | None:
    """When ``/send`` was last called for this draft, if it may have been."""
    if checkpoint.get("stage") != SUBMITTING or _SUBMITTED_AT not in checkpoint:
        return None
    return datetime.fromisoformat(checkpoint[_SUBMITTED_AT])


def verdict(
    state: DraftState,
    stage: str | None,
    *,
    in_sent_items: bool,
    since_submit: timedelta | None,
    grace: timedelta,
) -> Verdict:
    """What to do with an earlier attempt's draft.

    ``since_submit``: how long ago ``/send`` may have been called (None: never). Within
    ``grace`` a draft (or a missing item) may be on its way: pending. Past it, Exchange did not
    take it: a draft still there is sent again, a missing one is built anew."""
    if state == "sent" or in_sent_items:
        return "sent"
    if since_submit is not None:
        if since_submit < grace:
            return "pending"
        return "send" if state == "draft" else "rebuild"
    # Never submitted: a complete draft is sent; a half-built or vanished one is built anew.
    return "send" if state == "draft" and stage == READY else "rebuild"


def recheck_seconds(grace: timedelta) -> float:
    """How soon to look again at a pending submission: a tenth of the grace, 1-15 s."""
    return min(15.0, max(1.0, grace.total_seconds() / 10))


def pending(state: DraftState, since_submit: timedelta, grace: timedelta) -> DeliveryError:
    """The retry that waits for Exchange: transient, ambiguous, and not a failed attempt."""
    seen = "still reads as a draft" if state == "draft" else "is not found, nor in Sent Items yet"
    return DeliveryError(
        PENDING,
        f"Graph took the draft for sending {since_submit.total_seconds():.0f} s ago and it "
        f"{seen}: Exchange sends drafts after answering",
        transient=True,
        ambiguous=True,
        pending=True,
        retry_after=recheck_seconds(grace),
        hint="nothing to do: the gateway looks again shortly and does not send it again "
        f"meanwhile; after {grace.total_seconds():.0f} s (MAILGW_GRAPH_SUBMIT_GRACE_SECONDS) it "
        "concludes that the draft was not sent, and sends it",
    )


def sent_items_filter(
    message_id: str, request: SendRequest, *, internet_id: str | None = None
) -> str:
    """The OData ``$filter`` that finds this message among sent items: by its stamp (JSON
    drafts) or by its ``internetMessageId`` (MIME drafts: the Message-ID the renderer set, or
    ``internet_id``, a submitted MIME message's own)."""
    if internet_id is not None:
        return f"internetMessageId eq '{_literal(internet_id)}'"
    if needs_mime(request):
        internet_id = message_id_for(message_id, request.sender.address)
        return f"internetMessageId eq '{_literal(internet_id)}'"
    return (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{STAMP_PROPERTY}' "
        f"and ep/value eq '{_literal(message_id)}')"
    )


def _literal(text: str) -> str:
    """An OData string literal's content: a quote is doubled."""
    return text.replace("'", "''")
