"""The ``mailgw`` command without storage: parsing, the HTTP requests it builds, and its output,
with a fake core in place of ``Services``."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailgw import cli
from mailgw.errors import MessageNotFound, NotReplayable
from mailgw.models import ErrorInfo, MessageStatus
from mailgw.settings import Settings
from mailgw.state import Attempt, MessageRecord
from support import QuietHandler, run_mailgw, serve_http

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def failed_record(
    message_id: str,
    *,
    hint: str = "grant Send As",
    sender: str | None = "noreply@contoso.com",
    failed_minutes_ago: int = 5,
    status: MessageStatus = MessageStatus.failed,
) -> MessageRecord:
    at = NOW - timedelta(minutes=failed_minutes_ago)
    return MessageRecord(
        id=message_id,
        status=status,
        attempts=1,
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW,  # a later change (the payload kept): "failed at" is the failure step
        expires_at=NOW + timedelta(days=30),
        sender=sender,
        last_error=ErrorInfo(code="ErrorSendAsDenied", message="denied", hint=hint),
        history=[
            Attempt(at=NOW - timedelta(hours=1), outcome="queued"),
            Attempt(at=at, outcome="failed", code="ErrorSendAsDenied"),
        ],
    )


# --- a fake core ---------------------------------------------------------------------------------


@dataclass
class FakeClosable:
    closed: int = 0

    async def close(self) -> None:
        self.closed += 1


@dataclass
class FakeStore(FakeClosable):
    records: dict[str, MessageRecord] = field(default_factory=dict)

    async def get(self, message_id: str) -> MessageRecord | None:
        return self.records.get(message_id)


@dataclass
class FakeOperations:
    store: FakeStore
    calls: list[tuple[str, Any]] = field(default_factory=list)
    cleaned: int = 7

    async def failed(self, limit: int = 100) -> list[MessageRecord]:
        self.calls.append(("failed", limit))
        found = [r for r in self.store.records.values() if r.status is MessageStatus.failed]
        return found[:limit]

    async def replay(self, message_id: str) -> MessageRecord:
        self.calls.append(("replay", message_id))
        record = self.store.records.get(message_id)
        if record is None:
            raise MessageNotFound(f"No message {message_id} is known.")
        if record.status is not MessageStatus.failed:
            raise NotReplayable(f"this one is {record.status.value}.")
        record.status, record.replays = MessageStatus.queued, record.replays + 1
        return record

    async def purge_failed(self, message_ids: list[str] | None = None) -> int:
        self.calls.append(("purge", message_ids))
        assert message_ids is not None  # the command purges exactly what it showed
        for message_id in message_ids:
            del self.store.records[message_id]
        return len(message_ids)

    async def cleanup(self, now: datetime | None = None) -> int:
        self.calls.append(("cleanup", now))
        return self.cleaned


class FakeServices:
    def __init__(self, *records: MessageRecord) -> None:
        self.settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
        self.store = FakeStore(records={r.id: r for r in records})
        self.queue = FakeClosable()
        self.operations = FakeOperations(self.store)


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeServices:
    services = FakeServices(
        failed_record("m-old", failed_minutes_ago=30, sender=None),
        failed_record("m-new", hint="x" * 200),
        failed_record("m-sent", status=MessageStatus.sent),
    )
    seen: list[dict[str, str]] = []

    def open_services(env: dict[str, str]) -> FakeServices:
        seen.append(env)
        return services

    monkeypatch.setattr(cli, "open_services", open_services)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.chdir(tmp_path)
    return services


def no_input(prompt: str = "") -> str:
    raise AssertionError(f"asked {prompt!r} although it should not ask")


# --- parsing ------------------------------------------------------------------------------------


def test_parsing() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["status", "abc", "--url", "https://gw.example", "--key", "k"])
    assert (args.command, args.id, args.url, args.key) == (
        "status",
        "abc",
        "https://gw.example",
        "k",
    )
    args = parser.parse_args(["--url", "https://a.example", "status", "abc"])
    assert args.url == "https://a.example"  # before the command works as well
    args = parser.parse_args(["failed", "list", "--limit", "5", "--json"])
    assert (args.action, args.limit, args.json) == ("list", 5, True)
    assert parser.parse_args(["failed", "list"]).limit == 100
    args = parser.parse_args(["failed", "replay", "a", "b"])
    assert (args.ids, args.all) == (["a", "b"], False)
    args = parser.parse_args(["failed", "purge", "--all", "--yes"])
    assert (args.ids, args.all, args.yes) == ([], True, True)
    assert parser.parse_args(["store", "cleanup"]).action == "cleanup"
    args = parser.parse_args(["poison", "replay", "--all"])  # the design's name for `failed`
    assert (args.command, args.action, args.all) == ("poison", "replay", True)
    assert parser.parse_args(["doctor", "--mailbox", "a@b.c"]).mailbox == "a@b.c"


@pytest.mark.parametrize(
    "argv",
    [
        ["failed", "list", "--limit", "0"],
        ["failed", "list", "--limit", "many"],
        ["failed", "replay"],
        ["failed", "replay", "a", "--all"],
        ["failed", "purge"],
        ["failed", "purge", "a", "--all"],
        ["failed"],
        ["store"],
        ["status"],
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], core: FakeServices) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert core.operations.calls == []


# --- status over HTTP ----------------------------------------------------------------------------


#: answers of the stand-in gateway below to `GET /api/v1/messages/<name>`
ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "invalid": (
        400,
        "application/problem+json",
        json.dumps(
            {
                "type": "urn:mailgw:problem:invalid-request",
                "title": "Invalid send request",
                "status": 400,
                "detail": "The request breaks 2 rules; nothing was sent.",
                "errors": [
                    {"field": "to", "message": "at least one recipient is required"},
                    {"field": "text", "message": "give text or html"},
                ],
            }
        ).encode(),
    ),
    "empty": (413, "text/plain", b""),
    "proxy": (502, "text/html", b"<html><body>Bad gateway</body></html>"),
}


@dataclass
class Seen:
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def api() -> Iterator[tuple[str, Seen]]:
    """A stand-in gateway on 127.0.0.1: GET /api/v1/messages/known → 200, anything else → 404."""
    seen = Seen()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            seen.requests.append({"path": self.path, "headers": headers})
            name = self.path.rsplit("/", 1)[-1]
            if name in ANSWERS:
                status, content_type, data = ANSWERS[name]
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if self.path == "/api/v1/messages/known":
                status, body = 200, {"id": "known", "status": "sent", "attempts": 1}
                content_type = "application/json"
            else:
                status, content_type = 404, "application/problem+json"
                body = {
                    "type": "urn:mailgw:problem:not-found",
                    "title": "Message not found",
                    "status": 404,
                    "detail": "No message a/b is known (unknown id, or older than the retention "
                    "period).",
                }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # POST /api/v1/messages: record it, answer 202
            headers = {name.lower(): value for name, value in self.headers.items()}
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            seen.requests.append({"path": self.path, "headers": headers, "body": body})
            answer = json.dumps({"id": "m1", "status": "queued", "statusUrl": "/x"}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    with serve_http(Handler) as base:
        yield f"{base}/", seen


def test_status_prints_the_state(api: tuple[str, Seen], capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = api
    assert cli.main(["status", "known", "--url", url, "--key", "secret-key"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"id": "known", "status": "sent", "attempts": 1}
    assert out.startswith('{\n  "id"')  # pretty
    request = seen.requests[0]
    assert request["path"] == "/api/v1/messages/known"  # the trailing slash of --url is dropped
    assert request["headers"]["x-functions-key"] == "secret-key"


def test_status_of_an_unknown_message(
    api: tuple[str, Seen], capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = api
    assert cli.main(["--url", url, "status", "a/b"]) == 1
    assert seen.requests[0]["path"] == "/api/v1/messages/a%2Fb"  # the id is one path segment
    assert "x-functions-key" not in seen.requests[0]["headers"]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "mailgw: HTTP 404 Not Found: Message not found",
        "  No message a/b is known (unknown id, or older than the retention period).",
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "invalid",
            [
                "mailgw: HTTP 400 Bad Request: Invalid send request",
                "  The request breaks 2 rules; nothing was sent.",
                "  to: at least one recipient is required",
                "  text: give text or html",
            ],
        ),
        ("empty", ["mailgw: HTTP 413 Request Entity Too Large (empty body)"]),
        ("proxy", ["mailgw: HTTP 502 Bad Gateway", "  <html><body>Bad gateway</body></html>"]),
    ],
)
def test_a_failure_shows_the_status_and_the_problem(
    api: tuple[str, Seen], tmp_path: Path, answer: str, expected: list[str]
) -> None:
    """As a user runs it (its own process): whatever the server answered."""
    result = run_mailgw("status", answer, "--url", api[0], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == expected


def test_status_when_the_gateway_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "x", "--url", "http://127.0.0.1:9"]) == 1
    assert "mailgw: cannot reach http://127.0.0.1:9" in capsys.readouterr().err


# --- operator commands against a fake core -------------------------------------------------------


def test_failed_list_is_a_table_that_never_cuts_a_hint(
    core: FakeServices, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    long_hint = "grant the identity Send As on the mailbox " * 6
    core.store.records["m-new"].last_error = ErrorInfo(
        code="ErrorSendAsDenied", message="denied", hint=long_hint
    )
    assert cli.main(["failed", "list"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["ID", "FAILED", "AT", "(UTC)", "CODE", "FROM"]
    rows = {line.split()[0]: n for n, line in enumerate(lines) if line.startswith("m-")}
    assert set(rows) == {"m-old", "m-new"}  # failed ones only
    new = lines[rows["m-new"]]
    assert "2026-06-01 11:55:00" in new  # the failure, not the last change
    assert new.endswith("ErrorSendAsDenied  noreply@contoso.com")
    assert lines[rows["m-old"]].endswith(" -")  # no sender known
    assert lines[0].index("CODE") == new.index("ErrorSendAsDenied")  # aligned
    # the whole hint, wrapped under its row, each line within the terminal's width
    hint_lines = lines[rows["m-new"] + 1 : rows["m-new"] + 4]
    assert hint_lines[0].startswith("    -> grant the identity")
    assert " ".join(" ".join(hint_lines).replace("->", "").split()) == " ".join(long_hint.split())
    assert all(len(line) < 100 for line in hint_lines)
    assert lines[rows["m-old"] + 1] == "    -> grant Send As"
    assert core.operations.calls == [("failed", 100)]
    assert core.queue.closed == 1 and core.store.closed == 1
    assert "queue mail-outbound" in captured.err  # which storage and queue it used


def test_failed_list_json_and_limit(core: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["failed", "list", "--json", "--limit", "1"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in listed] == ["m-old"]
    assert listed[0]["status"] == "failed"
    assert listed[0]["lastError"]["code"] == "ErrorSendAsDenied"
    assert listed[0]["failedAt"] == "2026-06-01T11:30:00Z"
    assert core.operations.calls == [("failed", 1)]


def test_failed_list_when_there_are_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "open_services", lambda env: FakeServices())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["failed", "list"]) == 0
    assert capsys.readouterr().out == "no failed messages\n"


def test_replay_by_id(core: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["failed", "replay", "m-new", "nope", "m-sent"]) == 1  # one problem or more
    captured = capsys.readouterr()
    assert captured.out == "m-new: queued (replay 1)\n"
    assert "nope: not replayed: No message nope is known." in captured.err
    assert "m-sent: not replayed: this one is sent." in captured.err
    assert [c for c, _ in core.operations.calls] == ["replay"] * 3


def test_replay_all(core: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["failed", "replay", "--all"]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == [
        "m-new: queued (replay 1)",
        "m-old: queued (replay 1)",
    ]
    assert core.operations.calls[0] == ("failed", cli.ALL)


def test_purge_asks_first(
    core: FakeServices, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return "n"

    monkeypatch.setattr("builtins.input", answer)
    assert cli.main(["failed", "purge", "m-new"]) == 1
    assert prompts == ["Delete these 1 failed message(s) and their payloads for good? [y/N] "]
    out = capsys.readouterr().out
    assert "m-new" in out and "aborted: nothing deleted" in out
    assert "m-new" in core.store.records
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert cli.main(["failed", "purge", "m-new"]) == 0
    assert "m-new" not in core.store.records
    assert capsys.readouterr().out.endswith("purged 1 failed message(s)\n")


def test_purge_without_a_terminal_is_a_no(
    core: FakeServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    def eof(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    assert cli.main(["failed", "purge", "--all"]) == 1
    assert len(core.store.records) == 3


def test_purge_yes_all(
    core: FakeServices, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("builtins.input", no_input)
    assert cli.main(["failed", "purge", "--all", "--yes"]) == 0
    assert set(core.store.records) == {"m-sent"}
    assert ("purge", ["m-old", "m-new"]) in core.operations.calls
    assert capsys.readouterr().out == "purged 2 failed message(s)\n"


def test_purge_skips_what_is_not_failed(
    core: FakeServices, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("builtins.input", no_input)
    assert cli.main(["failed", "purge", "--yes", "m-sent", "nope", "m-old"]) == 1
    captured = capsys.readouterr()
    assert "m-sent: is sent, not failed: not purged" in captured.err
    assert "nope: not found" in captured.err
    assert set(core.store.records) == {"m-sent", "m-new"}
    assert cli.main(["failed", "purge", "--yes", "nope"]) == 1
    assert "nothing to purge" in capsys.readouterr().out


def test_store_cleanup(core: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["store", "cleanup"]) == 0
    assert capsys.readouterr().out == ("retention: deleted 7 expired record(s)\n")
    assert core.operations.calls == [("cleanup", None)]
    assert core.queue.closed == 1 and core.store.closed == 1


# --- settings for the operator commands ----------------------------------------------------------


def test_local_settings_are_the_fallback_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                    "MAILGW_QUEUE": "from-file",
                    "MAILGW_RETENTION_DAYS": 7,
                    "FLAG": True,
                },
            }
        ),
        encoding="utf-8-sig",  # editors on Windows add a BOM; the host accepts it
    )
    env = cli.operator_environment({"MAILGW_QUEUE": "from-env"}, tmp_path)
    assert env["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert env["MAILGW_QUEUE"] == "from-env"
    assert env["MAILGW_RETENTION_DAYS"] == "7"
    assert env["FLAG"] == "true"
    assert cli.operator_environment({"A": "1"}, tmp_path / "nowhere") == {"A": "1"}


@pytest.mark.parametrize(
    "environment",
    [
        {"AzureWebJobsStorage__accountName": "prodaccount"},
        {"AzureWebJobsStorage__queueServiceUri": "https://prodaccount.queue.core.windows.net"},
    ],
)
def test_a_storage_connection_from_the_environment_wins_as_a_whole(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    """The file's connection string would be read before the environment's identity-based keys:
    the environment's choice of form replaces every key of that connection from the file."""
    values = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "AzureWebJobsStorage__clientId": "from-file",
        "Other__queueServiceUri": "https://other.queue.core.windows.net",
        "MAILGW_QUEUE": "from-file",
    }
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}))
    env = cli.operator_environment(environment, tmp_path)
    assert env == {
        **environment,
        "Other__queueServiceUri": "https://other.queue.core.windows.net",  # another connection
        "MAILGW_QUEUE": "from-file",
    }
    connection = Settings.from_env(env).storage()
    assert connection.connection_string is None
    assert connection.describe().startswith("account prodaccount (https://prodaccount.queue.")


