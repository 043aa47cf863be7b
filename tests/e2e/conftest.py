"""End-to-end fixtures: the real function_app.py served by the dev host, on real Azurite.

Each dev host is a separate process, configured only through the environment, exactly as a user
configures it; host.json values are shortened through the host's own override settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_host import ROOT, DevHost, free_port, is_ready

from support import wait_until


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
        wait_until(lambda: is_ready(host), timeout=60, what="dev host readiness")
        return host

    yield start
    for host in hosts:
        host.stop()


@pytest.fixture(scope="module")
def devhost(start_devhost: Callable[..., DevHost]) -> DevHost:
    """The gateway as `make run` serves it (outbox transport), shared by a module's tests."""
    return start_devhost()
