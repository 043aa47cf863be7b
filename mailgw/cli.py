"""``mailgw``: the gateway from a terminal.

Two kinds of commands:

* ``send``, ``status``, ``health`` talk to the public HTTP API as any caller would (Functions key in
  ``x-functions-key``, or an Entra ID token as ``Authorization: Bearer`` when the gateway runs with
  ``MAILGW_AUTH=entra``), so they work the same against the local dev host and a deployed Function
  App (``--url``/``--key``/``--token``, or ``MAILGW_URL``/``MAILGW_FUNCTION_KEY``/
  ``MAILGW_API_TOKEN``).
* ``failed list|replay|purge`` and ``store cleanup`` are operator commands: they work on the
  gateway's storage directly, through the same core the functions use, so they need no endpoint
  and no admin key, only storage access. Settings come from the environment, falling back to the
  ``Values`` of ``local.settings.json`` in the current directory (the environment wins): locally
  that is Azurite; against Azure set ``AzureWebJobsStorage__queueServiceUri`` /
  ``__blobServiceUri`` / ``__tableServiceUri`` (and ``MAILGW_QUEUE``, ``MAILGW_STATE_TABLE``,
  ``MAILGW_PAYLOAD_CONTAINER`` if not the defaults) and sign in with ``az login``
  (DefaultAzureCredential; the identity needs the Storage Queue, Blob and Table Data Contributor
  roles).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mimetypes
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailgw.services import Services
    from mailgw.state.record import MessageRecord

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


def _credentials(args: argparse.Namespace) -> dict[str, str]:
    """The caller's credentials as headers: a Functions key, an Entra ID token, or both."""
    headers = {}
    if args.key:
        headers["x-functions-key"] = args.key
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    return headers


