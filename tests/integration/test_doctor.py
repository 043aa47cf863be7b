"""`mailgw doctor` on real Azurite: what it reports when the gateway is ready, and the reason and
hint for each thing that would stop a delivery. Nothing is sent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from mailgw import cli
from mailgw.doctor import Finding, diagnose
from mailgw.queue import MailQueue
from mailgw.settings import Settings
from support import DEAD_STORAGE, TEST_SEAL


def gateway_env(azurite: Any, tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string if azurite else "",
        "MAILGW_QUEUE": f"doctor-{uuid.uuid4().hex[:12]}",
        "MAILGW_STATE_TABLE": f"doctor{uuid.uuid4().hex[:12]}",
        "MAILGW_TRANSPORT": "outbox",
        "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
        "MAILGW_ALLOWED_SENDERS": "noreply@contoso.com",
        **overrides,
    }


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check.split()[0] if f.check.startswith("transport") else f.check: f for f in findings}


async def test_a_fresh_local_gateway_is_ready(azurite: Any, tmp_path: Path) -> None:
    env = gateway_env(azurite, tmp_path)
    findings = await diagnose(env)
    assert all(f.ok for f in findings), findings
    checks = [f.check for f in findings]
    queue = env["MAILGW_QUEUE"]
    assert checks == [
        "settings",
        "senders",
        f"queue {queue}",
        f"poison queue {queue}-poison",
        f"poison-poison queue {queue}-poison-poison",
        f"state table {env['MAILGW_STATE_TABLE']}",
        "payload container mail-payloads",
        "transport outbox",
    ]
    assert "not created yet" in findings[2].detail  # the first message creates it
    assert str(tmp_path / "outbox") in findings[-1].detail
    assert list((tmp_path / "outbox").iterdir()) == []  # the probe left nothing behind


async def test_queue_depth_and_failed_messages_are_reported(azurite: Any, tmp_path: Path) -> None:
    env = gateway_env(azurite, tmp_path)
    settings = Settings.from_env(env)
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    try:
        await queue.queue().create_queue()
        await queue.queue(settings.poison_queue).create_queue()
        await queue.queue(settings.poison_queue).send_message("{}")
    finally:
        await queue.close()
    findings = await diagnose(env)
    poison = next(f for f in findings if f.check.startswith("poison queue"))
    assert poison.ok and "1 message(s) waiting" in poison.detail
    assert "mailgw failed list" in poison.detail
    main = next(f for f in findings if f.check == f"queue {settings.queue}")
    assert main.detail == "reachable, 0 message(s) waiting"


async def test_failures_that_could_not_be_recorded_fail_the_check(
    azurite: Any, tmp_path: Path
) -> None:
    env = gateway_env(azurite, tmp_path)
    settings = Settings.from_env(env)
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container, TEST_SEAL)
    try:
        client = queue.queue(f"{settings.poison_queue}-poison")
        await client.create_queue()
        await client.send_message("{}")
    finally:
        await queue.close()
    findings = await diagnose(env)
    stuck = next(f for f in findings if f.check.startswith("poison-poison queue"))
    assert not stuck.ok
    assert "1 message(s) whose failure could not be recorded" in stuck.detail
    assert "sweep_poison_poison" in stuck.hint


async def test_an_empty_sender_policy_is_reported(azurite: Any, tmp_path: Path) -> None:
    findings = await diagnose(gateway_env(azurite, tmp_path, MAILGW_ALLOWED_SENDERS=""))
    senders = next(f for f in findings if f.check == "senders")
    assert not senders.ok and "403" in senders.detail and "*@domain" in senders.hint


async def test_a_wrong_setting_stops_the_diagnosis_naming_it(tmp_path: Path) -> None:
    findings = await diagnose({"MAILGW_TRANSPORT": "fax"})
    assert [(f.check, f.ok) for f in findings] == [("settings", False)]
    assert "MAILGW_TRANSPORT" in findings[0].detail
    missing = await diagnose({"MAILGW_CREDENTIAL": "federated_managed_identity"})
    assert "AZURE_CLIENT_ID" in missing[0].detail


async def test_unreachable_storage_fails_every_storage_check_with_a_hint(tmp_path: Path) -> None:
    dead = DEAD_STORAGE
    env = gateway_env(None, tmp_path, AzureWebJobsStorage=dead)
    findings = await diagnose(env)
    storage = [f for f in findings if f.check.split()[0] in ("queue", "poison", "state", "payload")]
    assert len(storage) == 4
    for finding in storage:
        assert not finding.ok, finding
        assert "Azurite" in finding.hint


def test_the_command_exits_1_when_not_ready_and_0_when_ready(
    azurite: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json here: the environment is the settings
    for name, value in gateway_env(azurite, tmp_path, MAILGW_ALLOWED_SENDERS="").items():
        monkeypatch.setenv(name, value)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL senders: MAILGW_ALLOWED_SENDERS is empty" in out
    assert "ok   transport outbox" in out
    monkeypatch.setenv("MAILGW_ALLOWED_SENDERS", "*@contoso.com")
    assert cli.main(["doctor"]) == 0
    assert "FAIL" not in capsys.readouterr().out


async def test_missing_or_partial_storage_settings_are_findings_not_crashes(
    tmp_path: Path,
) -> None:
    env = gateway_env(None, tmp_path)
    del env["AzureWebJobsStorage"]
    findings = await diagnose(env)
    storage = next(f for f in findings if f.check == "storage")
    assert not storage.ok and "AzureWebJobsStorage" in storage.detail
    assert findings[-1].check == "transport outbox" and findings[-1].ok  # the rest still ran

    partial = gateway_env(
        None,
        tmp_path,
        AzureWebJobsStorage__queueServiceUri="https://127.0.0.1:9/devstoreaccount1",
        AzureWebJobsStorage__credential="managedidentity",
    )
    del partial["AzureWebJobsStorage"]
    findings = await diagnose(partial)
    table = next(f for f in findings if f.check.startswith("state table"))
    assert not table.ok and "tableServiceUri" in table.detail

    plain_http = {**partial, "AzureWebJobsStorage__queueServiceUri": "http://127.0.0.1:9/x"}
    findings = await diagnose(plain_http)
    queue = next(f for f in findings if f.check == f"queue {plain_http['MAILGW_QUEUE']}")
    assert not queue.ok and "HTTPS" in queue.detail  # the SDK's own refusal, as a finding
