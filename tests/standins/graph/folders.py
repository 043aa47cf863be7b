"""Listing a mailbox's messages, all of them or one folder's, with the ``$filter`` forms a client
uses to find a message it stamped: ``GET /users/{user}/mailFolders/{folder}/messages`` and
``GET /users/{user}/messages``.

Two filters, as Graph documents them, and nothing else (another one is a 400, so a client cannot
pass here with a query Graph would refuse):

- ``internetMessageId eq '<id@domain>'`` (the message resource's filterable property);
- ``singleValueExtendedProperties/Any(ep: ep/id eq '<property id>' and ep/value eq '<value>')``
  ("Get singleValueLegacyExtendedProperty"): the name in the property id is matched
  case-sensitively, its type and GUID and the value case-insensitively.

Folders by their well-known names (``SentItems``, ``Drafts``), in any case. ``$select`` picks the
properties (``id`` always comes); ``Prefer: IdType="ImmutableId"`` gives immutable ids.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from standins import json_response
from standins.graph.drafts import wants_immutable_ids
from standins.graph.errors import GraphError
from standins.graph.mailstore import Folder, MailItem
from standins.graph.payloads import extended_property_key
from standins.graph.records import Recorded

if TYPE_CHECKING:
    from standins.graph.server import GraphStandIn

__all__ = ["Folders", "parse_filter"]

WELL_KNOWN: dict[str, Folder] = {"sentitems": "SentItems", "drafts": "Drafts"}
_QUOTED = r"'((?:[^']|'')*)'"
_BY_MESSAGE_ID = re.compile(rf"^\s*internetMessageId\s+eq\s+{_QUOTED}\s*$", re.IGNORECASE)
_BY_PROPERTY = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*"
    rf"\1/id\s+eq\s+{_QUOTED}\s+and\s+\1/value\s+eq\s+{_QUOTED}\s*\)\s*$",
    re.IGNORECASE,
)

Match = Callable[[MailItem], bool]


def _unquote(literal: str) -> str:
    return literal.replace("''", "'")


def parse_filter(expression: str) -> Match:
    """The filter as a predicate on items; 400 for a form this stand-in (or Graph) does not take."""
    by_id = _BY_MESSAGE_ID.match(expression)
    if by_id:
        wanted = _unquote(by_id.group(1))
        return lambda item: item.message.get("internetMessageId") == wanted
    by_property = _BY_PROPERTY.match(expression)
    if by_property:
        key = extended_property_key(_unquote(by_property.group(2)))
        value = _unquote(by_property.group(3)).lower()
        if key is None:
            raise GraphError(400, "ErrorInvalidProperty", "The extended property id is invalid.")

        def has_property(item: MailItem) -> bool:
            return any(
                extended_property_key(str(p.get("id", ""))) == key
                and str(p.get("value", "")).lower() == value
                for p in item.message.get("singleValueExtendedProperties") or []
            )

        return has_property
    raise GraphError(400, "BadRequest", f"Invalid filter clause: {expression}")


class Folders:
    def __init__(self, graph: GraphStandIn) -> None:
        self.graph = graph

    def list_messages(self, rec: Recorded, mailbox: str) -> web.Response:
        segments = [urllib.parse.unquote(s) for s in rec.path.split("/") if s]
        folder: Folder | None = None
        if len(segments) > 4 and segments[3].lower() == "mailfolders":  # v1.0/users/{m}/...
            name = segments[4].lower()
            if name not in WELL_KNOWN:
                raise GraphError.canned("ErrorItemNotFound")
            folder = WELL_KNOWN[name]
        expression = rec.query.get("$filter")
        match: Match = parse_filter(expression) if expression else lambda item: True
        folders: tuple[Folder, ...] = (folder,) if folder else tuple(WELL_KNOWN.values())
        found = [
            item
            for each in folders
            for item in self.graph.drafts.in_folder(mailbox, each)
            if match(item)
        ]
        select = {s.strip() for s in rec.query.get("$select", "").split(",") if s.strip()}
        value = [self._selected(rec, item, select) for item in found]
        context = f"{self.graph.graph_url}/$metadata#users('{mailbox}')/messages"
        return json_response({"@odata.context": context, "value": value})

    def _selected(self, rec: Recorded, item: MailItem, select: set[str]) -> dict[str, Any]:
        full = self.graph.messages.to_json(rec, item)
        if not select:
            return full
        return {
            "@odata.etag": full["@odata.etag"],
            "id": item.id_for(wants_immutable_ids(rec)),
            **{key: full[key] for key in select if key in full},
        }
