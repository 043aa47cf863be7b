"""``mailgw``: the gateway from a terminal.

Two kinds of commands:

* ``send``, ``status``, ``cancel``, ``health`` talk to the public HTTP API through
  :mod:`mailgw.client`, as any caller would (Functions key in
  ``x-functions-key``, or an Entra ID token as ``Authorization: Bearer`` when the gateway runs with
  ``MAILGW_AUTH=entra``), so they work the same against the local dev host and a deployed Function
  App (``--url``/``--key``/``--token``, or ``MAILGW_URL``/``MAILGW_FUNCTION_KEY``/
  ``MAILGW_API_TOKEN``).
* ``events tail`` prints outcome events from the events queue (``MAILGW_EVENTS_QUEUE``) as they
  arrive; like the operator commands it reads storage directly.
* ``failed list|replay|purge``, ``store cleanup``, ``templates put|list|show`` and ``top`` are
  operator commands: they work on the gateway's storage directly, through the same core the
  functions use, so they need no endpoint
  and no admin key, only storage access. Settings come from the environment, falling back to the
  ``Values`` of ``local.settings.json`` in the current directory (the environment wins): locally
  that is Azurite; against Azure set ``AzureWebJobsStorage__queueServiceUri`` /
  ``__blobServiceUri`` / ``__tableServiceUri`` (and ``MAILGW_QUEUE``, ``MAILGW_STATE_TABLE``,
  ``MAILGW_PAYLOAD_CONTAINER``, ``MAILGW_TEMPLATE_CONTAINER`` if not the defaults) and sign in
  with ``az login`` (DefaultAzureCredential; the identity needs the Storage Queue, Blob and Table
  Data Contributor roles).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.utils
import errno
import json
import mimetypes
import os
import re
import shutil
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailgw.services import Services
    from mailgw.settings import Settings
    from mailgw.state.record import MessageRecord

DEFAULT_URL = "http://127.0.0.1:7071"
#: one address of a comma list: commas inside "quoted names" or <angle brackets> do not split
_LIST_ITEM = re.compile(r'(?:"[^"]*"|<[^>]*>|[^,])+')


def recipients(text: str) -> list[str | dict[str, str]]:
    """``a@x.com, "Doe, Jo" <jo@x.com>`` as the API's recipients: a plain address as a string,
    one with a display name as ``{"address", "name"}``."""
    found: list[str | dict[str, str]] = []
    for item in (piece.strip() for piece in _LIST_ITEM.findall(text)):
        if not item:
            continue
        name, address = email.utils.parseaddr(item) if item.endswith(">") else ("", "")
        if address and name:
            found.append({"address": address, "name": name})
        else:
            found.append(address or item)  # the API says what is wrong with a bad one
    return found


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


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OSError(errno.EILSEQ, "not UTF-8 text", path) from None


def _template_data(text: str) -> Any:
    """``--data``: JSON, or ``@FILE`` holding JSON."""
    raw = _read_text(text[1:]) if text.startswith("@") else text
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"--data is not JSON: {error}") from None


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"from": args.sender, "to": args.to}
    if args.template:
        body["template"] = args.template
        body["templateData"] = _template_data(args.data) if args.data else {}
    if args.subject or not args.template:  # with a template, the API says a subject is too many
        body["subject"] = args.subject
    for key in ("cc", "bcc"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.reply_to:
        body["replyTo"] = args.reply_to
    if args.text is not None:
        body["text"] = args.text
    if args.text_file:
        body["text"] = _read_text(args.text_file)
    if args.html is not None:
        body["html"] = args.html
    if args.html_file:
        body["html"] = _read_text(args.html_file)
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
    if args.sandbox:
        body["sandbox"] = True
    return body


def describe_failure(status: int, body: Any) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    head = f"mailgw: HTTP {status} {reason}".rstrip()
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        lines = [f"{head}: {body['title']}" if body.get("title") else head]
        if body.get("detail"):
            lines.append(f"  {body['detail']}")
        for error in body.get("errors") or []:
            if isinstance(error, dict):
                lines.append(f"  {error.get('field')}: {error.get('message')}")
        return "\n".join(lines)
    if body is None or body == "":
        return f"{head} (empty body)"
    text = body if isinstance(body, str) else json.dumps(body)
    return f"{head}\n  {text[:2000]}"


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
    send.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    for flag in ("--to", "--cc", "--bcc", "--reply-to"):
        send.add_argument(
            flag,
            type=recipients,
            action="extend",
            default=[],
            required=flag == "--to",
            metavar="ADDRESS[,ADDRESS...]",
            help="repeat it, or give a comma list; 'Name <a@example.com>' adds a display name",
        )
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
    send.add_argument("--template", metavar="NAME", help="a stored template instead of --subject, "
                      "--text and --html (mailgw templates list)")  # fmt: skip
    send.add_argument("--data", metavar="JSON|@FILE", help="the template's data (templateData)")
    send.add_argument("--sandbox", action="store_true",
                      help="run everything but the transport: nothing is mailed")  # fmt: skip
    send.add_argument("--idempotency-key")
    send.add_argument("--dry-run", action="store_true", help="print the JSON body, send nothing")

    status = commands.add_parser(
        "status", parents=[api], help="a message's state (GET /api/v1/messages/{id})"
    )
    status.add_argument("id", help="the message id from the 202 answer")

    cancel = commands.add_parser(
        "cancel",
        parents=[api],
        help="cancel a scheduled or queued message no attempt has started (DELETE)",
    )
    cancel.add_argument("id", help="the message id from the 202 answer")

    commands.add_parser(
        "health", parents=[api], help="check that the gateway and its queue are reachable"
    )

    usage = commands.add_parser(
        "usage",
        parents=[api],
        help="a sender mailbox's sending budgets and their use (GET "
        "/api/v1/mailboxes/{address}/usage, admin key); without ADDRESS, every mailbox's, "
        "from storage",
    )
    usage.add_argument("address", nargs="?", metavar="ADDRESS")

    templates = commands.add_parser(
        "templates", help="message templates, in storage: put, list, show"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    put = templates.add_parser("put", help="store a new version of a template")
    put.add_argument("name", help="1-64 lowercase letters, digits, '.', '_' or '-'")
    put.add_argument("--subject", required=True, help="Jinja2 text, e.g. 'Receipt {{ order }}'")
    put.add_argument("--text", metavar="FILE", help="the plain text part (Jinja2)")
    put.add_argument("--html", metavar="FILE", help="the HTML part (Jinja2, autoescaped)")
    templates.add_parser("list", help="stored templates, their newest version")
    show = templates.add_parser("show", help="a template's parts as JSON")
    show.add_argument("name")
    show.add_argument("--version", type=_positive, help="this version (default: the newest)")

    doctor = commands.add_parser(
        "doctor",
        help="check settings, storage, transport and identity; sends nothing (exit 1: not ready)",
    )
    doctor.add_argument(
        "--running",
        action="store_true",
        help="check the gateway `make run` is running from this folder (its settings, stand-ins "
        "included, from .mailgw/running.json) instead of the environment + local.settings.json",
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

    top = commands.add_parser(
        "top",
        help="live view of the queues, send rates and newest failures, from storage (Ctrl-C: quit)",
    )
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    top.add_argument(
        "--interval", type=_positive, default=5, help="seconds between refreshes (%(default)s)"
    )

    events = commands.add_parser(
        "events", help="outcome events (docs/events.md): tail the events queue"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = events.add_parser(
        "tail",
        help="print events from the events queue as they arrive, taking them off the queue "
        "(it is the queue's consumer; --peek only looks); Ctrl-C stops",
    )
    tail.add_argument("--queue", help="the events queue (default: MAILGW_EVENTS_QUEUE)")
    tail.add_argument("--json", action="store_true", help="each event as one line of JSON")
    tail.add_argument(
        "--peek",
        action="store_true",
        help="leave the events for their consumer: print the oldest (at most 32) and stop",
    )
    tail.add_argument("--count", type=_positive, help="stop after N events")
    tail.add_argument(
        "--timeout", type=float, help="stop after this many seconds without a new event"
    )

    from mailgw.smtp_intake.admin import add_parser as add_smtp_clients

    add_smtp_clients(commands)
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
    if args.command == "events":
        return events_tail(args)
    if args.command == "smtp-clients":
        from mailgw.smtp_intake.admin import run as smtp_clients

        try:
            env, sources = _settings_and_sources()
        except OperatorError as error:
            print(f"mailgw: {error}", file=sys.stderr)
            return 2
        return smtp_clients(args, env, sources)
    if args.command in ("failed", "poison", "store", "templates", "top") or (
        args.command == "usage" and not args.address
    ):
        if (
            args.command in ("failed", "poison")
            and args.action in ("replay", "purge")
            and bool(args.ids) == bool(args.all)
        ):
            parser.error(f"failed {args.action}: give message ids or --all (not both)")
        return operate(args)
    base = args.url.rstrip("/")
    body = None
    if args.command == "send":
        try:  # a local file problem, told apart from the network's
            body = build_request(args)
        except (OSError, ValueError) as error:
            if isinstance(error, OSError):
                reason = error.strerror or error
                print(f"mailgw: cannot read {error.filename}: {reason}", file=sys.stderr)
            else:
                print(f"mailgw: {error}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(json.dumps(body, indent=2))
            return 0
    return _call_api(args, base, body)


def _call_api(args: argparse.Namespace, base: str, body: Any) -> int:
    """The API commands, through :mod:`mailgw.client` (it retries 503s and timeouts; a send
    always carries an Idempotency-Key, so a retry cannot queue it twice)."""
    import httpx

    from mailgw.client import ApiError, Client

    paths = {"status": "/api/v1/messages/{id}", "cancel": "/api/v1/messages/{id}"}
    try:
        with Client(base, key=args.key, token=args.token) as client:
            if args.command == "send":
                answer = client.request(
                    "POST", "/api/v1/messages", body, idempotency_key=args.idempotency_key
                )
            elif args.command == "usage":
                answer = client.usage(args.address).model_dump(mode="json", by_alias=True)
            elif args.command in paths:
                path = paths[args.command].format(id=urllib.parse.quote(args.id, safe=""))
                answer = client.request("GET" if args.command == "status" else "DELETE", path)
            else:
                answer = client.request("GET", "/api/v1/health")
    except ApiError as error:
        print(describe_failure(error.status, error.body), file=sys.stderr)
        return 1
    except httpx.ConnectError as error:
        print(f"mailgw: cannot reach {base}: {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:  # a timeout or reset after connecting
        print(f"mailgw: {base}: {error or type(error).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if not isinstance(answer, str) else answer)
    return 0


# --- operator commands: storage through the core ---------------------------------------------

#: "every failed message": the same bound ``Operations.purge_failed`` uses
ALL = 100_000
HINT_INDENT = "    -> "


def operator_environment(
    environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> dict[str, str]:
    """The settings the operator commands use: ``local.settings.json`` ``Values`` (if the file is
    in ``directory``) under the environment, as the dev host merges them (a storage connection
    the environment sets wins as a whole: :mod:`mailgw.local_settings`)."""
    return _settings_and_sources(environ, directory)[0]


def _settings_and_sources(
    environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    from mailgw.local_settings import LocalSettingsError, merged_settings

    try:
        return merged_settings(os.environ if environ is None else environ, directory or Path.cwd())
    except LocalSettingsError as error:
        raise OperatorError(str(error)) from None


def using_line(settings: Settings, sources: Mapping[str, str]) -> str:
    """Which storage and queue a command works on, and where that setting came from."""
    connection = settings.storage()
    origin = sources.get(connection.name) or next(
        (sources[n] for n in sources if n.startswith(f"{connection.name}__")), "the environment"
    )
    return (
        f"mailgw: storage {connection.describe()} from {origin}, queue {settings.queue}, "
        f"state table {settings.state_table}"
    )


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
    from mailgw.local_run import RunningError, read_running
    from mailgw.storage import close_credentials

    logging.getLogger("azure").setLevel(logging.ERROR)  # the findings say it, once, with a hint

    try:
        env, _ = _settings_and_sources()
        if args.running:
            running = read_running(Path.cwd())
            env, missing = running.environment(env)
            print(f"mailgw: checking the gateway running at {running.url}", file=sys.stderr)
            for name, url in running.standins.items():
                print(f"mailgw: {name} is played by a local stand-in at {url}", file=sys.stderr)
            for name in missing:
                print(f"mailgw: {name} (a secret) is not set here: not checked", file=sys.stderr)
        else:
            _note_running_gateway()
    except (OperatorError, RunningError) as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            findings = await diagnose(env, args.mailbox)
        finally:
            await close_credentials()
        print(render(findings))
        return 0 if all(f.ok for f in findings) else 1

    with _app_environment(env):
        return asyncio.run(run())


@contextlib.contextmanager
def _app_environment(env: Mapping[str, str]) -> Iterator[None]:
    """The settings reach the app as its process environment, and the SDKs read some from there
    only (azure-identity's ``IDENTITY_ENDPOINT``): a check runs with exactly the app's settings
    there, and the caller's environment is back afterwards."""
    from mailgw.local_run import SETTING_PREFIXES

    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n not in env and n.startswith(SETTING_PREFIXES)]:
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _note_running_gateway() -> None:
    """Plain ``doctor`` checks the files; say so when ``make run`` runs something else here."""
    from mailgw.local_run import RunningError, read_running

    try:
        running = read_running(Path.cwd())
    except RunningError:
        return
    print(
        "mailgw: checking the environment and local.settings.json; to check the gateway "
        f"`make run` is running at {running.url} (stand-ins included): mailgw doctor --running",
        file=sys.stderr,
    )


