"""The demo SMTP client of ``make run``: made once, its password kept in ``.mailgw/`` (a local
development convenience only; in Azure, ``mailgw smtp-clients add`` shows a password once)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from mailgw.smtp_intake.clients import ClientStore


def _load(saved: Path) -> dict[str, str] | None:
    return json.loads(saved.read_text()) if saved.exists() else None


def _save(saved: Path, username: str, password: str) -> None:
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"username": username, "password": password}))
    saved.chmod(0o600)


async def ensure_demo_client(
    store: ClientStore, saved: Path, senders: list[str]
) -> tuple[str, str]:
    """(username, password) of a working demo client: the saved one if it still logs in (the
    table may have been wiped with Azurite's data), else a new one, saved for the next run."""
    known = _load(saved)
    if known and await store.authenticate(known["username"], known["password"]) is not None:
        return known["username"], known["password"]
    name = f"demo-{secrets.token_hex(3)}"
    client, password = await store.add(name, senders or ["*@contoso.com"])
    _save(saved, client.name, password)
    return client.name, password
