"""``/_dev/mail``: the mail the local gateway sent, in a browser (what Mailpit or MailHog give).

Served by the dev host only (``make run``), never by the Function App. The list is a small static
page whose script polls ``messages.json`` every second, so new mail shows up by itself; a message
opens to a server-rendered page: its HTML body in a sandboxed iframe, the text part, attachments
to download, the headers.

A message's HTML is someone else's markup, so it is shown as a document of its own under a
Content-Security-Policy that allows no script, no form, no remote anything: only inline styles,
``data:`` images and the message's own inline parts (``cid:`` references are rewritten to this
message's part URLs, the only images it may load). The iframe's ``sandbox`` (no
``allow-scripts``, no ``allow-same-origin``) says the same a second time.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from devhost.mail_sources import Mail, MailSources, Part

ROOT = "/_dev/mail"
_SCRIPT = Path(__file__).with_name("mail_viewer.js")
_KEY = r"{key:[a-z]+-[A-Za-z0-9._-]+}"
_CID = re.compile(r"""\bcid:([^"'\s<>)]+)""", re.IGNORECASE)
POLL_MILLISECONDS = 1000
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

#: Our own pages: scripts only from this origin, no inline script.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'"
)
FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1b1b; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; } h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .6rem;
         border-bottom: 1px solid #e3e3e3; }
