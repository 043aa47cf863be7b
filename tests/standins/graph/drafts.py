"""Drafts: ``/users/{user}/messages`` create, read, update, delete and send, and their small
attachments (``/messages/{id}/attachments``). Large attachments go through :mod:`.uploads`."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from standins import json_response
from standins.graph.errors import GraphError
from standins.graph.mailstore import MailItem
from standins.graph.payloads import (
    file_attachment,
    json_body,
    message_from_mime,
    mime_body,
    normalize_message,
)
from standins.graph.records import Recorded, iso

if TYPE_CHECKING:
    from standins.graph.server import GraphStandIn

__all__ = ["Drafts", "wants_immutable_ids"]

_TOO_LARGE = (
    "The message exceeds the maximum supported size., Cannot save changes made to an item to store."
)


def wants_immutable_ids(rec: Recorded) -> bool:
    """``Prefer: IdType="ImmutableId"``: answer with immutable ids."""
    return 'idtype="immutableid"' in (rec.header("Prefer") or "").replace(" ", "").lower()


def _new_internet_message_id() -> str:
    """Shaped like Exchange Online's: ``<token@host.namprd00.prod.outlook.com>``."""
    token = secrets.token_hex(16).upper()
    return f"<{token}@STANDIN00MB0000.namprd00.prod.outlook.com>"


class Drafts:
    def __init__(self, graph: GraphStandIn) -> None:
        self.graph = graph

    # --- lookups (also used by uploads) -------------------------------------------------------
    def find(self, mailbox: str, message_id: str | None) -> MailItem:
        item = self.graph.drafts.find(mailbox, message_id)
        if item is None:
            raise GraphError.canned("ErrorItemNotFound")
        return item

    def find_unsent(self, mailbox: str, message_id: str | None) -> MailItem:
        """A draft that can still change: not sent (nor on its way)."""
        item = self.find(mailbox, message_id)
        if item.submitted:
            raise GraphError.canned("ErrorItemNotFound")
        return item

    def check_size(self, item: MailItem, extra: int) -> None:
        if sum(a.size for a in item.attachments) + extra > self.graph.max_message_bytes:
            raise GraphError(400, "ErrorMessageSizeExceeded", _TOO_LARGE)

    def to_json(self, rec: Recorded, item: MailItem, expand: bool = False) -> dict[str, Any]:
        message: dict[str, Any] = {
            "@odata.context": f"{self.graph.graph_url}/$metadata#users('{item.mailbox}')/messages"
            "/$entity",
            "@odata.etag": f'W/"{item.change_key}"',
            "id": item.id_for(wants_immutable_ids(rec)),
            "createdDateTime": iso(item.created, 0),
            "lastModifiedDateTime": iso(time.time(), 0),
            "changeKey": item.change_key,
            "categories": [],
            "hasAttachments": bool(item.attachments),
            "importance": "normal",
            "isRead": True,
            "isDraft": item.is_draft,
            "parentFolderId": item.folder,
            "toRecipients": [],
            "ccRecipients": [],
            "bccRecipients": [],
            "replyTo": [],
        }
        message.update(item.message)
        # Extended properties come back only when asked for ($expand), as Graph does.
        if "singlevalueextendedproperties" not in rec.query.get("$expand", "").lower():
            message.pop("singleValueExtendedProperties", None)
        if expand:
            message["attachments"] = [a.to_json() for a in item.attachments]
        return message

    # --- handlers ------------------------------------------------------------------------------
    def create(self, rec: Recorded, mailbox: str) -> web.Response:
        limit = self.graph.max_request_bytes
        mime = mime_body(rec, limit)
        if mime is not None:
            message, attachments = message_from_mime(mime)
        else:
            message, attachments = normalize_message(json_body(rec, limit), "createMessage")
        # Exchange gives every new item an Internet message id (a MIME draft keeps its own).
        message.setdefault("internetMessageId", _new_internet_message_id())
        item = self.graph.drafts.create(mailbox, message, attachments, time.time())
        item.mime = mime
        immutable = wants_immutable_ids(rec)
        rec.message_id = item.id_for(immutable)
        rec.status = 201
        headers = {"Preference-Applied": 'IdType="ImmutableId"'} if immutable else None
        return json_response(self.to_json(rec, item), status=201, headers=headers)

    def get(self, rec: Recorded, mailbox: str) -> web.Response:
        item = self.find(mailbox, rec.message_id)
        expand = "attachments" in rec.query.get("$expand", "").lower()
        return json_response(self.to_json(rec, item, expand=expand))

    def update(self, rec: Recorded, mailbox: str) -> web.Response:
        item = self.find_unsent(mailbox, rec.message_id)
        message, attachments = normalize_message(
            json_body(rec, self.graph.max_request_bytes), "updateMessage"
        )
        item.message.update(message)
        item.attachments.extend(attachments)
        item.touch()
        return json_response(self.to_json(rec, item))

    def delete(self, rec: Recorded, mailbox: str) -> web.Response:
        item = self.find(mailbox, rec.message_id)
        item.deleted = True
        rec.status = 204
        return web.Response(status=204)

    def send(self, rec: Recorded, mailbox: str) -> web.Response:
        """A draft not yet moved to Sent Items is sent, even if an earlier ``/send`` of it is
        still being submitted: that is a second message, as Exchange would send it."""
        item = self.find(mailbox, rec.message_id)
        if not item.is_draft:
            raise GraphError.canned("ErrorItemNotFound")
        response = self.graph.submission.submit(
            rec,
            mailbox,
            item.message,
            item.attachments,
            save=True,
            via="draft",
            message_id=rec.message_id,
            mime=item.mime,
        )
        self.graph.drafts.submit(item)
        self.graph.submission.move_later(item)
        return response

    def list_attachments(self, rec: Recorded, mailbox: str) -> web.Response:
        item = self.find(mailbox, rec.message_id)
        return json_response({"value": [a.to_json() for a in item.attachments]})

    def add_attachment(self, rec: Recorded, mailbox: str) -> web.Response:
        item = self.find_unsent(mailbox, rec.message_id)
        attachment = file_attachment(json_body(rec, self.graph.max_request_bytes), "addAttachment")
        self.check_size(item, attachment.size)
        item.attachments.append(attachment)
        rec.status = 201
        return json_response(attachment.to_json(), status=201)
