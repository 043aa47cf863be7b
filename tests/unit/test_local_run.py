"""The record ``make run`` keeps of what it runs (.mailgw/running.json): no secrets in it, and
the doctor finds them where ``make run`` found them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailgw.local_run import RunningError, RunningGateway, is_secret, read_running
from mailgw.storage import azurite_connection_string

ACCOUNT_KEY = "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=c2VjcmV0;"


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("MAILGW_RELAY_CLIENT_CERT", "-----BEGIN PRIVATE KEY-----", True),
        ("MAILGW_FUNCTION_KEY", "abc", True),
        ("MAILGW_API_TOKEN", "eyJ", True),
        ("AZURE_CLIENT_SECRET", "s", True),
        ("AzureWebJobsStorage", ACCOUNT_KEY, True),
        ("MAILGW_EVENTS", "https://x.blob.core.windows.net/c?sv=1&sig=abc", True),
        ("AzureWebJobsStorage", azurite_connection_string(), False),  # published, not secret
        ("AzureWebJobsStorage", "UseDevelopmentStorage=true", False),
        ("MAILGW_SMTP_TOKEN_SCOPE", "https://outlook.office365.com/.default", False),
        ("IDENTITY_HEADER", "0123abcd", False),  # the local stand-in's (see mailgw/local_run.py)
        ("MAILGW_RELAY_CLIENT_CERT", "", False),  # nothing to hide
    ],
)
def test_what_counts_as_a_secret(name: str, value: str, secret: bool) -> None:
    assert is_secret(name, value) is secret


def test_the_record_holds_the_settings_but_not_the_secrets(tmp_path: Path) -> None:
    settings = {
        "MAILGW_TRANSPORT": "graph",
        "MAILGW_GRAPH_ENDPOINT": "http://127.0.0.1:5000",
        "AzureWebJobsStorage": ACCOUNT_KEY,
        "MAILGW_RELAY_CLIENT_CERT": "-----BEGIN PRIVATE KEY-----",
        "PATH": "/usr/bin",  # the shell's, not a setting
    }
    running = RunningGateway.of("http://127.0.0.1:7071", settings, standins={"Graph": "x"})
    path = running.write(tmp_path)
    text = path.read_text()
    assert "c2VjcmV0" not in text and "PRIVATE KEY" not in text and "/usr/bin" not in text
    assert json.loads(text)["secrets"] == ["AzureWebJobsStorage", "MAILGW_RELAY_CLIENT_CERT"]
    assert (tmp_path / ".mailgw" / ".gitignore").read_text() == "*\n"

    found = read_running(tmp_path)  # this process is alive: the record is current
    env, missing = found.environment({"AzureWebJobsStorage": ACCOUNT_KEY})
    assert env["AzureWebJobsStorage"] == ACCOUNT_KEY  # from where make run had it
    assert env["MAILGW_GRAPH_ENDPOINT"] == "http://127.0.0.1:5000"
    assert missing == ["MAILGW_RELAY_CLIENT_CERT"]


def test_a_record_left_by_a_run_that_is_gone_is_refused(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    running = RunningGateway.of("http://127.0.0.1:7071", {})
    document = {**running.__dict__, "pid": int(gone.stdout)}
    (tmp_path / ".mailgw").mkdir()
    (tmp_path / ".mailgw" / "running.json").write_text(json.dumps(document))
    with pytest.raises(RunningError, match="left over from a `make run` that is gone"):
        read_running(tmp_path)
    assert os.getpid() != int(gone.stdout)