def _call(
    method: str,
    url: str,
    credentials: dict[str, str],
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in {**credentials, **(headers or {})}.items():
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


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--url``/``--key``/``--token``: before the command (global) or after it (its own)."""
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS if suppress else os.environ.get("MAILGW_URL", DEFAULT_URL),
        help=f"gateway base URL (env MAILGW_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--key",
        default=argparse.SUPPRESS if suppress else os.environ.get("MAILGW_FUNCTION_KEY"),
        help="Functions key (env MAILGW_FUNCTION_KEY); not needed on the dev host",
    )
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS if suppress else os.environ.get("MAILGW_API_TOKEN"),
        help="Entra ID access token for a gateway with MAILGW_AUTH=entra (env MAILGW_API_TOKEN)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailgw",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_flags(parser, suppress=False)
    api = argparse.ArgumentParser(add_help=False)
    _connection_flags(api, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    send = commands.add_parser("send", parents=[api], help="send a message through the API")
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

    status = commands.add_parser(
        "status", parents=[api], help="a message's state (GET /api/v1/messages/{id})"
    )
    status.add_argument("id", help="the message id from the 202 answer")

    commands.add_parser(
        "health", parents=[api], help="check that the gateway and its queue are reachable"
    )

    doctor = commands.add_parser(
        "doctor",
        help="check settings, storage, transport and identity; sends nothing (exit 1: not ready)",
    )
    doctor.add_argument(
        "--mailbox",
        help="authenticate as this mailbox where the transport can (SMTP AUTH); default: the "
        "first address in MAILGW_ALLOWED_SENDERS",
    )

    failed = commands.add_parser(
        "failed",
        aliases=["poison"],
        help="failed messages, from storage: list, replay, purge (alias: poison)",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = failed.add_parser("list", help="failed messages, newest first")
    listing.add_argument("--limit", type=_positive, default=100, help="at most N (%(default)s)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    replay = failed.add_parser(
        "replay", help="send failed messages again (history kept, attempts reset)"
    )
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--all", action="store_true", help="every failed message")
    purge = failed.add_parser(
        "purge", help="delete failed messages and their kept payloads for good"
    )
    purge.add_argument("ids", nargs="*", metavar="ID")
    purge.add_argument("--all", action="store_true", help="every failed message")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    store = commands.add_parser("store", help="the state store").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    store.add_parser(
        "cleanup",
        help="apply retention now: delete expired message records and the payloads they kept "
        "(what the daily timer does at 03:30 UTC)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return _doctor(args)
    if args.command in ("failed", "poison", "store"):
        if args.action in ("replay", "purge") and bool(args.ids) == bool(args.all):
            parser.error(f"failed {args.action}: give message ids or --all (not both)")
        return operate(args)
    base = args.url.rstrip("/")
    credentials = _credentials(args)
    try:
        if args.command == "send":
            body = build_request(args)
            if args.dry_run:
                print(json.dumps(body, indent=2))
                return 0
            extra = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
            status, _, answer = _call("POST", f"{base}/api/v1/messages", credentials, body, extra)
            return _print_result(status, answer)
        if args.command == "status":
            message_id = urllib.parse.quote(args.id, safe="")
            status, _, answer = _call("GET", f"{base}/api/v1/messages/{message_id}", credentials)
            if status == 404:
                detail = answer.get("detail") if isinstance(answer, dict) else None
                print(f"mailgw: {detail or f'no message {args.id}'}", file=sys.stderr)
                return 1
            return _print_result(status, answer)
        status, _, answer = _call("GET", f"{base}/api/v1/health", credentials)
        return _print_result(status, answer)
    except urllib.error.URLError as error:
        print(f"mailgw: cannot reach {base}: {error.reason}", file=sys.stderr)
        return 1
    except OSError as error:  # a timeout or reset after connecting
        print(f"mailgw: {base}: {error}", file=sys.stderr)
        return 1


# --- operator commands: storage through the core ---------------------------------------------

SETTINGS_FILE = "local.settings.json"
#: "every failed message": the same bound ``Operations.purge_failed`` uses
ALL = 100_000
HINT_WIDTH = 60


def operator_environment(
    environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> dict[str, str]:
    """The settings the operator commands use: ``local.settings.json`` ``Values`` (if the file is
    in ``directory``), overridden by the environment, as ``func start`` merges them."""
    merged: dict[str, str] = {}
    path = (directory or Path.cwd()) / SETTINGS_FILE
    if path.is_file():
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as error:
            raise OperatorError(f"{path}: invalid JSON: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("Values", {}), dict):
            raise OperatorError(f"{path}: expected an object with a Values object")
        if document.get("IsEncrypted"):
            raise OperatorError(f"{path} is encrypted; decrypt it or set the environment")
        for name, value in (document.get("Values") or {}).items():
            if isinstance(value, bool):
                merged[name] = "true" if value else "false"
            elif isinstance(value, (str, int, float)):
                merged[name] = str(value)
    merged.update(os.environ if environ is None else environ)
    return merged


class OperatorError(Exception):
    """The operator command cannot run; the message says why."""


def open_services(env: Mapping[str, str]) -> Services:
    """The core wired from ``env`` (tests replace this with fakes). Operator commands work on
    storage and never serve the API, so its authentication settings (which an azd environment
    may hold only in part) are not theirs to check."""
    from mailgw.services import Services
    from mailgw.settings import Settings

    own = {k: v for k, v in env.items() if k != "MAILGW_AUTH" and not k.startswith("MAILGW_API_")}
    return Services(Settings.from_env(own))


def _doctor(args: argparse.Namespace) -> int:
    import logging

    from mailgw.doctor import diagnose, render
    from mailgw.storage import close_credentials

    logging.getLogger("azure").setLevel(logging.ERROR)  # the findings say it, once, with a hint

    try:
        env = operator_environment()
    except OperatorError as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            findings = await diagnose(env, args.mailbox)
        finally:
            await close_credentials()
        print(render(findings))
        return 0 if all(f.ok for f in findings) else 1

    return asyncio.run(run())


def operate(args: argparse.Namespace) -> int:
    from mailgw.settings import SettingsError
    from mailgw.storage import StorageConfigError

    try:
        services = open_services(operator_environment())
    except (OperatorError, SettingsError, StorageConfigError) as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2
    return asyncio.run(_operate_and_close(args, services))


async def _operate_and_close(args: argparse.Namespace, services: Services) -> int:
    from azure.core.exceptions import AzureError

    from mailgw.storage import StorageConfigError

    try:
        return await run_operator(args, services)
    except StorageConfigError as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2
    except AzureError as error:
        message = str(error).splitlines()[0] if str(error) else ""
        print(f"mailgw: storage failed: {type(error).__name__}: {message}", file=sys.stderr)
        return 1
    finally:
        await close_services(services)


async def close_services(services: Services) -> None:
    """Close the storage clients that were opened (and the credential of an identity-based
    connection), so no connection is left for the interpreter to complain about."""
    from mailgw.storage import close_credentials

    opened = vars(services)  # cached_property keeps what was built in the instance dict
    if "queue" in opened:
        await services.queue.close()
    if "store" in opened:
        await services.store.close()
    await close_credentials()


async def run_operator(args: argparse.Namespace, services: Services) -> int:
    ops = services.operations
    if args.command == "store":
        deleted = await ops.cleanup()
        print(f"retention: deleted {deleted} expired record(s)")
        return 0
    if args.action == "list":
        records = await ops.failed(limit=args.limit)
        if args.json:
            now = datetime.now(UTC)
            print(json.dumps([_record_json(r, now) for r in records], indent=2))
        elif records:
            print(format_failed(records))
        else:
            print("no failed messages")
        return 0
    if args.action == "replay":
        return await _replay(services, args)
    return await _purge(services, args)


async def _replay(services: Services, args: argparse.Namespace) -> int:
    from mailgw.errors import GatewayError

    ops = services.operations
    ids = list(args.ids) if args.ids else [r.id for r in await ops.failed(limit=ALL)]
    if not ids:
        print("no failed messages")
        return 0
    problems = 0
    for message_id in ids:
        try:
            record = await ops.replay(message_id)
        except GatewayError as problem:
            print(f"{message_id}: not replayed: {problem.detail}", file=sys.stderr)
            problems += 1
            continue
        print(f"{message_id}: {record.status.value} (replay {record.replays})")
    return 1 if problems else 0


async def _purge(services: Services, args: argparse.Namespace) -> int:
    from mailgw.models import MessageStatus

    ops = services.operations
    skipped = 0
    if args.all:
        targets = await ops.failed(limit=ALL)
    else:
        targets = []
        for message_id in dict.fromkeys(args.ids):
            record = await ops.store.get(message_id)
            if record is None:
                print(f"{message_id}: not found", file=sys.stderr)
                skipped += 1
            elif record.status is not MessageStatus.failed:
                print(
                    f"{message_id}: is {record.status.value}, not failed: not purged",
                    file=sys.stderr,
                )
                skipped += 1
            else:
                targets.append(record)
    if not targets:
        print("nothing to purge")
        return 1 if skipped else 0
    if not args.yes:
        print(format_failed(targets))
        question = (
            f"Delete these {len(targets)} failed message(s) and their payloads for good? [y/N] "
        )
        if not confirm(question):
            print("aborted: nothing deleted")
            return 1
    purged = await ops.purge_failed([r.id for r in targets])
    print(f"purged {purged} failed message(s)")
    return 1 if skipped else 0


def confirm(question: str) -> bool:
    """Ask on the terminal; anything but y/yes (including no terminal at all) is a no."""
    try:
        answer = input(question)
    except EOFError:
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def failed_at(record: MessageRecord) -> datetime:
    """When the message failed: its last ``failed`` step, else its last change."""
    for step in reversed(record.history):
        if step.outcome == "failed":
            return step.at
    return record.updated_at


def _record_json(record: MessageRecord, now: datetime) -> dict[str, Any]:
    body = record.public(now)
    body["failedAt"] = failed_at(record).astimezone(UTC).isoformat().replace("+00:00", "Z")
    body["from"] = record.sender
    body["source"] = record.source
    return body


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def format_failed(records: Sequence[MessageRecord]) -> str:
    """A table of failed messages: id, failed at (UTC), code, hint (truncated), sender."""
    rows = [("ID", "FAILED AT (UTC)", "CODE", "HINT", "FROM")]
    for record in records:
        error = record.last_error
        hint = (error.hint or error.message) if error else ""
        rows.append(
            (
                record.id,
                failed_at(record).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                error.code if error else "-",
                _truncate(" ".join(hint.split()), HINT_WIDTH) or "-",
                record.sender or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    raise SystemExit(main())
