"""Helpers for the dev host's tests: launch ``python -m devhost`` on a copy of a test app.

Each test app under ``apps/`` is copied to a temporary folder first, so a run never writes into the
source tree (the host creates ``local.settings.json`` from the sample). Hosts are configured only
through their environment, as a developer would: app settings, ``AzureFunctionsJobHost__*``
overrides and ``DEVHOST_*`` knobs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy


@dataclass
class DevHostProcess:
    """One running dev host, with its copied app folder, logs and the tests' output folder."""

    process: subprocess.Popen[bytes]
    port: int
    app_dir: Path
    out_dir: Path
    stdout_path: Path
    stderr_path: Path
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get_json(self, path: str) -> Any:
        with _LOCAL.open(self.base_url + path, timeout=10) as response:
            return json.loads(response.read())

    def records(self, function: str) -> list[dict[str, Any]]:
        """The JSON lines the queue test app wrote for ``function`` (one per invocation)."""
        path = self.out_dir / f"{function}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"dev host exited with {self.process.returncode}:\n{self.stdout()}\n{self.log()}"
            )
        try:
            return bool(self.get_json("/admin/host/status").get("state") == "Running")
        except (OSError, ValueError):
            return False

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM, as a supervisor would, and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


StartDevHost = Callable[..., DevHostProcess]


def launch(app: str, workdir: Path, env_overrides: dict[str, str]) -> DevHostProcess:
    """Copy ``apps/<app>`` into ``workdir`` and start the dev host on it (without waiting)."""
    app_dir = workdir / app
    shutil.copytree(APPS / app, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    out_dir = workdir / "out"
    out_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("Azure", "DEVHOST_"))}
    env.update({"DEVHOST_TEST_OUT": str(out_dir), "PYTHONUNBUFFERED": "1"})
    env.update(env_overrides)
    stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    return DevHostProcess(process, port, app_dir, out_dir, stdout_path, stderr_path, env)
