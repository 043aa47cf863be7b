"""The real function_app.py in this process, served by the dev host's own HTTP front end and
invoker on real Azurite, so that its spans and metrics land in the SDK's in-memory exporters.

Only the polling is the test's: it hands the next queue message to the app's ``deliver`` (or
``record_failure``) the way the dev host's queue listener does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from telemetry_support import Captured, capture_telemetry

from devhost.app_loader import LoadedApp, load_app
from devhost.http_server import HttpFrontEnd
from devhost.invoke import Invoker
from mailgw import services as services_module
from mailgw.cli import close_services
from mailgw.settings import current_settings
from support import pull

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture_telemetry() as caught:
        yield caught


@dataclass
class AppInProcess:
    loaded: LoadedApp
    invoker: Invoker
    server: TestServer
    session: aiohttp.ClientSession
    outbox: Path

    @property
    def services(self) -> Any:
        return services_module.services()

    async def post(
        self, path: str, document: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.post(
            self.server.make_url(path),
            data=json.dumps(document),
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as response:
            return response.status, await response.json(content_type=None)

    async def run_queue_function(self, name: str, queue: str | None = None) -> bool:
        """Invoke ``name`` (a queue trigger) with the next message of ``queue``, as the dev host
        would; False if the queue had none."""
        message = await pull(self.services.queue, queue)
        if message is None:
            return False
        spec = next(q for q in self.loaded.queues if q.name == name)
        trigger = FunctionQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=message.content.encode(),
            dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on,
        )
        await self.invoker.invoke(spec, trigger, reason="test")
        return True

    async def deliver_next(self) -> bool:
        return await self.run_queue_function("deliver")

    async def record_next_failure(self) -> bool:
        return await self.run_queue_function(
            "record_failure", self.services.queue.poison_queue_name
        )


@pytest.fixture
async def app(
    azurite: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AppInProcess]:
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "MAILGW_QUEUE": f"tel-{uuid.uuid4().hex[:12]}",
        "MAILGW_PAYLOAD_CONTAINER": f"tel-{uuid.uuid4().hex[:12]}",
        "MAILGW_STATE_TABLE": f"tel{uuid.uuid4().hex[:12]}",
        "MAILGW_ALLOWED_SENDERS": "noreply@contoso.com",
        "MAILGW_TRANSPORT": "outbox",
        "MAILGW_OUTBOX_DIR": str(tmp_path / "outbox"),
        "PYTHON_ENABLE_OPENTELEMETRY": "true",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    current_settings.cache_clear()
    services_module._services = None
    loaded = load_app(ROOT, dict(settings), "api")
    invoker = Invoker()
    front = HttpFrontEnd(loaded.http, invoker, max_body=10 * 1024 * 1024, catalog=list)
    server = TestServer(front.make_app(), host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        yield AppInProcess(loaded, invoker, server, session, tmp_path / "outbox")
    finally:
        await session.close()
        await server.close()
        invoker.close()
        if services_module._services is not None:
            await services_module._services.intake.drain()
            await close_services(services_module._services)
        services_module._services = None
        current_settings.cache_clear()
