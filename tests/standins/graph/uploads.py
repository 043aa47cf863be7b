"""Large attachments: ``POST /messages/{id}/attachments/createUploadSession`` on Graph, then PUTs of
byte ranges to the pre-authenticated upload URL (outlook.office.com in reality; here
``{url}/api/v2.0/Users('…')/Messages('…')/AttachmentSessions('…')?authtoken=…``).

The PUT rules are Outlook's: ``Content-Type: application/octet-stream``, a contiguous
``Content-Range: bytes a-b/total``, ``Content-Length`` equal to the range and the body. The stand-in
adds OneDrive's stricter rule that every fragment but the last is a multiple of 320 KiB (a client
that passes it satisfies both). Intermediate fragments answer 200 with ``nextExpectedRanges``, the
last 201 with ``Location`` and an empty body, as Outlook does.
"""

from __future__ import annotations

import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from standins import json_response
from standins.graph.errors import GraphError
from standins.graph.faults import answer_with_faults
from standins.graph.payloads import canonical, json_body, parse_bool
from standins.graph.records import DeliveredAttachment, Operation, Recorded, iso, new_id

if TYPE_CHECKING:
    from standins.graph.server import GraphStandIn

__all__ = ["UploadSession", "Uploads", "is_upload_path"]

UPLOAD_CONTENT_TYPE = "application/octet-stream"
_UPLOAD_SEGMENT = re.compile(r"^AttachmentSessions\('(?P<id>[^']+)'\)$")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass
class UploadSession:
    id: str
    token: str
    mailbox: str
    message_id: str
    name: str
    content_type: str | None
    size: int
    is_inline: bool
    content_id: str | None
    expires_at: float
    received: bytearray = field(default_factory=bytearray)


def is_upload_path(segments: list[str]) -> bool:
    return segments[:2] == ["api", "v2.0"]