def events_tail(args: argparse.Namespace) -> int:
    """``mailgw events tail``: the queue from --queue, else MAILGW_EVENTS_QUEUE of the settings."""
    from mailgw.settings import SettingsError
    from mailgw.storage import StorageConfigError

    try:
        env, sources = _settings_and_sources()
        settings = open_services(env).settings
        queue = args.queue or settings.events_queue
        if not queue:
            raise OperatorError(
                "no events queue: set MAILGW_EVENTS_QUEUE (make run uses mail-events) or --queue"
            )
        print(f"{using_line(settings, sources)}, events queue {queue}", file=sys.stderr)
    except (OperatorError, SettingsError, StorageConfigError) as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2

    def show(event: Any) -> None:
        from mailgw.events.tail import format_event

        print(json.dumps(event) if args.json else format_event(event), flush=True)

    async def run() -> int:
        from azure.core.exceptions import AzureError

        from mailgw.events.tail import follow
        from mailgw.storage import close_credentials, queue_client

        # No decoding policy: the tail reads Base64 and plain JSON alike (mailgw.events.tail).
        client = queue_client(settings.storage(), queue, message_decode_policy=None)
        try:
            await follow(client, show, peek=args.peek, count=args.count, idle_timeout=args.timeout)
        except AzureError as error:
            message = str(error).splitlines()[0] if str(error) else ""
            print(f"mailgw: storage failed: {type(error).__name__}: {message}", file=sys.stderr)
            return 1
        finally:
            await client.close()
            await close_credentials()
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0


