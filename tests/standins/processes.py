"""The stand-ins as separate processes, for a dev host that is itself a process (end-to-end tests,
``make run`` with ``MAILGW_TRANSPORT=graph|smtp|relay``, the delivery benchmark).

Each process prints ``READY {json}`` once it listens; we read that line instead of guessing when it
is up. Tests let every port be a free one. ``make run`` asks for fixed ports instead (the Graph
stand-in on 7072, the SMTP stand-in's admin API on 7073, see ``scripts/run_local.py``) so that
their addresses stay the same from run to run; when one is taken, the stand-in takes a free port
and :attr:`StandInGroup.port_notes` says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from standins.admin import RemoteAdmin
from standins.graph import RemoteGraphStandIn
from standins.smtp import RemoteSmtpStandIn

__all__ = [
    "EventGridStandInProcess",
    "SmtpStandInProcess",
    "StandInGroup",
    "StandInProcesses",
    "start_eventgrid_standin",
    "start_smtp_standin",
    "start_standins",
    "stop_processes",
]

TESTS_DIR = Path(__file__).resolve().parent.parent


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


def _port_args(flag: str, port: int) -> list[str]:
    """Ask for ``port`` (0: any free one); a fixed port falls back to a free one when taken."""
    return [flag, str(port), "--port-fallback"] if port else [flag, "0"]


@dataclass
class StandInGroup:
    """Stand-in processes started together, stopped together."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    #: one line per fixed port that was taken, saying which port serves instead
    port_notes: list[str] = field(default_factory=list)

    def note_port(self, what: str, requested: int, info: dict[str, Any], url: str) -> None:
        if info.get("portTaken"):
            self.port_notes.append(f"port {requested} was taken, so {what} listens on {url}")

    def spawn(self, module: str, *args: str) -> dict[str, Any]:
        """``python -m module args`` as one of the group; its ``READY`` info. If it does not
        start, the group's other processes are stopped too."""
        try:
            process, info = _spawn(module, *args)
        except BaseException:
            self.stop()
            raise
        self.processes.append(process)
        return info

    def spawn_identity(self) -> dict[str, str]:
        """The identity stand-in; the managed-identity settings that point azure-identity at it."""
        info = self.spawn("standins.identity")
        return {k: info[k] for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}

    def stop(self) -> None:
        stop_processes(self.processes)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class StandInProcesses(StandInGroup):
    """The identity and Graph stand-ins. ``graph`` is the Graph stand-in's admin client."""

    graph_url: str = ""
    identity_env: dict[str, str] = field(default_factory=dict)
    graph: RemoteGraphStandIn = field(default_factory=lambda: RemoteGraphStandIn(""))

    def gateway_env(self) -> dict[str, str]:
        """The settings that point the gateway's Graph transport at these stand-ins."""
        return {
            "MAILGW_TRANSPORT": "graph",
            "MAILGW_GRAPH_ENDPOINT": self.graph_url,
            "MAILGW_CREDENTIAL": "managed_identity",
            **self.identity_env,
        }


def start_standins(latency_seconds: float = 0.0, *, graph_port: int = 0) -> StandInProcesses:
    """``python -m standins.identity`` and ``python -m standins.graph``; the Graph stand-in
    accepts tokens for Graph's audience, which the gateway asks for whatever
    ``MAILGW_GRAPH_ENDPOINT`` says (MAILGW_GRAPH_SCOPE)."""
    group = StandInProcesses()
    group.identity_env = group.spawn_identity()
    port_args = _port_args("--port", graph_port)
    info = group.spawn("standins.graph", *port_args, "--latency", str(latency_seconds))
    group.graph_url = info["url"]
    group.graph = RemoteGraphStandIn(info["url"])
    group.note_port("the Graph stand-in", graph_port, info, info["url"])
    return group


@dataclass
class SmtpStandInProcess(StandInGroup):
    """An SMTP stand-in process (and, for submission, the identity stand-in whose tokens it
    checks). ``smtp`` is the admin client; ``info`` the stand-in's ``READY`` line."""

    mode: str = "submission"
    info: dict[str, Any] = field(default_factory=dict)
    smtp: RemoteSmtpStandIn = field(default_factory=lambda: RemoteSmtpStandIn(""))
    identity_env: dict[str, str] = field(default_factory=dict)

    def gateway_env(self) -> dict[str, str]:
        """The settings that point the gateway's ``smtp`` or ``relay`` transport at this stand-in
        (host, port, CA file; for submission also the managed-identity credential)."""
        env: dict[str, str] = dict(self.info["env"])
        if self.identity_env:
            env.update({"MAILGW_CREDENTIAL": "managed_identity", **self.identity_env})
        return env


def start_smtp_standin(
    mode: str = "submission",
    *,
    accepted_domains: tuple[str, ...] = (),
    allowed_users: tuple[str, ...] | None = None,
    max_connections_per_user: int = 3,
    identity: bool | None = None,
    admin_port: int = 0,
) -> SmtpStandInProcess:
    """``python -m standins.smtp`` (``mode`` ``submission`` | ``relay``) as a process; with
    ``identity`` (default: for submission) also ``python -m standins.identity``, sharing the
    default signing key, so the gateway's managed-identity tokens pass XOAUTH2."""
    group = SmtpStandInProcess(mode=mode)
    with_identity = mode == "submission" if identity is None else identity
    if with_identity:
        group.identity_env = group.spawn_identity()
    args = ["--mode", mode, "--max-connections-per-user", str(max_connections_per_user)]
    args += _port_args("--admin-port", admin_port)
    for domain in accepted_domains:
        args += ["--accepted-domain", domain]
    for user in allowed_users or ():
        args += ["--allowed-user", user]
    group.info = group.spawn("standins.smtp", *args)
    group.smtp = RemoteSmtpStandIn(group.info["adminUrl"])
    group.note_port("the SMTP stand-in's admin API", admin_port, group.info, group.smtp.url)
    return group


@dataclass
class EventGridStandInProcess(StandInGroup):
    """The Event Grid topic stand-in and the identity stand-in whose tokens it accepts.
    ``eventgrid`` is the topic's admin client (recordings ``events`` and ``requests``)."""

    endpoint: str = ""
    identity_env: dict[str, str] = field(default_factory=dict)
    eventgrid: RemoteAdmin = field(default_factory=lambda: RemoteAdmin(""))

    def gateway_env(self) -> dict[str, str]:
        """The settings that make the gateway publish to this topic with its managed identity."""
        return {"MAILGW_EVENTGRID_ENDPOINT": self.endpoint, **self.identity_env}

    def events(self) -> list[dict[str, Any]]:
        """Every event the topic took, in order."""
        return [item["event"] for item in self.eventgrid.records("events")]


def start_eventgrid_standin(*, port: int = 0) -> EventGridStandInProcess:
    """``python -m standins.identity`` and ``python -m standins.eventgrid`` (sharing the default
    signing key, so the gateway's managed-identity tokens pass)."""
    group = EventGridStandInProcess()
    group.identity_env = group.spawn_identity()
    info = group.spawn("standins.eventgrid", *_port_args("--port", port))
    group.endpoint = info["endpoint"]
    group.eventgrid = RemoteAdmin(info["url"])
    group.note_port("the Event Grid stand-in", port, info, info["url"])
    return group
