"""``mailgw smtp-clients add|list|revoke`` as an operator runs it, on Azurite; only hashes kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailgw.smtp_intake.clients import ClientStore
from mailgw.storage import StorageConnection
from support import run_captured

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(azurite: Any) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "AzureWebJobsStorage": azurite.connection_string,
        "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
        "MAILGW_TRANSPORT": "outbox",
        "MAILGW_SMTP_INTAKE_CLIENTS_TABLE": f"clients{uuid.uuid4().hex[:12]}",
    }


def mailgw(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_captured([sys.executable, "-m", "mailgw", *args], cwd=tmp_path, env=env)


async def test_add_json_list_and_revoke(env: dict[str, str], tmp_path: Path) -> None:
    added = mailgw(
        env,
        tmp_path,
        "smtp-clients",
        "add",
        "scanner",
        "--allow-sender",
        "scanner@contoso.com",
        "--allow-sender",
        "*@contoso.com",
        "--ip",
        "10.1.0.0/16",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    shown = json.loads(added.stdout)
    assert shown["username"] == "scanner" and len(shown["password"]) >= 32

    store = ClientStore(
        StorageConnection.from_settings("AzureWebJobsStorage", env),
        env["MAILGW_SMTP_INTAKE_CLIENTS_TABLE"],
    )
    try:
        entity = await store.table().get_entity("smtpclient", "scanner")
        assert shown["password"] not in json.dumps(dict(entity), default=str)
        assert str(entity["passwordHash"]).startswith("$argon2id$")
        assert await store.authenticate("scanner", shown["password"]) is not None
        assert await store.authenticate("scanner", "wrong") is None

        again = mailgw(
            env, tmp_path, "smtp-clients", "add", "scanner", "--allow-sender", "x@contoso.com"
        )
        assert again.returncode == 2 and "exists" in again.stderr

        listed = mailgw(env, tmp_path, "smtp-clients", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (client,) = json.loads(listed.stdout)
        assert client["allowedSenders"] == ["scanner@contoso.com", "*@contoso.com"]
        assert client["ips"] == ["10.1.0.0/16"] and client["revokedAt"] is None
        assert "password" not in listed.stdout.lower()
        # as every operator command, it says which storage it works on (the password stays out)
        assert "mailgw: storage " in listed.stderr and "SMTP clients table" in listed.stderr

        revoked = mailgw(env, tmp_path, "smtp-clients", "revoke", "scanner")
        assert revoked.returncode == 0, revoked.stderr
        assert await store.authenticate("scanner", shown["password"]) is None
        assert mailgw(env, tmp_path, "smtp-clients", "revoke", "nobody").returncode == 1
    finally:
        await store.close()


@pytest.mark.parametrize(
    "args",
    [
        ["Bad Name", "--allow-sender", "a@contoso.com"],
        ["ok", "--allow-sender", "not-an-address"],
        ["ok", "--allow-sender", "a@contoso.com", "--ip", "10.0.0.0/99"],
    ],
)
def test_bad_definitions_are_refused(env: dict[str, str], tmp_path: Path, args: list[str]) -> None:
    result = mailgw(env, tmp_path, "smtp-clients", "add", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("mailgw: ")