def operate(args: argparse.Namespace) -> int:
    from mailgw.settings import SettingsError
    from mailgw.storage import StorageConfigError

    try:
        env, sources = _settings_and_sources()
        services = open_services(env)
        print(using_line(services.settings, sources), file=sys.stderr)
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
    except ValueError as error:  # what the SDKs raise for a setting they cannot use
        print(f"mailgw: storage settings unusable: {error}", file=sys.stderr)
        return 2
    finally:
        await close_services(services)


async def close_services(services: Services) -> None:
    """Close the storage clients that were opened (and the credential of an identity-based
    connection), so no connection is left for the interpreter to complain about."""
    from mailgw.storage import close_credentials

    opened = vars(services)  # cached_property keeps what was built in the instance dict
    if "events" in opened:  # a replay publishes its event
        await services.events.close()
    if "queue" in opened:
        await services.queue.close()
    if "pacer" in opened:  # give this instance's unused budget back before the table closes
        await services.pacer.close()
    if "store" in opened:
        await services.store.close()
    if "templates" in opened:
        await services.templates.close()
    await close_credentials()


async def run_operator(args: argparse.Namespace, services: Services) -> int:
    if args.command == "templates":
        return await _templates(services, args)
    if args.command == "usage":
        pacer = services.pacer
        shown = [await pacer.usage(mailbox) for mailbox in await pacer.mailboxes()]
        print(json.dumps([u.model_dump(mode="json", by_alias=True) for u in shown], indent=2))
        return 0
    ops = services.operations
    if args.command == "top":
        from mailgw.top import top

        return await top(services, once=args.once, interval=args.interval)
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