def test_unusable_settings_are_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("MAILGW_TRANSPORT", "carrier-pigeon")
    assert cli.main(["failed", "list"]) == 2
    assert "MAILGW_TRANSPORT" in capsys.readouterr().err
    monkeypatch.delenv("MAILGW_TRANSPORT")
    assert cli.main(["store", "cleanup"]) == 2  # no storage configured at all
    assert "storage connection 'AzureWebJobsStorage' is not configured" in capsys.readouterr().err
    (tmp_path / "local.settings.json").write_text("{not json")
    assert cli.main(["failed", "list"]) == 2
    assert "local.settings.json: invalid JSON" in capsys.readouterr().err


def test_a_token_is_sent_as_a_bearer_credential(
    api: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = api
    monkeypatch.setenv("MAILGW_API_TOKEN", "eyJ.token.sig")
    assert cli.main(["status", "known", "--url", url]) == 0
    headers = seen.requests[0]["headers"]
    assert headers["authorization"] == "Bearer eyJ.token.sig"  # for MAILGW_AUTH=entra
    assert "x-functions-key" not in headers
    assert cli.main(["--token", "other", "--url", url, "status", "known"]) == 0
    assert seen.requests[1]["headers"]["authorization"] == "Bearer other"


def test_operator_commands_ignore_the_api_authentication_settings() -> None:
    """`eval "$(azd env get-values)"` may bring MAILGW_AUTH=entra without the tenant id; the
    storage commands do not serve the API and must still start."""
    env = {"MAILGW_AUTH": "entra", "MAILGW_API_AUDIENCE": "x", "AzureWebJobsStorage": "x"}
    services = cli.open_services(env)
    assert services.settings.api_auth == "keys"


def test_send_posts_the_request_as_the_api_expects(
    api: tuple[str, Seen], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = api
    (tmp_path / "r.pdf").write_bytes(b"%PDF-1.7 receipt")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n")
    argv = [
        "send", "--url", url, "--key", "k",
        "--from", "noreply@contoso.com", "--to", "a@example.com", "--to", "b@example.com",
        "--bcc", "audit@contoso.com", "--subject", "Receipt", "--text", "plain",
        "--html", "<img src=cid:logo>", "--attach", str(tmp_path / "r.pdf"),
        "--inline", f"{tmp_path / 'logo.png'}:logo", "--header", "X-Order-Id=42",
        "--importance", "high", "--idempotency-key", "order-42",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "m1"
    (request,) = seen.requests
    assert request["path"] == "/api/v1/messages"
    assert request["headers"]["idempotency-key"] == "order-42"
    assert request["headers"]["x-functions-key"] == "k"
    assert request["headers"]["content-type"] == "application/json"
    assert request["body"] == {
        "from": "noreply@contoso.com",
        "to": ["a@example.com", "b@example.com"],
        "bcc": ["audit@contoso.com"],
        "subject": "Receipt",
        "text": "plain",
        "html": "<img src=cid:logo>",
        "attachments": [
            {
                "name": "r.pdf",
                "contentType": "application/pdf",
                "contentBase64": base64.b64encode(b"%PDF-1.7 receipt").decode(),
            },
            {
                "name": "logo.png",
                "contentType": "image/png",
                "contentBase64": base64.b64encode(b"\x89PNG\r\n").decode(),
                "inline": True,
                "contentId": "logo",
            },
        ],
        "headers": {"X-Order-Id": "42"},
        "importance": "high",
    }


def test_send_dry_run_posts_nothing(
    api: tuple[str, Seen], capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = api
    argv = ["send", "--url", url, "--from", "a@contoso.com", "--to", "b@x.com", "--dry-run"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["from"] == "a@contoso.com"
    assert seen.requests == []


def test_doctor_checks_with_the_app_environment_and_gives_the_callers_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The SDKs read some settings from the process environment only, so the doctor puts the
    app's there for its checks; the caller's environment is unchanged afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("MAILGW_ALLOWED_SENDERS", "noreply@contoso.com")
    values = {"MAILGW_TRANSPORT": "outbox", "MAILGW_OUTBOX_DIR": str(tmp_path / "out")}
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}))
    before = dict(os.environ)
    seen: dict[str, str | None] = {}

    async def diagnose(env: dict[str, str], mailbox: str | None) -> list[Any]:
        seen["transport"] = os.environ.get("MAILGW_TRANSPORT")
        return []

    monkeypatch.setattr("mailgw.doctor.diagnose", diagnose)
    assert cli.main(["doctor"]) == 0
    assert seen["transport"] == "outbox"  # from the file, in the process environment
    assert dict(os.environ) == before


def test_send_with_a_template_and_sandbox_builds_the_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"customer": "Ann"}', encoding="utf-8")
    argv = ["send", "--from", "noreply@contoso.com", "--to", "a@example.com", "--template",
            "receipt", "--data", f"@{data}", "--sandbox", "--dry-run"]  # fmt: skip
    assert cli.main(argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert body == {
        "from": "noreply@contoso.com",
        "to": ["a@example.com"],
        "template": "receipt",
        "templateData": {"customer": "Ann"},
        "sandbox": True,
    }
    assert cli.main([*argv[:-4], "--data", "{not json", "--dry-run"]) == 2
    assert "--data is not JSON" in capsys.readouterr().err
