"""The gateway served by the dev host as a process, and how tests talk to it.

A module of its own (not conftest.py) so that tests import it by a name no other folder uses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def is_ready(host: DevHost) -> bool:
    if host.process.poll() is not None:
        raise AssertionError(f"dev host exited with {host.process.returncode}:\n{host.log()}")
    try:
        return host.request("GET", "/admin/host/status").json().get("state") == "Running"
    except (OSError, ValueError):
        return False
