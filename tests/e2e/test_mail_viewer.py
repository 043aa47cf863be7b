"""The local mail viewer (``/_dev/mail``) in a real browser: Debian's Chromium, headless, driven
by Playwright, against a dev host serving the gateway (outbox transport) on Azurite.

A message with HTML (including a script that must not run and a remote image that must not
load), a text part, an inline image and an attachment: it appears in the open list without a
reload, opens to its rendered HTML, and its attachment downloads byte for byte. A screenshot of
each page is kept in ``artifacts/`` (git-ignored). The Graph and SMTP stand-ins as sources are
checked over HTTP, without the browser.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_host import ROOT, DevHost
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from standins.processes import start_smtp_standin, start_standins
from support import b64, wait_until

CHROMIUM = os.environ.get("MAILGW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts"
#: nothing listens on port 9: a "remote" image the message's policy must not even request
REMOTE_IMAGE = "http://127.0.0.1:9/tracker.png"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, so the inline image has a size to check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


LOGO = png(48, 24, (0, 120, 212))
REPORT = b"%PDF-1.7\n" + os.urandom(50_000)
#: a file and an inline image the HTML shows as cid:logo
ATTACHMENTS = [
    {"name": "report.pdf", "contentType": "application/pdf", "contentBase64": b64(REPORT)},
    {"name": "logo.png", "contentType": "image/png", "contentBase64": b64(LOGO),
     "inline": True, "contentId": "logo"},
]  # fmt: skip
HTML = f"""<html><body style="font-family: sans-serif">
<h1 id="greeting" style="color: #0078d4">Your receipt</h1>
<p>Thanks for your order. <img id="logo" src="cid:logo" alt="logo"></p>
<img id="remote" src="{REMOTE_IMAGE}" alt="remote">
<script>document.body.setAttribute("data-script-ran", "yes");
document.write('<p id="marker">the script ran</p>');</script>
</body></html>"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"no Chromium at {CHROMIUM}: `make test` installs Debian's (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def local_only(page: Page, origin: str) -> list[str]:
    """Let the page reach only the dev host; return the list of everything else it tried."""
    elsewhere: list[str] = []

    def handle(route: Route, request: Request) -> None:
        if request.url.startswith(origin):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    page.route("**/*", handle)
    return elsewhere


def test_a_sent_message_shows_up_opens_and_downloads(
    start_devhost: Callable[..., DevHost], browser: Browser
) -> None:
    host = start_devhost()
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    elsewhere = local_only(page, host.base_url)
    page.goto(f"{host.base_url}/_dev/mail")
    expect(page.locator("#empty")).to_be_visible()  # the list is open before the mail exists

    response = host.post_json(
        "/api/v1/messages",
        {
            "from": {"address": "noreply@contoso.com", "name": "Contoso Shop"},
            "to": ["a@example.com"],
            "cc": ["c@example.com"],
            "bcc": ["audit@contoso.com"],
            "subject": "Your receipt 42",
            "text": "Thanks for your order (text part).",
            "html": HTML,
            "attachments": ATTACHMENTS,
        },
    )  # fmt: skip
    assert response.status == 202, response.body
    message_id = response.json()["id"]

    # listed without a reload, newest first, with every column
    row = page.locator("#mail tbody tr").first
    expect(row).to_contain_text("Your receipt 42", timeout=30_000)
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text("Contoso Shop <noreply@contoso.com>")
    expect(cells.nth(2)).to_have_text(
        "to: a@example.com\ncc: c@example.com\nbcc: audit@contoso.com"
    )
    expect(cells.nth(4)).to_contain_text("kB")
    status_link = cells.nth(5).locator("a")
    expect(status_link).to_have_text(message_id)
    expect(status_link).to_have_attribute("href", f"/api/v1/messages/{message_id}")
    state = page.request.get(f"{host.base_url}/api/v1/messages/{message_id}").json()
    assert state["id"] == message_id
    page.screenshot(path=ARTIFACTS / "mail-viewer-list.png", full_page=True)

    # opens to the rendered HTML in a sandbox without scripts
    row.get_by_role("link", name="Your receipt 42").click()
    frame_element = page.locator("iframe#html-body")
    sandbox = frame_element.get_attribute("sandbox")
    assert sandbox is not None and "allow-scripts" not in sandbox
    assert "allow-same-origin" not in sandbox
    frame = page.frame_locator("iframe#html-body")
    expect(frame.locator("#greeting")).to_have_text("Your receipt")
    logo = frame.locator("#logo")
    expect(logo).to_be_visible()
    assert logo.evaluate("image => image.complete && image.naturalWidth") == 48  # from its part
    assert frame.locator("#marker").count() == 0  # the script did not run
    assert frame.locator("body").get_attribute("data-script-ran") is None
    assert frame.locator("#remote").evaluate("image => image.naturalWidth") == 0
    assert not [url for url in elsewhere if "tracker" in url]  # blocked, not even requested
    body_url = frame_element.get_attribute("src")
    assert body_url is not None
    policy = page.request.get(urllib.parse.urljoin(host.base_url, body_url)).headers[
        "content-security-policy"
    ]
    assert "default-src 'none'" in policy and "script-src" not in policy

    # the text part and the headers
    expect(page.locator("#text-body")).to_have_text("Thanks for your order (text part).\n")
    expect(page.locator("#headers")).to_contain_text(f"<{message_id}@contoso.com>")

    # (not full_page: resizing the viewport for it makes Chromium repaint the frame half-done)
    page.screenshot(path=ARTIFACTS / "mail-viewer-message.png")

    # the attachment downloads byte for byte
    with page.expect_download() as download:
        page.locator("#attachments").get_by_role("link", name="report.pdf").click()
    assert download.value.suggested_filename == "report.pdf"
    assert Path(download.value.path()).read_bytes() == REPORT
    assert elsewhere == [], elsewhere
    context.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        data: bytes = answer.read()
        return data


