"""The Azurite launcher used by ``make run``, the test session and the benchmarks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from devhost_support import ROOT

from devhost.azurite import Azurite, AzuriteError
from support import wait_until


def test_the_session_azurite_serves_the_queue_port(azurite: Any) -> None:
    if not isinstance(azurite, Azurite):
        pytest.skip("MAILGW_TEST_STORAGE points at storage this session did not start")
    assert f"QueueEndpoint=http://127.0.0.1:{azurite.ports['queue']}/" in azurite.connection_string
    with socket.create_connection(("127.0.0.1", azurite.ports["queue"]), timeout=2):
        pass


def test_command_line(tmp_path: Path) -> None:
    ports = {"blob": 1, "queue": 2, "table": 3}
    in_memory = Azurite(ports=ports).command()
    assert "--inMemoryPersistence" in in_memory and "--location" not in in_memory
    assert "--disableTelemetry" in in_memory  # Azurite would otherwise send telemetry out
    assert in_memory[in_memory.index("--queuePort") + 1] == "2"
    on_disk = Azurite(ports=ports, in_memory=False, location=str(tmp_path / "data")).command()
    assert on_disk[on_disk.index("--location") + 1] == str(tmp_path / "data")
    assert (tmp_path / "data").is_dir()


def test_free_ports_are_picked_when_none_are_given() -> None:
    ports = Azurite().ports
    assert set(ports) == {"blob", "queue", "table"} and len(set(ports.values())) == 3


def test_a_missing_install_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(AzuriteError, match="npm install"):
        Azurite(project_dir=tmp_path).start()


def test_the_command_line_runs_in_the_foreground_until_sigterm(tmp_path: Path) -> None:
    output = tmp_path / "azurite.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost.azurite", "--ports", "auto", "--in-memory"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Azurite ready" in output.read_text(), timeout=30, what="Azurite")
        assert "AzureWebJobsStorage=DefaultEndpointsProtocol=http" in output.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
