"""Starting and stopping: clean exits on signals, draining work in flight, clear start-up errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from devhost_support import ROOT, StartDevHost, launch

from mailgw.storage import StorageConnection, queue_client
from support import wait_until, wait_until_async


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_an_idle_host_cleanly(
    start_devhost: StartDevHost, stop_signal: signal.Signals
) -> None:
    host = start_devhost("http_app")
    host.process.send_signal(stop_signal)
    assert host.process.wait(timeout=30) == 0
    assert "Dev host stopped" in host.log()


async def test_sigterm_lets_the_running_invocation_finish(
    azurite: Any, start_devhost: StartDevHost
) -> None:
    queue_name = f"drain-{uuid.uuid4().hex[:10]}"
    host = start_devhost(
        "queue_app",
        AzureWebJobsStorage=azurite.connection_string,
        RECORD_QUEUE=f"unused-{uuid.uuid4().hex[:10]}",
        FAILING_QUEUE=f"unused-{uuid.uuid4().hex[:10]}",
        PREPOISONED_QUEUE=f"unused-{uuid.uuid4().hex[:10]}",
        SLOW_QUEUE=queue_name,
        AzureFunctionsJobHost__extensions__queues__maxPollingInterval="00:00:00.200",
    )
    settings = {"AzureWebJobsStorage": azurite.connection_string}
    connection = StorageConnection.from_settings("AzureWebJobsStorage", settings)
    async with queue_client(connection, queue_name) as queue:
        sent = await queue.send_message(json.dumps({"seconds": 1.5}))

        async def started() -> bool:
            return any(r["id"] == sent.id for r in host.records("slow"))

        await wait_until_async(started, what="the slow function to start")
        host.process.send_signal(signal.SIGTERM)
        assert host.process.wait(timeout=30) == 0
        phases = [r["phase"] for r in host.records("slow") if r["id"] == sent.id]
        assert phases == ["start", "end"]
        properties = await queue.get_queue_properties()
        assert properties.approximate_message_count == 0  # completed and deleted, not abandoned
    assert "Waiting up to 30 s for 1 running invocation(s)" in host.log()


def test_missing_storage_setting_fails_fast_with_its_name(tmp_path: Path) -> None:
    host = launch("queue_app", tmp_path, {"RECORD_QUEUE": "records", "SLOW_QUEUE": "slowly"})
    assert host.process.wait(timeout=30) == 1
    log = host.log()
    assert "Dev host failed to start" in log
    assert "storage connection 'AzureWebJobsStorage' is not configured" in log


def test_unresolved_setting_skips_only_that_function(
    azurite: Any, start_devhost: StartDevHost
) -> None:
    host = start_devhost(
        "queue_app",
        AzureWebJobsStorage=azurite.connection_string,
        RECORD_QUEUE=f"r-{uuid.uuid4().hex[:10]}",
        SLOW_QUEUE=f"s-{uuid.uuid4().hex[:10]}",
    )
    functions = {f["name"]: f for f in host.get_json("/admin/functions")}
    assert functions["recorder"]["running"] is True
    assert functions["always_fails"]["running"] is False
    assert "'%FAILING_QUEUE%' does not resolve to a value" in functions["always_fails"]["reason"]
    assert "(2 functions)" in wait_until(host.stdout, what="the ready line")


def test_missing_app_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devhost", "--app-dir", str(tmp_path), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"{tmp_path / 'function_app.py'} not found" in result.stderr
