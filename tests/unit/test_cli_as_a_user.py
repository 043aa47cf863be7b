"""The ``mailgw`` command as a user runs it, in its own process: the request it builds from its
flags, and what it says when something is wrong (a local file, or the server's answer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import run_mailgw

SEND = ["send", "--from", "noreply@contoso.com", "--subject", "Hi", "--text", "Hello"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--attach", "report.pdf"], "mailgw: cannot read report.pdf: No such file or directory"),
        (["--inline", "logo.png:logo"], "mailgw: cannot read logo.png: No such file or directory"),
        (["--html-file", "body.html"], "mailgw: cannot read body.html: No such file or directory"),
        (["--text-file", "."], "mailgw: cannot read .: Is a directory"),
        (["--text-file", "binary.bin"], "mailgw: cannot read binary.bin: not UTF-8 text"),
    ],
)
def test_an_unreadable_file_is_a_local_problem_not_a_network_one(
    tmp_path: Path, flags: list[str], expected: str
) -> None:
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00\x81")
    # port 9 (discard): nothing listens, so a network attempt would say "cannot reach"
    result = run_mailgw(*SEND, "--to", "a@example.com", "--url", "http://127.0.0.1:9", *flags,
                        cwd=tmp_path)  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [expected]


def test_recipients_repeat_or_come_as_comma_lists(tmp_path: Path) -> None:
    result = run_mailgw(
        *SEND,
        "--dry-run",
        "--to", "a@example.com,b@example.com",
        "--to", "c@example.com",
        "--cc", '"Doe, Jo" <jo@example.com>, d@example.com',
        "--bcc", "audit@contoso.com",
        "--reply-to", "r@example.com,s@example.com",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["to"] == ["a@example.com", "b@example.com", "c@example.com"]
    assert body["cc"] == [{"address": "jo@example.com", "name": "Doe, Jo"}, "d@example.com"]
    assert body["bcc"] == ["audit@contoso.com"]
    assert body["replyTo"] == ["r@example.com", "s@example.com"]


def test_send_help_says_how_to_give_several_recipients(tmp_path: Path) -> None:
    result = run_mailgw("send", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--to", "--cc", "--bcc", "--reply-to"):
        assert f"{flag} ADDRESS[,ADDRESS...]" in text
    assert "repeat it, or give a comma list" in text
