"""Fixtures for the dev host's own tests: real ``python -m devhost`` processes on real Azurite.

Readiness is polled on ``/admin/host/status``, never slept on; every host a module started is
stopped (SIGTERM) when the module is done.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from devhost_support import DevHostProcess, StartDevHost, launch

from support import wait_until


@pytest.fixture(scope="module")
def start_devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartDevHost]:
    """Start dev hosts (waiting for readiness); every one still running is stopped afterwards."""
    hosts: list[DevHostProcess] = []

    def start(app: str, **env: str) -> DevHostProcess:
        host = launch(app, tmp_path_factory.mktemp(app), env)
        hosts.append(host)
        wait_until(host.is_ready, timeout=60, what=f"dev host for {app} to be ready")
        return host

    yield start
    for host in hosts:
        host.terminate()


@pytest.fixture
def isolated_import() -> Iterator[None]:
    """Loading an app imports ``function_app`` and edits sys.path: undo both afterwards."""
    saved_path, saved_module = list(sys.path), sys.modules.pop("function_app", None)
    yield
    sys.path[:] = saved_path
    sys.modules.pop("function_app", None)
    if saved_module is not None:
        sys.modules["function_app"] = saved_module