def _quote_id(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Uploads:
    """Upload sessions by id (``graph.upload_sessions``), and the upload URL's handler."""

    def __init__(self, graph: GraphStandIn) -> None:
        self.graph = graph
        self.sessions: dict[str, UploadSession] = {}

    # --- on Graph ------------------------------------------------------------------------------
    def create_session(self, rec: Recorded, mailbox: str) -> web.Response:
        graph = self.graph
        draft = graph.messages.find_unsent(mailbox, rec.message_id)
        body = canonical(
            json_body(rec, graph.max_request_bytes),
            ["AttachmentItem"],
            "microsoft.graph.createUploadSession",
        )
        item = canonical(
            body.get("AttachmentItem"),
            ["attachmentType", "name", "size", "contentType", "isInline", "contentId"],
            "microsoft.graph.attachmentItem",
        )
        if str(item.get("attachmentType", "")).lower() != "file":
            raise GraphError(400, "ErrorInvalidParameter", "attachmentType must be 'file'.")
        name, size = item.get("name"), item.get("size")
        if not isinstance(name, str) or not name:
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.name is required.")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise GraphError(400, "ErrorInvalidParameter", "AttachmentItem.size is required.")
        if size < graph.min_upload_session_bytes:
            raise GraphError(
                400,
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                "Attachment size must be greater than the minimum size.",
            )
        graph.messages.check_size(draft, size)
        session = UploadSession(
            id=new_id("AAMkADAS"),
            token=secrets.token_urlsafe(32),
            mailbox=mailbox,
            message_id=rec.message_id or "",
            name=name,
            content_type=item.get("contentType"),
            size=size,
            is_inline=parse_bool(item.get("isInline", False), "isInline"),
            content_id=item.get("contentId"),
            expires_at=time.time() + graph.upload_session_ttl_seconds,
        )
        self.sessions[session.id] = session
        rec.status = 201
        return json_response(
            {
                "@odata.context": f"{graph.graph_url}/$metadata#microsoft.graph.uploadSession",
                "uploadUrl": self._upload_url(session),
                "expirationDateTime": iso(session.expires_at),
                "nextExpectedRanges": ["0-"],
            },
            status=201,
        )

    def _upload_base(self, session: UploadSession) -> str:
        quote = urllib.parse.quote
        return (
            f"{self.graph.url}/api/v2.0/Users('{quote(session.mailbox, safe='@')}')"
            f"/Messages('{quote(session.message_id)}')"
        )

    def _upload_url(self, session: UploadSession) -> str:
        return (
            f"{self._upload_base(session)}/AttachmentSessions('{_quote_id(session.id)}')"
            f"?authtoken={session.token}"
        )

    # --- the pre-authenticated upload URL -----------------------------------------------------
    async def serve(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        match = _UPLOAD_SEGMENT.match(segments[-1]) if len(segments) == 5 else None
        session = self.sessions.get(match.group("id")) if match else None
        operation: Operation = "cancelUpload" if request.method == "DELETE" else "upload"
        rec = await self.graph.record(
            request,
            operation,
            session.mailbox if session else None,
            session.message_id if session else None,
        )
        return await self.graph.answer(rec, lambda: self._checked(request, rec, session))

    async def _checked(
        self, request: web.Request, rec: Recorded, session: UploadSession | None
    ) -> web.StreamResponse:
        if request.method not in ("PUT", "DELETE"):
            raise GraphError(405, "ErrorInvalidRequest", "Use PUT or DELETE on an upload URL.")
        if session is None:
            raise GraphError(404, "ErrorItemNotFound", "The upload session was not found.")
        if rec.query.get("authtoken") != session.token:
            raise GraphError(401, "InvalidAuthenticationToken", "The authtoken is not valid.")
        if self.graph.reject_authorization_on_upload and rec.header("Authorization"):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Do not send an Authorization header to a pre-authenticated upload URL.",
            )
        if time.time() >= session.expires_at:
            raise GraphError(404, "ErrorItemNotFound", "The upload session has expired.")

        async def carry_out() -> web.StreamResponse:
            if request.method == "DELETE":
                del self.sessions[session.id]
                rec.status = 204
                return web.Response(status=204)
            return self._put(rec, session)

        return await answer_with_faults(self.graph.fault_queue, request, rec, carry_out)

    def _put(self, rec: Recorded, session: UploadSession) -> web.Response:
        graph = self.graph
        if rec.media_type() != UPLOAD_CONTENT_TYPE:
            raise GraphError(
                415,
                "UnsupportedMediaType",
                f"Content-Type must be '{UPLOAD_CONTENT_TYPE}', not '{rec.media_type()}'.",
            )
        found = _CONTENT_RANGE.fullmatch((rec.header("Content-Range") or "").strip())
        if found is None:
            raise GraphError(
                400, "InvalidContentRange", "Content-Range must be 'bytes {start}-{end}/{total}'."
            )
        start, end, total = (int(g) for g in found.groups())
        length = end - start + 1
        declared = rec.header("Content-Length")
        if declared is None or int(declared) != len(rec.body) or len(rec.body) != length:
            raise GraphError(
                400,
                "InvalidContentRange",
                f"Content-Length ({declared}), the body ({len(rec.body)} bytes) and Content-Range "
                f"({length} bytes) disagree.",
            )
        if total != session.size:
            raise GraphError(
                400,
                "InvalidContentRange",
                f"The total size {total} differs from the session's size {session.size}.",
            )
        if start != len(session.received) or end >= total or length <= 0:
            raise GraphError(
                416,
                "InvalidRange",
                f"The fragment {start}-{end} is not the next expected range "
                f"({len(session.received)}-).",
            )
        if length > graph.max_upload_chunk_bytes:
            raise GraphError(
                413,
                "RequestEntityTooLarge",
                f"A fragment may be {graph.max_upload_chunk_bytes} bytes at most.",
            )
        last = end + 1 == total
        multiple = graph.upload_chunk_multiple
        if not last and multiple and length % multiple:
            raise GraphError(
                400,
                "InvalidChunkSize",
                f"Every fragment but the last must be a multiple of {multiple} bytes; "
                f"got {length}.",
            )
        session.received += rec.body
        if not last:
            rec.status = 200
            return json_response(
                {
                    "@odata.context": f"{self._upload_base(session)}/AttachmentSessions/$entity",
                    "ExpirationDateTime": iso(session.expires_at),
                    "nextExpectedRanges": [str(len(session.received))],
                }
            )
        del self.sessions[session.id]
        draft = graph.drafts.find(session.mailbox, session.message_id)
        if draft is None or draft.submitted:
            raise GraphError.canned("ErrorItemNotFound")
        attachment = DeliveredAttachment(
            name=session.name,
            content_type=session.content_type,
            content=bytes(session.received),
            is_inline=session.is_inline,
            content_id=session.content_id,
            source="upload",
        )
        draft.attachments.append(attachment)
        rec.status = 201
        location = f"{self._upload_base(session)}/Attachments('{_quote_id(attachment.id)}')"
        return web.Response(status=201, headers={"Location": location})
