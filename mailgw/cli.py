"""``mailgw``: the gateway from a terminal (send a message, check health) over its public HTTP API.

Talks to the API as any caller would (Functions key in ``x-functions-key``), so it works the same
against the local dev host and a deployed Function App.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:7071"


def _attachment(path: str, *, content_id: str | None = None) -> dict[str, Any]:
    file = Path(path)
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    item: dict[str, Any] = {
        "name": file.name,
        "contentType": content_type,
        "contentBase64": base64.b64encode(file.read_bytes()).decode("ascii"),
    }
    if content_id:
        item.update(inline=True, contentId=content_id)
    return item


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"from": args.sender, "to": args.to, "subject": args.subject}
    for key in ("cc", "bcc"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.reply_to:
        body["replyTo"] = args.reply_to
    if args.text is not None:
        body["text"] = args.text
    if args.text_file:
        body["text"] = Path(args.text_file).read_text()
    if args.html is not None:
        body["html"] = args.html
    if args.html_file:
        body["html"] = Path(args.html_file).read_text()
    attachments = [_attachment(p) for p in args.attach]
    for spec in args.inline:
        path, _, cid = spec.rpartition(":")
        if not path:
            raise SystemExit(f"--inline takes PATH:CONTENT_ID, got {spec!r}")
        attachments.append(_attachment(path, content_id=cid))
    if attachments:
        body["attachments"] = attachments
    if args.header:
        body["headers"] = dict(h.split("=", 1) for h in args.header)
    if args.importance:
        body["importance"] = args.importance
    if args.send_at:
        body["sendAt"] = args.send_at
    return body


def _call(
    method: str, url: str, key: str | None, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("x-functions-key", key)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), _decode(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), _decode(error.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return raw.decode(errors="replace")


def _print_result(status: int, body: Any) -> int:
    print(json.dumps(body, indent=2) if not isinstance(body, str) else body)
    if status >= 400 and isinstance(body, dict):
        for error in body.get("errors", []):
            print(f"  {error.get('field')}: {error.get('message')}", file=sys.stderr)
    return 0 if status < 400 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailgw", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("MAILGW_URL", DEFAULT_URL),
        help="gateway base URL (env MAILGW_URL; default %(default)s)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("MAILGW_FUNCTION_KEY"),
        help="Functions key (env MAILGW_FUNCTION_KEY); not needed on the dev host",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    send = commands.add_parser("send", help="send a message through the API")
    send.add_argument("--from", dest="sender", required=True)
    send.add_argument("--to", action="append", default=[], required=True)
    send.add_argument("--cc", action="append", default=[])
    send.add_argument("--bcc", action="append", default=[])
    send.add_argument("--reply-to", action="append", default=[])
    send.add_argument("--subject", default="")
    send.add_argument("--text")
    send.add_argument("--text-file")
    send.add_argument("--html")
    send.add_argument("--html-file")
    send.add_argument("--attach", action="append", default=[], metavar="PATH")
    send.add_argument("--inline", action="append", default=[], metavar="PATH:CONTENT_ID")
    send.add_argument("--header", action="append", default=[], metavar="X-NAME=VALUE")
    send.add_argument("--importance", choices=["low", "normal", "high"])
    send.add_argument("--send-at", help="ISO 8601 time with offset, at most 7 days ahead")
    send.add_argument("--idempotency-key")
    send.add_argument("--dry-run", action="store_true", help="print the JSON body, send nothing")

    commands.add_parser("health", help="check that the gateway and its queue are reachable")

    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    if args.command == "send":
        body = build_request(args)
        if args.dry_run:
            print(json.dumps(body, indent=2))
            return 0
        extra = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
        status, _, answer = _call("POST", f"{base}/api/v1/messages", args.key, body, extra)
        return _print_result(status, answer)
    status, _, answer = _call("GET", f"{base}/api/v1/health", args.key)
    return _print_result(status, answer)


if __name__ == "__main__":
    raise SystemExit(main())
