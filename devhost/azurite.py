"""Start and stop Azurite (the Storage emulator from package.json) for runs, tests and benchmarks.

One launcher serves ``make run`` (foreground, default ports, data kept in ``.azurite``), the test
session (in memory, on free ports, so parallel runs and a developer's own Azurite do not collide)
and the benchmarks. Readiness is when all three ports accept connections, never a fixed sleep.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

from mailgw.storage import AZURITE_DEFAULT_PORTS, azurite_connection_string

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVICES = ("blob", "queue", "table")


class AzuriteError(RuntimeError):
    """Azurite is not installed, did not start, or died; the message carries its output."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the OS reports free now (all held open together, so they are distinct)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Azurite:
    """An Azurite process; use as a context manager or call ``start()`` and ``stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
        location: str | None = None,
        in_memory: bool = True,
        project_dir: str | Path = PROJECT_DIR,
    ) -> None:
        self.host = host
        self._auto_ports = ports is None
        self.ports: dict[str, int] = dict(ports) if ports else self._pick_ports()
        self.project_dir = Path(project_dir)
        self.in_memory = in_memory
        self.location = Path(location) if location else self.project_dir / ".azurite"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _pick_ports(self) -> dict[str, int]:
        return dict(zip(SERVICES, free_ports(len(SERVICES), self.host), strict=True))

    @property
    def binary(self) -> Path:
        return self.project_dir / "node_modules" / ".bin" / "azurite"

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.host, self.ports)

    def command(self) -> list[str]:
        command = [str(self.binary)]
        for service in SERVICES:
            command += [f"--{service}Host", self.host, f"--{service}Port", str(self.ports[service])]
        command += ["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
        if self.in_memory:
            command.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            command += ["--location", str(self.location)]
        return command

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace").strip()[-4000:]

    def _spawn(self) -> None:
        # A file, not a pipe: nobody reads a pipe while Azurite runs, and a full one would block it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.project_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches node's children
        )

    def start(self, timeout: float = 30) -> Azurite:
        """Spawn Azurite and wait until blob, queue and table ports accept connections."""
        if not self.binary.exists():
            raise AzuriteError(
                f"Azurite is not installed ({self.binary} is missing): "
                f"run `npm install --no-audit --no-fund` in {self.project_dir}"
            )
        attempts = 3 if self._auto_ports else 1  # a picked port may be taken before Azurite binds
        for attempt in range(attempts):
            self._spawn()
            assert self.process is not None
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                if all(_accepts(self.host, port) for port in self.ports.values()):
                    return self
                time.sleep(0.05)
            output = self._output()
            if self.process.poll() is None:
                self.stop()
                raise AzuriteError(
                    f"Azurite did not listen on {self.ports} within {timeout} s:\n{output}"
                )
            self.stop()
            if "EADDRINUSE" in output and attempt + 1 < attempts:
                self.ports = self._pick_ports()
                continue
            raise AzuriteError(f"Azurite exited with code {self.process.returncode}:\n{output}")
        raise AzuriteError("Azurite could not start")  # unreachable; keeps type checkers content

    def terminate(self) -> None:
        """Ask Azurite's process group to exit, without waiting (safe in a signal handler)."""
        if self.process is not None and self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Terminate Azurite's process group and wait for it (SIGKILL after 10 s)."""
        process = self.process
        if process is not None and process.poll() is None:
            self.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until Azurite exits (for the foreground CLI)."""
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parse_ports(value: str) -> dict[str, int] | None:
    if value == "default":
        return dict(AZURITE_DEFAULT_PORTS)
    if value == "auto":
        return None
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError("expected 'default', 'auto' or BLOB,QUEUE,TABLE")
    return dict(zip(SERVICES, (int(p) for p in parts), strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devhost.azurite``: Azurite in the foreground until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m devhost.azurite",
        description="Run Azurite (from package.json) in the foreground until Ctrl+C or SIGTERM.",
    )
    parser.add_argument("--location", default=".azurite", help="data folder (default .azurite)")
    parser.add_argument(
        "--ports",
        type=_parse_ports,
        default="default",
        help="'default' (10000-10002), 'auto', or BLOB,QUEUE,TABLE",
    )
    parser.add_argument("--in-memory", action="store_true", help="keep no data on disk")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    azurite = Azurite(
        host=args.host,
        ports=args.ports,
        location=args.location,
        in_memory=args.in_memory,
        project_dir=Path.cwd(),
    )
    if not azurite.binary.exists():
        azurite.project_dir = PROJECT_DIR
    stopping = False

    def on_sigterm(*_: object) -> None:
        nonlocal stopping
        stopping = True
        azurite.terminate()  # the main thread's wait() then returns; stop() happens below

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        azurite.start()
        print(
            f"Azurite ready: queue {args.host}:{azurite.ports['queue']}, "
            f"blob {azurite.ports['blob']}, table {azurite.ports['table']}",
            flush=True,
        )
        print(f"AzureWebJobsStorage={azurite.connection_string}", flush=True)
        code = azurite.wait()
        return 0 if stopping else code
    except KeyboardInterrupt:
        return 0
    except AzuriteError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
