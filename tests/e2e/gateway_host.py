"""The gateway served by the dev host as a process, and how tests talk to it.

A module of its own (not conftest.py) so that tests, and the benchmarks (bench/soak.py), import
it by a name no other folder uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


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

    def status(self, message_id: str, wanted: str | None = None) -> dict[str, Any]:
        """The message's state from the API, or {} if it is unknown (or not yet ``wanted``):
        falsy until then, so ``wait_until(lambda: host.status(id, "sent"))`` waits for it."""
        response = self.request("GET", f"/api/v1/messages/{message_id}")
        state: dict[str, Any] = response.json() if response.status == 200 else {}
        return state if wanted is None or state.get("status") == wanted else {}

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


def launch_devhost(
    storage: str, workdir: Path, *, started: list[DevHost] | None = None, **overrides: str
) -> DevHost:
    """A dev host process serving the real function_app.py on ``storage`` (a connection
    string), configured only through its environment as a user configures it, with host.json's
    queue settings shortened for tests; returns once it is ready. Its own queue and payload
    container unless ``overrides`` name them (a successor passes its predecessor's). The host is
    appended to ``started`` before waiting, so that a caller can stop it even if it never gets
    ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    env.update(
        {
            "AzureWebJobsStorage": storage,
            "MAILGW_QUEUE": f"e2e-{uuid.uuid4().hex[:12]}",
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
    log_path = workdir / f"devhost-{port}.log"
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
    if started is not None:
        started.append(host)
    wait_until(lambda: is_ready(host), timeout=60, what="dev host readiness")
    return host


def is_ready(host: DevHost) -> bool:
    if host.process.poll() is not None:
        raise AssertionError(f"dev host exited with {host.process.returncode}:\n{host.log()}")
    try:
        state = host.request("GET", "/admin/host/status").json().get("state")
    except (OSError, ValueError):
        return False
    return bool(state == "Running")