def listed(host: DevHost, subject: str) -> dict[str, Any] | None:
    answer = get_json(f"{host.base_url}/_dev/mail/messages.json")
    assert answer["problems"] == []
    return next((m for m in answer["messages"] if m["subject"] == subject), None)


@pytest.mark.parametrize("transport", ["graph", "smtp"])
def test_what_the_local_stand_ins_received_is_shown_too(
    start_devhost: Callable[..., DevHost], transport: str
) -> None:
    """Under ``MAILGW_TRANSPORT=graph`` (Graph's JSON) or ``smtp`` (MIME), the viewer reads the
    stand-in's admin endpoint that ``make run`` gives it."""
    standin: Any = start_standins() if transport == "graph" else start_smtp_standin("submission")
    with standin:
        if transport == "graph":
            admin = {"MAILGW_DEV_GRAPH_ADMIN_URL": standin.graph_url}
        else:
            admin = {"MAILGW_DEV_SMTP_ADMIN_URL": standin.info["adminUrl"]}
        host = start_devhost(**standin.gateway_env(), **admin)
        subject = f"via the {transport} stand-in"
        response = host.post_json(
            "/api/v1/messages",
            {
                "from": "noreply@contoso.com",
                "to": ["a@example.com"],
                "bcc": ["audit@contoso.com"],
                "subject": subject,
                "html": '<p>Hi <img src="cid:logo"></p>',
                "attachments": ATTACHMENTS,
            },
        )  # fmt: skip
        assert response.status == 202, response.body
        item = wait_until(lambda: listed(host, subject), timeout=30, what=f"{subject} listed")
        assert item["to"] == ["a@example.com"] and item["bcc"] == ["audit@contoso.com"]
        assert item["source"] == ("Graph stand-in" if transport == "graph" else "SMTP stand-in")
        if transport == "smtp":  # MIME carries the gateway's Message-ID; Graph's JSON does not
            assert item["messageId"] == response.json()["id"]
        page = get_bytes(host.base_url + item["url"]).decode()
        assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
        names = re.findall(r'href="([^"]+/parts/\d+)" download="([^"]+)"', page)
        files = {name: get_bytes(host.base_url + href) for href, name in names}
        assert files == {"report.pdf": REPORT, "logo.png": LOGO}
        body = get_bytes(f"{host.base_url}{item['url']}/body.html").decode()
        assert f'src="{item["url"]}/cid/logo"' in body  # cid: served from the message's part
        # a page that rebound its own name to 127.0.0.1 does not get the mail
        rebound = host.request("GET", "/_dev/mail/messages.json", headers={"Host": "evil.example"})
        assert rebound.status == 403
