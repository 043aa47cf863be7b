"""The identity and Graph stand-ins as separate processes, for a dev host that is itself a process
(end-to-end tests, ``MAILGW_TRANSPORT=graph make run``, the delivery benchmark).

Each process prints ``READY {json}`` once it listens; we read that line instead of guessing when it
is up. The Graph stand-in accepts tokens for its own URL, since the gateway's token scope follows
``MAILGW_GRAPH_ENDPOINT``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from standins.graph import RemoteGraphStandIn

TESTS_DIR = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_processes(processes: list[subprocess.Popen[str]]) -> None:
    """SIGTERM all, then wait (SIGKILL what does not stop within 10 s)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(module: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])}
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    stdout: IO[str] | None = process.stdout
    assert stdout is not None
    line = stdout.readline()  # blocks until READY (or EOF if the process died)
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"{module} did not start (exit code {process.wait()})")
    info: dict[str, Any] = json.loads(line.removeprefix("READY "))
    return process, info


@dataclass
class StandInProcesses:
    graph_url: str
    identity_env: dict[str, str]
    graph: RemoteGraphStandIn
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def gateway_env(self) -> dict[str, str]:
        """The settings that point the gateway's Graph transport at these stand-ins."""
        return {
            "MAILGW_TRANSPORT": "graph",
            "MAILGW_GRAPH_ENDPOINT": self.graph_url,
            "MAILGW_CREDENTIAL": "managed_identity",
            **self.identity_env,
        }

    def stop(self) -> None:
        stop_processes(self.processes)

    def __enter__(self) -> StandInProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_standins(latency_seconds: float = 0.0) -> StandInProcesses:
    identity, identity_info = _spawn("standins.identity")
    try:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        graph, graph_info = _spawn(
            "standins.graph",
            "--port",
            str(port),
            "--audience",
            url,
            "--latency",
            str(latency_seconds),
        )
    except BaseException:
        identity.kill()
        raise
    env = {k: identity_info[k] for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    return StandInProcesses(
        graph_url=graph_info["url"],
        identity_env=env,
        graph=RemoteGraphStandIn(graph_info["url"]),
        processes=[identity, graph],
    )


# --- the SMTP stand-in (client submission or relay connector) -------------------------------------
from standins.smtp import RemoteSmtpStandIn  # noqa: E402


@dataclass
class SmtpStandInProcess:
    """An SMTP stand-in process (and, for submission, the identity stand-in whose tokens it
    checks). ``smtp`` is the admin client; ``info`` the stand-in's ``READY`` line."""

    mode: str
    info: dict[str, Any]
    smtp: RemoteSmtpStandIn
    identity_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def gateway_env(self) -> dict[str, str]:
        """The settings that point the gateway's ``smtp`` or ``relay`` transport at this stand-in
        (host, port, CA file; for submission also the managed-identity credential)."""
        env: dict[str, str] = dict(self.info["env"])
        if self.identity_env:
            env.update({"MAILGW_CREDENTIAL": "managed_identity", **self.identity_env})
        return env

    def stop(self) -> None:
        stop_processes(self.processes)

    def __enter__(self) -> SmtpStandInProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_smtp_standin(
    mode: str = "submission",
    *,
    accepted_domains: tuple[str, ...] = (),
    allowed_users: tuple[str, ...] | None = None,
    max_connections_per_user: int = 3,
    identity: bool | None = None,
) -> SmtpStandInProcess:
    """``python -m standins.smtp`` (``mode`` ``submission`` | ``relay``) as a process; with
    ``identity`` (default: for submission) also ``python -m standins.identity``, sharing the
    default signing key, so the gateway's managed-identity tokens pass XOAUTH2."""
    with_identity = mode == "submission" if identity is None else identity
    processes: list[subprocess.Popen[str]] = []
    identity_env: dict[str, str] = {}
    try:
        if with_identity:
            identity_process, identity_info = _spawn("standins.identity")
            processes.append(identity_process)
            identity_env = {k: identity_info[k] for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
        args = ["--mode", mode, "--max-connections-per-user", str(max_connections_per_user)]
        for domain in accepted_domains:
            args += ["--accepted-domain", domain]
        for user in allowed_users or ():
            args += ["--allowed-user", user]
        smtp_process, info = _spawn("standins.smtp", *args)
        processes.append(smtp_process)
    except BaseException:
        for process in processes:
            process.kill()
            process.wait()
        raise
    return SmtpStandInProcess(
        mode=mode,
        info=info,
        smtp=RemoteSmtpStandIn(info["adminUrl"]),
        identity_env=identity_env,
        processes=processes,
    )
