"""``mailgw smtp-clients add|list|revoke``: the SMTP intake's clients, from the operator's shell.

``add`` shows the generated password once (``--json``: ``{"username", "password"}`` on stdout,
for scripts); only its argon2 hash is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any


def add_parser(commands: Any) -> None:
    clients = commands.add_parser(
        "smtp-clients", help="the SMTP intake's clients (docs/smtp-intake.md)"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    add = clients.add_parser("add", help="create a client; its password is shown once")
    add.add_argument("name", help="the SMTP username (lower case, letters, digits, . _ -)")
    add.add_argument(
        "--allow-sender",
        action="append",
        required=True,
        metavar="ADDRESS_OR_*@DOMAIN",
        help="a sender this client may use (repeatable); within MAILGW_ALLOWED_SENDERS",
    )
    add.add_argument("--ip", action="append", default=[], metavar="CIDR", help="allowed source")
    add.add_argument("--max-message-bytes", type=int, default=0, help="its own size limit")
    add.add_argument("--per-minute", type=int, default=0, help="its own messages per minute")
    add.add_argument("--json", action="store_true", help='print {"username", "password"}')
    listing = clients.add_parser("list", help="every client (never a password or hash)")
    listing.add_argument("--json", action="store_true")
    revoke = clients.add_parser("revoke", help="revoke a client: its next login fails")
    revoke.add_argument("name")


def run(
    args: argparse.Namespace, env: Mapping[str, str], sources: Mapping[str, str] | None = None
) -> int:
    """``sources``: where each setting came from, for the line that says which storage is used."""
    import asyncio

    from mailgw.cli import using_line
    from mailgw.settings import Settings, SettingsError
    from mailgw.smtp_intake.clients import ClientError, ClientStore
    from mailgw.storage import StorageConfigError

    try:
        settings = Settings.from_env(
            {k: v for k, v in env.items() if k != "MAILGW_AUTH" and not k.startswith("MAILGW_API_")}
        )
        store = ClientStore(settings.storage(), settings.smtp_intake.clients_table)
    except (SettingsError, StorageConfigError) as error:
        print(f"mailgw: {error}", file=sys.stderr)
        return 2
    table = settings.smtp_intake.clients_table
    print(f"{using_line(settings, sources or {})}, SMTP clients table {table}", file=sys.stderr)

    async def act() -> int:
        try:
            if args.action == "add":
                return await _add(store, args, settings.allowed_senders)
            if args.action == "list":
                clients = [c.describe() for c in await store.list()]
                if args.json:
                    print(json.dumps(clients, indent=2))
                for client in [] if args.json else clients:
                    state = f"revoked {client['revokedAt']}" if client["revokedAt"] else "active"
                    senders = ", ".join(client["allowedSenders"])
                    ips = ", ".join(client["ips"]) or "any IP"
                    print(f"{client['username']}\t{state}\t{senders}\t{ips}")
                return 0
            revoked = await store.revoke(args.name)
            if revoked is None:
                print(f"mailgw: no SMTP client named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.name}: its next login fails", file=sys.stderr)
            return 0
        except ClientError as error:
            print(f"mailgw: {error}", file=sys.stderr)
            return 2
        finally:
            await store.close()

    return asyncio.run(act())


async def _add(store: Any, args: argparse.Namespace, gateway: tuple[str, ...]) -> int:
    from mailgw.policy import SenderPolicy

    policy = SenderPolicy(gateway)
    outside = [s for s in args.allow_sender if not s.startswith("*@") and not policy.allows(s)]
    client, password = await store.add(
        args.name,
        args.allow_sender,
        args.ip,
        max_message_bytes=max(args.max_message_bytes, 0),
        per_minute=max(args.per_minute, 0),
    )
    for sender in outside:
        print(
            f"mailgw: note: {sender} is not in MAILGW_ALLOWED_SENDERS here; the gateway refuses "
            "it until it is",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({"username": client.name, "password": password}))
    else:
        print(f"username: {client.name}")
        print(f"password: {password}")
        print("The password is shown only now; only its hash is stored.", file=sys.stderr)
    return 0
