"""What Exchange does when a message is handed over for sending, by sendMail or by a draft's
``/send``: it must have valid recipients, the mailbox must be allowed to send as its ``from``,
it must fit the size limit; then it is accepted (202) and recorded as delivered. A sent draft
then moves to Sent Items on its own time (:meth:`Submission.move_later`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from standins.graph.errors import GraphError, request_ids
from standins.graph.mailstore import MailItem
from standins.graph.payloads import check_sendable
from standins.graph.records import DeliveredAttachment, DeliveredMessage, Recorded, Via

if TYPE_CHECKING:
    from standins.graph.server import GraphStandIn

__all__ = ["Submission"]


class Submission:
    def __init__(self, graph: GraphStandIn) -> None:
        self.graph = graph
        self._timers: set[asyncio.TimerHandle] = set()
        #: submitted drafts not yet in Sent Items, by immutable id
        self._moving: dict[str, MailItem] = {}

    def move_later(self, item: MailItem) -> None:
        """A submitted draft reads as a draft for :attr:`GraphStandIn.submit_lag_seconds`, is
        found nowhere for :attr:`GraphStandIn.transit_seconds`, then is in Sent Items. With no
        lag at all it moves before ``/send`` is answered."""
        lag, transit = self.graph.submit_lag_seconds, self.graph.transit_seconds
        store = self.graph.drafts
        if lag <= 0 and transit <= 0:
            store.move_to_sent(item)
            return
        self._moving[item.immutable_id] = item

        def arrive() -> None:
            store.move_to_sent(item)
            self._moving.pop(item.immutable_id, None)

        def leave_drafts() -> None:
            store.start_transit(item)
            self._after(transit, arrive)

        self._after(lag, leave_drafts)

    def _after(self, seconds: float, step: Callable[[], None]) -> None:
        if seconds <= 0:
            step()
            return

        def run() -> None:
            self._timers.discard(handle)
            step()

        handle = asyncio.get_running_loop().call_later(seconds, run)
        self._timers.add(handle)

    @property
    def pending(self) -> int:
        """Submitted drafts not yet in Sent Items."""
        return len(self._moving)

    def complete_pending(self) -> None:
        """Exchange catches up: every submitted draft is in Sent Items now (a test's way to end
        a long lag at the moment it chooses, instead of guessing one)."""
        for item in list(self._moving.values()):
            self.graph.drafts.move_to_sent(item)
        self.cancel_pending()

    def cancel_pending(self) -> None:
        """Forget the moves still to come (on reset, or when the server stops)."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._moving.clear()

    def submit(
        self,
        rec: Recorded,
        mailbox: str,
        message: dict[str, Any],
        attachments: list[DeliveredAttachment],
        *,
        save: bool,
        via: Via,
        message_id: str | None = None,
        mime: bytes | None = None,
    ) -> web.Response:
        """Check, record as delivered, and answer 202 (no body), as Graph does."""
        check_sendable(message)
        self.check_send_as(mailbox, message)
        size = sum(a.size for a in attachments) + len(json.dumps(message))
        if size > self.graph.max_message_bytes:
            raise GraphError.canned("ErrorMessageSizeExceeded")
        full = dict(message)
        if attachments:
            full["attachments"] = [a.to_json() for a in attachments]
        self.graph.delivered.append(
            DeliveredMessage(
                mailbox=mailbox,
                message=full,
                save_to_sent_items=save,
                via=via,
                time=time.monotonic(),
                wall_time=time.time(),
                attachments=list(attachments),
                message_id=message_id,
                mime=mime,
                token=rec.token,
            )
        )
        rec.status = 202
        return web.Response(status=202, headers=request_ids(rec.header("client-request-id")))

    def check_send_as(self, mailbox: str, message: Mapping[str, Any]) -> None:
        """``from``/``sender`` other than the mailbox need a Send As grant (``send_as``)."""
        send_as = self.graph.send_as
        if send_as is None:
            return
        for key in ("from", "sender"):
            address = (message.get(key) or {}).get("emailAddress", {}).get("address")
            if (
                address
                and address.lower() != mailbox
                and address.lower() not in send_as.get(mailbox, set())
            ):
                raise GraphError.canned("ErrorSendAsDenied")
