"""Large messages: sendMail takes 4 MB per request (about 3 MB of attachments); draft mode adds
3-150 MB attachments through upload sessions in chunks (multiples of 320 KiB, under 4 MB each)."""

from __future__ import annotations

import itertools
import os
import re

import pytest
from graph_helpers import attachment, body, outbound, sha256

from mailgw.transports.errors import DeliveryError
from mailgw.transports.graph import GraphTransport
from standins.graph import GraphStandIn

pytestmark = pytest.mark.slow

MB = 1024 * 1024
CHUNK_MULTIPLE = 320 * 1024
MAX_PUT = 4_000_000  # "under 4 MB" in the strict reading


def content_ranges(graph: GraphStandIn) -> list[tuple[int, int, int]]:
    ranges = []
    for put in graph.requests_for("upload"):
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", put.header("Content-Range") or "")
        assert found is not None, put.headers
        start, end, total = (int(g) for g in found.groups())
        assert len(put.body) == end - start + 1
        ranges.append((start, end, total))
    return ranges


async def test_40_mb_attachment_in_draft_mode_is_byte_exact_in_valid_chunks(
    draft_transport: GraphTransport, graph: GraphStandIn
) -> None:
    data = os.urandom(40 * MB)
    await draft_transport.send(
        outbound(body(attachments=[attachment("archive.zip", data, "application/zip")]))
    )

    (delivered,) = graph.delivered
    got = delivered.attachment("archive.zip")
    assert got.size == len(data)
    assert sha256(got.content) == sha256(data)
    assert (got.content_type, got.source, got.is_inline) == ("application/zip", "upload", False)

    ranges = content_ranges(graph)
    assert len(ranges) >= 10
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) - 1
    assert all(total == len(data) for _, _, total in ranges)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    sizes = [end - start + 1 for start, end, _ in ranges]
    assert all(size <= MAX_PUT for size in sizes)
    assert all(size % CHUNK_MULTIPLE == 0 for size in sizes[:-1])
    # the pre-authenticated upload URL gets no bearer token
    assert not any(put.header("Authorization") for put in graph.requests_for("upload"))
    (session,) = graph.requests_for("createUploadSession")
    item = {k.lower(): v for k, v in session.json["AttachmentItem"].items()}
    assert (item["name"], item["size"]) == ("archive.zip", len(data))
    assert [r.operation for r in graph.requests if r.operation != "upload"] == [
        "createMessage",
        "createUploadSession",
        "send",
    ]


async def test_sendmail_refuses_a_large_attachment_without_calling_graph(
    transport: GraphTransport, graph: GraphStandIn
) -> None:
    data = os.urandom(3 * MB + 1)
    with pytest.raises(DeliveryError) as refused:
        await transport.send(outbound(body(attachments=[attachment("big.bin", data)])))

    error = refused.value
    assert (error.code, error.transient) == ("graph/ErrorMessageSizeExceeded", False)
    assert "MAILGW_GRAPH_MODE=draft" in error.hint and "Mail.ReadWrite" in error.hint
    assert graph.requests == []


async def test_small_and_large_attachments_mixed_in_draft_mode(
    draft_transport: GraphTransport, graph: GraphStandIn
) -> None:
    files = {
        "tiny.txt": (b"hello", "text/plain"),
        "medium.pdf": (os.urandom(1 * MB), "application/pdf"),
        "almost3.bin": (os.urandom(2 * MB + 700_000), "application/octet-stream"),
        "large.iso": (os.urandom(5 * MB + 12345), "application/x-iso9660-image"),
        "inline.png": (os.urandom(50_000), "image/png"),
    }
    attachments = [attachment(n, d, t) for n, (d, t) in files.items() if n != "inline.png"]
    attachments.append(
        attachment("inline.png", files["inline.png"][0], "image/png", inline=True, content_id="i1")
    )
    await draft_transport.send(outbound(body(html='<img src="cid:i1">', attachments=attachments)))

    (delivered,) = graph.delivered
    assert sorted(a.name for a in delivered.attachments) == sorted(files)
    for name, (data, content_type) in files.items():
        got = delivered.attachment(name)
        assert sha256(got.content) == sha256(data), name
        assert got.content_type == content_type
    # What fits stays in the draft's first request (here MIME: the body has text and html), the
    # smallest first; what does not is added afterwards: by its own request under 4 MB, through
    # an upload session above.
    sources = {a.name: a.source for a in delivered.attachments}
    assert sources == {
        "tiny.txt": "mime",
        "medium.pdf": "mime",
        "almost3.bin": "addAttachment",
        "large.iso": "upload",
        "inline.png": "mime",
    }
    inline = delivered.attachment("inline.png")
    assert (inline.is_inline, inline.content_id) == (True, "i1")
    assert len(graph.requests_for("createUploadSession")) == 1
    assert not [r for r in graph.requests if (r.status or 0) >= 400]


FIRST_REQUEST_CASES = [
    # text AND html go as MIME: the attachment is Base64 inside the MIME, and the MIME is Base64
    # again (x16/9): 2.5 MB of attachments make a 4.4 MB request
    pytest.param({"text": "plain", "html": "<p>html</p>"}, 2_500_000, id="mime-2.5MB"),
    # the body counts too: 1.2 MB of html + 2.7 MB of attachments (x4/3) is 4.8 MB of JSON
    pytest.param(
        {"text": None, "html": "<p>" + "x" * 1_200_000 + "</p>"}, 2_700_000, id="html-1.2MB"
    ),
]


@pytest.mark.parametrize(("bodies", "size"), FIRST_REQUEST_CASES)
async def test_draft_mode_keeps_every_request_under_4_mb(
    draft_transport: GraphTransport, graph: GraphStandIn, bodies: dict[str, str | None], size: int
) -> None:
    """Attachments under sendMail's "~3 MB" go inside the first request; the transport counts
    them raw, so the first request can exceed Graph's 4 MB. Draft mode can always add them
    afterwards instead, so it must deliver."""
    data = os.urandom(size)
    await draft_transport.send(outbound(body(**bodies, attachments=[attachment("r.pdf", data)])))
    assert not [r for r in graph.requests if r.status == 413]
    (delivered,) = graph.delivered
    assert sha256(delivered.attachment("r.pdf").content) == sha256(data)


@pytest.mark.parametrize(("bodies", "size"), FIRST_REQUEST_CASES)
async def test_sendmail_never_sends_a_request_over_4_mb(
    transport: GraphTransport, graph: GraphStandIn, bodies: dict[str, str | None], size: int
) -> None:
    """These requests would be over 4 MB, and the transport knows before asking Graph (as it does
    for a 3 MB attachment): a permanent size error with the draft-mode hint and no request."""
    data = os.urandom(size)
    with pytest.raises(DeliveryError) as refused:
        await transport.send(outbound(body(**bodies, attachments=[attachment("r.pdf", data)])))
    failure = refused.value
    assert (failure.code, failure.transient) == ("graph/ErrorMessageSizeExceeded", False)
    assert "MAILGW_GRAPH_MODE=draft" in failure.hint
    assert "the request would be" in failure.message
    assert graph.requests == [] and graph.delivered == []
