"""End-to-end fixtures: the real function_app.py served by the dev host, on real Azurite.

Each dev host is a separate process, configured only through the environment, exactly as a user
configures it; host.json values are shortened through the host's own override settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway_host import DevHost, launch_devhost

from standins.processes import StandInProcesses, start_standins


@pytest.fixture(scope="module")
def start_devhost(
    azurite: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., DevHost]]:
    """Start dev hosts with settings overrides; all are stopped when the module is done."""
    hosts: list[DevHost] = []

    def start(**overrides: str) -> DevHost:
        workdir = tmp_path_factory.mktemp("devhost")
        return launch_devhost(azurite.connection_string, workdir, started=hosts, **overrides)

    yield start
    for host in hosts:
        host.stop()


@pytest.fixture(scope="module")
def devhost(start_devhost: Callable[..., DevHost]) -> DevHost:
    """The gateway as `make run` serves it (outbox transport), shared by a module's tests."""
    return start_devhost()


@pytest.fixture(scope="module")
def standins() -> Iterator[StandInProcesses]:
    """The Graph and identity stand-ins, as processes, for a module's dev hosts (a module that
    wants them otherwise, slower say, defines its own)."""
    with start_standins() as processes:
        yield processes
