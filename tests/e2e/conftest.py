"""End-to-end fixtures: the real function_app.py served by the dev host, on real Azurite.

Each dev host is a separate process, configured only through the environment, exactly as a user
configures it; host.json values are shortened through the host's own override settings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support import wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DevHost:
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log_path: Path
    outbox: Path
    queue: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        req = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return Response(
                    resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
                )
        except urllib.error.HTTPError as err:
            return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def post_json(
        self, path: str, document: Any, headers: dict[str, str] | None = None
    ) -> Response:
        return self.request(
            "POST",
            path,
            json.dumps(document).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _ready(host: DevHost) -> bool:
    if host.process.poll() is not None:
        raise AssertionError(f"dev host exited with {host.process.returncode}:\n{host.log()}")
    try:
        return host.request("GET", "/admin/host/status").json().get("state") == "Running"
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def start_devhost(
    azurite: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., DevHost]]:
    """Start dev hosts with settings overrides; all are stopped when the module is done."""
    hosts: list[DevHost] = []

    def start(**overrides: str) -> DevHost:
        workdir = tmp_path_factory.mktemp("devhost")
        port = free_port()
        queue = f"e2e-{uuid.uuid4().hex[:12]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
        env.update(
            {
                "AzureWebJobsStorage": azurite.connection_string,
                "MAILGW_QUEUE": queue,
                "MAILGW_PAYLOAD_CONTAINER": f"e2e-{uuid.uuid4().hex[:12]}",
                "MAILGW_ALLOWED_SENDERS": "noreply@contoso.com,*@fabrikam.com",
                "MAILGW_TRANSPORT": "outbox",
                "MAILGW_OUTBOX_DIR": str(workdir / "outbox"),
                "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.200",
                "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
                "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "3",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(overrides)
        log_path = workdir / "devhost.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        host = DevHost(
            process, port, env, log_path, Path(env["MAILGW_OUTBOX_DIR"]), env["MAILGW_QUEUE"]
        )
        hosts.append(host)
        wait_until(lambda: _ready(host), timeout=60, what="dev host readiness")
        return host

    yield start
    for host in hosts:
        host.stop()


@pytest.fixture(scope="module")
def devhost(start_devhost: Callable[..., DevHost]) -> DevHost:
    """The gateway as `make run` serves it (outbox transport), shared by a module's tests."""
    return start_devhost()
