"""The mailbox side of Exchange: items (drafts, then sent items) and their two kinds of id.

Every item has a *regular* id, which changes when the item moves to another folder, and an
*immutable* id, which does not. A client that sends ``Prefer: IdType="ImmutableId"`` is given the
immutable one; both resolve while they are current. Sending a draft moves it to Sent Items: it
gets a new regular id (the old one now answers 404 ``ErrorItemNotFound``) and keeps its immutable
id, under which it reads ``isDraft: false``.

Exchange submits asynchronously ("things to know about send mail", steps 2-4): after the 202 to
``/send`` the item still reads as a draft while transport picks it up, may then not be found for a
moment, and only then is in Sent Items ("retrieving the message in Sent Items may not succeed
immediately after sending", the immutable-id page). Hence three steps, which the server spaces
out (:class:`standins.graph.submission.Submission`): :meth:`MailStore.submit`,
:meth:`MailStore.start_transit`, :meth:`MailStore.move_to_sent`. :meth:`MailStore.in_folder` is
what a folder's listing reads.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from standins.graph.records import DeliveredAttachment, new_id

__all__ = ["Folder", "MailItem", "MailStore"]

Folder = Literal["Drafts", "SentItems"]
REGULAR_PREFIX = "AAMkADAw"
IMMUTABLE_PREFIX = "AAkALgAA"


@dataclass
class MailItem:
    """One message in a mailbox."""

    mailbox: str
    message: dict[str, Any]
    attachments: list[DeliveredAttachment]
    created: float
    immutable_id: str = field(default_factory=lambda: new_id(IMMUTABLE_PREFIX))
    regular_id: str = field(default_factory=lambda: new_id(REGULAR_PREFIX))
    folder: Folder = "Drafts"
    #: ``/send`` was accepted (it may still be a draft until Exchange moves it)
    submitted: bool = False
    #: between Drafts and Sent Items: found under no id and in no folder
    in_transit: bool = False
    deleted: bool = False
    #: a draft created from MIME keeps it (what its /send delivers)
    mime: bytes | None = None
    change_key: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def is_draft(self) -> bool:
        return self.folder == "Drafts"

    @property
    def sent(self) -> bool:
        """Sent (``/send`` accepted); kept under this name for tests that read it."""
        return self.submitted

    def id_for(self, immutable: bool) -> str:
        """The id a client is given: immutable when it asked for immutable ids."""
        return self.immutable_id if immutable else self.regular_id

    def touch(self) -> None:
        """A change: a new ``changeKey`` (and ETag)."""
        self.change_key = secrets.token_urlsafe(12)


class MailStore:
    """Items by id. Protocol handlers use :meth:`find` (current ids only); tests may index the
    store with any id an item was ever given (``graph.drafts[draft_id]``), even a stale one."""

    def __init__(self) -> None:
        self._by_immutable: dict[str, MailItem] = {}
        self._current_regular: dict[str, str] = {}
        self._ever: dict[str, MailItem] = {}

    def create(
        self,
        mailbox: str,
        message: dict[str, Any],
        attachments: list[DeliveredAttachment],
        created: float,
    ) -> MailItem:
        item = MailItem(mailbox, message, attachments, created)
        self._by_immutable[item.immutable_id] = item
        self._index_regular(item)
        self._ever[item.immutable_id] = item
        return item

    def find(self, mailbox: str, item_id: str | None) -> MailItem | None:
        """The item ``item_id`` (either kind, if current) in ``mailbox``, unless deleted."""
        key = item_id or ""
        item = self._by_immutable.get(self._current_regular.get(key, key))
        if item is None or item.mailbox != mailbox or item.deleted or item.in_transit:
            return None
        return item

    def submit(self, item: MailItem) -> None:
        """``/send`` was accepted: the item will be sent (see :meth:`move_to_sent`)."""
        item.submitted = True

    def start_transit(self, item: MailItem) -> None:
        """Transport took the draft: it leaves Drafts, not yet in Sent Items."""
        if item.folder == "Drafts":
            self._current_regular.pop(item.regular_id, None)
            item.in_transit = True

    def move_to_sent(self, item: MailItem) -> None:
        """Exchange has sent it: into Sent Items, under a new regular id (once)."""
        if item.folder == "SentItems":
            return
        self._current_regular.pop(item.regular_id, None)
        item.regular_id = new_id(REGULAR_PREFIX)
        item.folder = "SentItems"
        item.in_transit = False
        self._index_regular(item)

    def in_folder(self, mailbox: str, folder: Folder) -> list[MailItem]:
        return [
            item
            for item in self._by_immutable.values()
            if item.mailbox == mailbox
            and item.folder == folder
            and not item.deleted
            and not item.in_transit
        ]

    def clear(self) -> None:
        self._by_immutable.clear()
        self._current_regular.clear()
        self._ever.clear()

    def _index_regular(self, item: MailItem) -> None:
        self._current_regular[item.regular_id] = item.immutable_id
        self._ever[item.regular_id] = item

    # --- for tests ---------------------------------------------------------------------------
    def __getitem__(self, item_id: str) -> MailItem:
        return self._ever[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ever

    def __iter__(self) -> Iterator[MailItem]:
        return iter(list(self._by_immutable.values()))

    def __len__(self) -> int:
        return len(self._by_immutable)
