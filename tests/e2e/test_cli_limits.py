"""``mailgw send`` against the dev host with what a newcomer tries first: a large attachment.

As a user runs it (the installed command, in its own process). With the settings ``make run``
starts from, the app, not the host, answers a body over its limit: its documented problem,
shown by the command with the HTTP status, title and detail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway_host import ROOT, DevHost

from support import run_mailgw

SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
MiB = 1024 * 1024


def test_the_sample_lets_the_app_answer_before_the_host() -> None:
    assert int(SAMPLE["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"]) > int(
        SAMPLE["MAILGW_MAX_REQUEST_BYTES"]
    )


@pytest.mark.slow
def test_an_80_mb_attachment_gets_the_apps_problem(
    start_devhost: Callable[..., DevHost], tmp_path: Path
) -> None:
    host = start_devhost(
        FUNCTIONS_REQUEST_BODY_SIZE_LIMIT=SAMPLE["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"],
        MAILGW_MAX_REQUEST_BYTES=SAMPLE["MAILGW_MAX_REQUEST_BYTES"],
    )
    with (tmp_path / "report.pdf").open("wb") as report:
        report.truncate(80 * MiB)  # ~107 MB once Base64 in JSON: over the app's 100 MiB
    result = run_mailgw(
        "send", "--url", host.base_url, "--from", "noreply@contoso.com", "--to", "a@example.com",
        "--subject", "Report", "--text", "attached", "--attach", "report.pdf", cwd=tmp_path,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    # the app's too-large problem (its title is the core's wording), not the host's refusal
    assert re.fullmatch(r"mailgw: HTTP 413 Request Entity Too Large: \w+ too large", lines[0])
    assert "Request body too large" not in lines[0]
    assert re.fullmatch(
        r"  The request body is \d+ bytes; the limit is 104857600 bytes\.", lines[1]
    ), lines


def test_when_the_host_refuses_the_command_still_says_why(
    start_devhost: Callable[..., DevHost], tmp_path: Path
) -> None:
    """A host limit below the app's (a stale local.settings.json): the host's own 413 is a
    problem too, naming the setting to raise."""
    host = start_devhost(FUNCTIONS_REQUEST_BODY_SIZE_LIMIT=str(MiB))
    (tmp_path / "big.bin").write_bytes(b"\0" * (2 * MiB))
    result = run_mailgw(
        "send", "--url", host.base_url, "--from", "noreply@contoso.com", "--to", "a@example.com",
        "--text", "attached", "--attach", "big.bin", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "mailgw: HTTP 413 Request Entity Too Large: Request body too large", lines
    assert "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT" in lines[1]