th { background: #f5f5f5; font-weight: 600; } tbody tr:hover { background: #f0f6ff; }
.muted { color: #666; } .problem { color: #a40000; } .num { text-align: right; }
.meta th { width: 9rem; background: none; } pre { white-space: pre-wrap; background: #f7f7f7;
  padding: .8rem; border: 1px solid #e3e3e3; }
iframe { width: 100%; height: 60vh; border: 1px solid #ccc; resize: vertical; background: #fff; }
code { font-size: 12px; }
"""


def _page(title: str, body: str, *, script: bool = False) -> web.Response:
    tag = f'<script src="{ROOT}/viewer.js" defer></script>' if script else ""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>{tag}</head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(
        text=document,
        content_type="text/html",
        headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"},
    )


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    return f"{size / 1000:.1f} kB" if size < 1_000_000 else f"{size / 1_000_000:.1f} MB"


@web.middleware
async def _loopback_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The viewer shows mail: only to pages that reached it as 127.0.0.1 or localhost, so a web
    page that rebinds its own domain name to 127.0.0.1 cannot read it."""
    if request.path.startswith(ROOT) and request.url.host not in LOOPBACK_NAMES:
        raise web.HTTPForbidden(text="the mail viewer answers to 127.0.0.1 and localhost only")
    return await handler(request)


def _quoted(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class MailViewer:
    """The routes under ``/_dev/mail``; ``status_path`` is the API's status route for an id."""

    def __init__(self, environ: Mapping[str, str], route_prefix: str) -> None:
        self.sources = MailSources(environ)
        prefix = "/".join(p for p in (route_prefix.strip("/"), "v1/messages") if p)
        self.status_prefix = f"/{prefix}/"

    def register(self, app: web.Application) -> None:
        app.middlewares.append(_loopback_names_only)
        app.router.add_get(ROOT, self._list_page)
        app.router.add_get(f"{ROOT}/", self._list_page)
        app.router.add_get(f"{ROOT}/viewer.js", self._script)
        app.router.add_get(f"{ROOT}/messages.json", self._list_json)
        app.router.add_get(f"{ROOT}/{_KEY}", self._detail_page)
        app.router.add_get(f"{ROOT}/{_KEY}/body.html", self._html_body)
        app.router.add_get(f"{ROOT}/{_KEY}/cid/{{cid}}", self._inline_part)
        app.router.add_get(f"{ROOT}/{_KEY}/parts/{{index:\\d+}}", self._attachment)
        app.router.add_get(f"{ROOT}/{_KEY}/message.eml", self._raw)
        app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        await self.sources.close()

    def status_url(self, mail: Mail) -> str | None:
        return self.status_prefix + _quoted(mail.gateway_id) if mail.gateway_id else None

    # --- the list ---------------------------------------------------------------------------

    async def _list_page(self, _: web.Request) -> web.Response:
        sources = "; ".join(html.escape(s) for s in self.sources.describe())
        body = f"""
<h1>Mail sent by the local gateway</h1>
<p class="muted">Newest first, refreshed as mail arrives. Read from: {sources}.</p>
<p id="problems" class="problem"></p>
<table id="mail" data-poll="{POLL_MILLISECONDS}" data-source="{ROOT}/messages.json">
<thead><tr><th>Time</th><th>From</th><th>To / Cc / Bcc</th><th>Subject</th>
<th class="num">Size</th><th>Message id</th></tr></thead>
<tbody></tbody></table>
<p id="empty" class="muted" hidden>No mail yet. Send one: <code>mailgw send --from
noreply@contoso.com --to someone@example.com --subject Hi --text Hello</code></p>
<p id="updated" class="muted"></p>"""
        return _page("mailgw: local mail", body, script=True)

    async def _script(self, _: web.Request) -> web.Response:
        return web.Response(
            body=_SCRIPT.read_bytes(),
            content_type="text/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def _list_json(self, _: web.Request) -> web.Response:
        mails, problems = await self.sources.collect()
        listed = [
            {
                "key": mail.key,
                "url": f"{ROOT}/{mail.key}",
                "source": mail.source,
                "time": mail.received.astimezone(UTC).isoformat(),
                "from": mail.sender,
                "to": mail.to,
                "cc": mail.cc,
                "bcc": mail.bcc,
                "subject": mail.subject,
                "size": mail.size,
                "sizeText": _size(mail.size),
                "messageId": mail.gateway_id,
                "statusUrl": self.status_url(mail),
            }
            for mail in mails
        ]
        return web.json_response(
            {"messages": listed, "problems": problems}, headers={"Cache-Control": "no-store"}
        )

    # --- one message ------------------------------------------------------------------------

    async def _mail(self, request: web.Request) -> Mail:
        mail = await self.sources.find(request.match_info["key"])
        if mail is None:
            raise web.HTTPNotFound(text="no such message (the stand-in may have restarted)")
        return mail

    async def _detail_page(self, request: web.Request) -> web.Response:
        mail = await self._mail(request)
        base = f"{ROOT}/{mail.key}"
        status = self.status_url(mail)
        identity = (
            f'<a href="{html.escape(status)}">{html.escape(mail.gateway_id or "")}</a>'
            if status
            else '<span class="muted">not known (Graph JSON carries no Message-ID)</span>'
        )
        rows = [
            ("Time", mail.received.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("From", mail.sender),
            ("To", ", ".join(mail.to)),
            ("Cc", ", ".join(mail.cc)),
            ("Bcc", ", ".join(mail.bcc)),
            ("Size", _size(mail.size)),
            ("Source", mail.source),
        ]
        meta = "".join(
            f"<tr><th>{name}</th><td>{html.escape(text)}</td></tr>" for name, text in rows if text
        )
        meta += f"<tr><th>Message id</th><td>{identity}</td></tr>"
        raw = f' · <a href="{base}/message.eml" download>download .eml</a>' if mail.raw else ""
        headers = "".join(
            f"<tr><th>{html.escape(name)}</th><td><code>{html.escape(value)}</code></td></tr>"
            for name, value in mail.headers
        )
        html_section = (
            f'<iframe id="html-body" sandbox="{FRAME_SANDBOX}" src="{base}/body.html" '
            'title="The message\'s HTML body" referrerpolicy="no-referrer"></iframe>'
            if mail.html is not None
            else '<p class="muted">No HTML part.</p>'
        )
        text_section = (
            f'<pre id="text-body">{html.escape(mail.text)}</pre>'
            if mail.text is not None
            else '<p class="muted">No text part.</p>'
        )
        body = f"""
<p><a href="{ROOT}">&larr; all mail</a>{raw}</p>
<h1>{html.escape(mail.subject) or '<span class="muted">(no subject)</span>'}</h1>
<table class="meta">{meta}</table>
<h2>HTML</h2>{html_section}
<h2>Text</h2>{text_section}
<h2>Attachments</h2>{self._attachments(mail)}
<h2>Headers</h2><table id="headers">{headers}</table>"""
        return _page(f"{mail.subject} - mailgw: local mail", body)

    def _attachments(self, mail: Mail) -> str:
        if not mail.parts:
            return '<p class="muted">None.</p>'
        items = []
        for part in mail.parts:
            name = part.filename or f"part-{part.index}"
            note = " (inline" + (f", cid:{part.content_id})" if part.content_id else ")")
            href = f"{ROOT}/{mail.key}/parts/{part.index}"
            items.append(
                f'<li><a href="{href}" download="{html.escape(name)}">{html.escape(name)}</a> '
                f"<span class='muted'>{html.escape(part.content_type)}, "
                f"{_size(len(part.data))}{html.escape(note) if part.inline else ''}</span></li>"
            )
        return f'<ul id="attachments">{"".join(items)}</ul>'

    async def _html_body(self, request: web.Request) -> web.Response:
        mail = await self._mail(request)
        if mail.html is None:
            raise web.HTTPNotFound(text="this message has no HTML part")
        parts_url = f"{ROOT}/{mail.key}/cid/"
        document = _CID.sub(lambda m: parts_url + _quoted(m.group(1)), mail.html)
        # links open outside the frame (the sandbox allows popups, nothing else)
        document = '<base target="_blank">' + document
        policy = (
            f"default-src 'none'; img-src data: http://{request.host}{parts_url}; "
            "style-src 'unsafe-inline'; font-src data:; base-uri 'none'; form-action 'none'; "
            f"frame-ancestors 'self'; sandbox {FRAME_SANDBOX}"
        )
        return web.Response(
            text=document,
            content_type="text/html",
            headers={
                "Content-Security-Policy": policy,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def _inline_part(self, request: web.Request) -> web.Response:
        mail = await self._mail(request)
        part = mail.part_by_cid(request.match_info["cid"])
        if part is None:
            raise web.HTTPNotFound(text="no part with that Content-ID")
        return self._part_response(part, disposition="inline")

    async def _attachment(self, request: web.Request) -> web.Response:
        mail = await self._mail(request)
        index = int(request.match_info["index"])
        if index >= len(mail.parts):
            raise web.HTTPNotFound(text="no such part")
        return self._part_response(mail.parts[index], disposition="attachment")

    async def _raw(self, request: web.Request) -> web.Response:
        mail = await self._mail(request)
        if mail.raw is None:
            raise web.HTTPNotFound(text="this message was not MIME (Graph JSON)")
        return web.Response(
            body=mail.raw,
            content_type="message/rfc822",
            headers={"Content-Disposition": f'attachment; filename="{mail.key}.eml"'},
        )

    @staticmethod
    def _part_response(part: Part, *, disposition: str) -> web.Response:
        name = part.filename or f"part-{part.index}"
        return web.Response(
            body=part.data,
            headers={
                "Content-Type": part.content_type,
                "Content-Disposition": f"{disposition}; filename*=UTF-8''{_quoted(name)}",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "no-store",
            },
        )
