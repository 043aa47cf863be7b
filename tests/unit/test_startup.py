"""A wrong setting stops the app at load, naming the setting (not at the first send)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


COUNT_FUNCTIONS = "import function_app; print(len(function_app.app.get_functions()))"


def load_app(program: str = COUNT_FUNCTIONS, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` in a fresh interpreter with only ``env`` set (settings are read at load)."""
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_app_loads_with_defaults() -> None:
    result = load_app()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "14"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAILGW_TRANSPORT": "carrier-pigeon"}, "MAILGW_TRANSPORT"),
        ({"MAILGW_CREDENTIAL": "password"}, "MAILGW_CREDENTIAL"),
        (
            {
                "MAILGW_CREDENTIAL": "federated_managed_identity",
                "AZURE_CLIENT_ID": "x",
                "MAILGW_APP_CLIENT_ID": "y",
            },
            "MAILGW_TENANT_ID",
        ),
        ({"MAILGW_GRAPH_MODE": "batch"}, "MAILGW_GRAPH_MODE"),
        ({"MAILGW_ALLOWED_SENDERS": "not-an-address"}, "MAILGW_ALLOWED_SENDERS"),
        ({"MAILGW_MAILBOX_CONCURRENCY": "10"}, "MAILGW_MAILBOX_CONCURRENCY"),
        ({"MAILGW_AUTH": "entra", "MAILGW_API_AUDIENCE": "api"}, "MAILGW_API_TENANT_ID"),
        ({"MAILGW_TELEMETRY": "loud"}, "MAILGW_TELEMETRY"),
        ({"MAILGW_EVENTS_QUEUE": "Mail_Events"}, "MAILGW_EVENTS_QUEUE"),
        ({"MAILGW_EVENTGRID_ENDPOINT": "http://topic.example.com/api/events"}, "EVENTGRID"),
    ],
)
def test_wrong_setting_stops_the_app_naming_it(env: dict[str, str], named: str) -> None:
    result = load_app(**env)
    assert result.returncode != 0
    assert "SettingsError" in result.stderr
    assert named in result.stderr.splitlines()[-1]


def test_entra_mode_makes_the_http_routes_anonymous_to_the_host() -> None:
    """The app checks the token itself, so the host must let token-bearing calls through."""
    program = (
        "import function_app\n"
        "for f in function_app.app.get_functions():\n"
        "    for b in f.get_bindings():\n"
        "        if b.type == 'httpTrigger': print(f.get_function_name(), b.auth_level)\n"
    )
    levels = {}
    for mode, extra in (
        ("keys", {}),
        ("entra", {"MAILGW_API_TENANT_ID": "t", "MAILGW_API_AUDIENCE": "a"}),
    ):
        result = load_app(program, MAILGW_AUTH=mode, **extra)
        assert result.returncode == 0, result.stderr
        levels[mode] = dict(line.split() for line in result.stdout.splitlines())
    assert levels["keys"] == {
        "submit_message": "FUNCTION",
        "submit_batch": "FUNCTION",
        "message_status": "FUNCTION",
        "cancel_message": "FUNCTION",  # a key is every caller at once (docs/trust-model.md)
        "replay_message": "ADMIN",  # replay needs the master key
        "mailbox_usage": "ADMIN",  # an operator's view of every sender's budgets
        "health": "ANONYMOUS",
        "openapi": "ANONYMOUS",
    }
    assert levels["entra"] == dict.fromkeys(levels["keys"], "ANONYMOUS")


def test_the_failure_alert_names_the_poison_function() -> None:
    """The Bicep alert (and its copy in docs/operations.md) counts the poison function's executions
    (requests are never sampled): renaming the function must not silently break the alert."""
    program = (
        "import function_app\n"
        "for f in function_app.app.get_functions():\n"
        "    for b in f.get_bindings():\n"
        "        if b.type == 'queueTrigger' and b.queue_name.endswith('-poison'):\n"
        "            print(f.get_function_name())\n"
    )
    result = load_app(program)
    assert result.returncode == 0, result.stderr
    (poison_function,) = result.stdout.split()
    where = f'| where name in ("{poison_function}", "mailgw.{poison_function}")'
    alerts = (ROOT / "infra" / "modules" / "alerts.bicep").read_text(encoding="utf-8")
    assert f"var failedQuery = 'requests {where}'" in alerts
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"requests\n{where}\n" in docs


def test_every_function_is_in_the_telemetry_contract() -> None:
    """docs/telemetry.md lists the functions the workbook and the alerts may name; the app
    registers no function that the contract does not know."""
    program = (
        "import function_app\n"
        "for f in function_app.app.get_functions(): print(f.get_function_name())"
    )
    result = load_app(program)
    assert result.returncode == 0, result.stderr
    contract = (ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8")
    listed = contract.split("## Functions", 1)[1].split("##", 1)[0]
    for name in result.stdout.split():
        assert re.search(rf"(^|[\s,]){name}([\s,(]|$)", listed), name