async def _templates(services: Services, args: argparse.Namespace) -> int:
    from mailgw.errors import GatewayError
    from mailgw.templates.render import TemplateInvalid

    store = services.templates
    try:
        if args.action == "put":
            text = _read_text(args.text) if args.text else None
            html = _read_text(args.html) if args.html else None
            stored = await store.put(args.name, subject=args.subject, text=text, html=html)
            print(f"{stored.name}: version {stored.version} stored")
        elif args.action == "list":
            summaries = await store.summaries()
            for item in summaries:
                when = item.updated_at.strftime("%Y-%m-%d %H:%M:%S") if item.updated_at else "-"
                print(f"{item.name}  version {item.latest}  ({item.versions} in all, {when} UTC)")
            if not summaries:
                print("no templates")
        else:
            found = (
                await store.get(args.name, args.version)
                if args.version
                else await store.latest(args.name)
            )
            print(json.dumps(found.to_json(), indent=2, ensure_ascii=False))
    except (TemplateInvalid, OSError) as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2
    except GatewayError as error:
        print(f"mailgw: {error.detail}", file=sys.stderr)
        return 1
    return 0


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


def format_failed(records: Sequence[MessageRecord], width: int | None = None) -> str:
    """A table of failed messages (id, failed at in UTC, code, sender), each with its whole hint
    on the lines below, wrapped to the terminal: a hint is what the operator acts on, so it is
    never cut."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = [("ID", "FAILED AT (UTC)", "CODE", "FROM")]
    hints = [""]
    for record in records:
        error = record.last_error
        rows.append(
            (
                record.id,
                failed_at(record).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                error.code if error else "-",
                record.sender or "-",
            )
        )
        hints.append(" ".join(((error.hint or error.message) if error else "").split()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row, hint in zip(rows, hints, strict=True):
        cells = [*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]
        lines.append("  ".join(cells).rstrip())
        if hint:
            lines.extend(
                textwrap.wrap(
                    hint,
                    max(width - 1, 40),
                    initial_indent=HINT_INDENT,
                    subsequent_indent=" " * len(HINT_INDENT),
                    break_on_hyphens=False,
                    break_long_words=False,  # a URL or a command stays whole, to copy
                )
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
