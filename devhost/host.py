"""The dev host's life cycle: settings, host.json, app, listeners, HTTP server, graceful stop.

The order follows ``func start``: app settings first (binding expressions need them), then
host.json, then indexing. The HTTP port opens only once every queue and timer listener has started,
so anything that polls ``/admin/host/status`` (or just connects) sees a host that is fully up.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from azure.core.exceptions import AzureError, ServiceRequestError
from azure.storage.queue.aio import QueueServiceClient

from devhost.app_loader import LoadedApp, load_app
from devhost.hostjson import HostConfig
from devhost.http_server import HttpFrontEnd, max_request_bytes
from devhost.invoke import Invoker
from devhost.leases import LeaseKeeper
from devhost.mail_viewer import ROOT as MAIL_VIEWER_PATH
from devhost.mail_viewer import MailViewer
from devhost.queue_listener import DEFAULT_LEASE_SECONDS, QueueListener
from devhost.settings import apply_settings, load_local_settings
from devhost.timers import TimerListener
from mailgw.storage import StorageConnection, queue_service_client

log = logging.getLogger("devhost")

DEFAULT_PORT = 7071
STORAGE_STARTUP_SECONDS = 10.0
DEFAULT_SHUTDOWN_SECONDS = 30.0


class StartupError(RuntimeError):
    """The host cannot start; the message tells the developer what to fix."""


@dataclass(frozen=True)
class HostOptions:
    app_dir: Path
    host: str = "127.0.0.1"
    port: int | None = None


def _env_number(environ: Mapping[str, str], name: str, default: float) -> float:
    value = environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise StartupError(f"{name}={value!r} is not a number") from None


def _catalog(loaded: LoadedApp, base_url: str, prefix: str) -> list[dict[str, Any]]:
    """The function list for ``/admin/functions`` and the start-up banner."""
    entries: list[dict[str, Any]] = []
    for http in loaded.http:
        route = "/".join(p for p in (prefix, http.route.template) if p)
        entries.append(
            {
                "name": http.name,
                "trigger": http.trigger_type,
                "route": http.route.template,
                "methods": sorted(http.methods),
                "authLevel": http.auth_level,
                "invoke_url_template": f"{base_url}/{route}",
                "running": True,
            }
        )
    for queue in loaded.queues:
        entries.append(
            {
                "name": queue.name,
                "trigger": queue.trigger_type,
                "queueName": queue.queue_name,
                "connection": queue.connection,
                "running": True,
            }
        )
    for timer in loaded.timers:
        entries.append(
            {
                "name": timer.name,
                "trigger": timer.trigger_type,
                "schedule": timer.schedule_text,
                "runOnStartup": timer.run_on_startup,
                "running": True,
            }
        )
    for skipped in loaded.skipped:
        entries.append(
            {
                "name": skipped.name,
                "trigger": skipped.trigger_type,
                "running": False,
                "reason": skipped.reason,
            }
        )
    return entries


def _print_functions(catalog: list[dict[str, Any]]) -> None:
    print("\nFunctions:\n")
    for entry in catalog:
        if "invoke_url_template" in entry:
            methods = ",".join(entry["methods"])
            print(f"        {entry['name']}: [{methods}] {entry['invoke_url_template']}\n")
        elif "queueName" in entry:
            print(f"        {entry['name']}: queueTrigger (queue: {entry['queueName']})\n")
        elif "schedule" in entry:
            print(f"        {entry['name']}: timerTrigger (schedule: {entry['schedule']})\n")
        else:
            print(f"        {entry['name']}: {entry['trigger']} (not run: {entry['reason']})\n")
    sys.stdout.flush()


class DevHost:
    """One run of the dev host; ``await DevHost(options).run()`` returns the exit code."""

    def __init__(self, options: HostOptions) -> None:
        self.options = options
        self.invoker = Invoker()
        self.listeners: list[QueueListener] = []
        self.timers: list[TimerListener] = []
        self.services: dict[str, QueueServiceClient] = {}
        self.lease_keepers: dict[str, LeaseKeeper] = {}
        self.runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def _request_stop(self) -> None:
        if self._stop.is_set():
            log.warning("Second stop signal: not waiting for running invocations")
            self._force.set()
        self._stop.set()

    def _prepare(self) -> tuple[LoadedApp, HostConfig, int]:
        app_dir = self.options.app_dir.resolve()
        os.chdir(app_dir)  # the worker runs in the script root, so relative paths resolve there
        settings = load_local_settings(app_dir)
        if settings.created_from_sample:
            print(f"Created {settings.path.name} from local.settings.sample.json", flush=True)
        overridden = apply_settings(settings.values, os.environ)
        if overridden:
            log.info("The environment overrides local settings: %s", ", ".join(sorted(overridden)))
        config = HostConfig.load(app_dir, os.environ)
        loaded = load_app(app_dir, os.environ, config.http.route_prefix)
        _shorten_pacing_window(os.environ)
        for skipped in loaded.skipped:
            log.warning(
                "Function '%s' (%s) will not run: %s",
                skipped.name,
                skipped.trigger_type,
                skipped.reason,
            )
        if any(f.auth_level in ("function", "admin") for f in loaded.http):
            log.info(
                "Function keys are not enforced by the dev host (authLevel function/admin), "
                "as with func start; Azure enforces them"
            )
        port = self.options.port
        if port is None:
            port = int(settings.host.get("LocalHttpPort") or DEFAULT_PORT)
        return loaded, config, port

    async def _start_listeners(self, loaded: LoadedApp, config: HostConfig) -> None:
        lease = int(_env_number(os.environ, "DEVHOST_QUEUE_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))
        for spec in loaded.queues:
            if spec.connection not in self.services:
                connection = StorageConnection.from_settings(spec.connection, os.environ)
                self.services[spec.connection] = queue_service_client(connection)
                keeper = LeaseKeeper(functools.partial(queue_service_client, connection), lease)
                keeper.start()
                self.lease_keepers[spec.connection] = keeper
            service = self.services[spec.connection]
            listener = QueueListener(
                spec, config.queues, self.invoker, service, self.lease_keepers[spec.connection]
            )
            deadline = time.monotonic() + STORAGE_STARTUP_SECONDS
            while True:
                try:
                    await listener.ensure_queue()
                    break
                except ServiceRequestError as error:
                    if time.monotonic() > deadline:
                        raise StartupError(
                            f"cannot reach queue storage '{spec.connection}' at {service.url}: "
                            f"{error}. Is Azurite running? (python -m devhost.azurite)"
                        ) from error
                    await asyncio.sleep(0.5)
                except AzureError as error:
                    raise StartupError(
                        f"queue '{spec.queue_name}' on '{spec.connection}' is unusable: {error}"
                    ) from error
            self.listeners.append(listener)
        for listener in self.listeners:
            listener.start()

    def _start_timers(self, loaded: LoadedApp) -> None:
        """Timer triggers: run-on-startup invocations begin now, without holding up the start."""
        for spec in loaded.timers:
            timer = TimerListener(spec, self.invoker)
            timer.start()
            self.timers.append(timer)

    async def _start_http(self, front: HttpFrontEnd, port: int) -> int:
        self.runner = web.AppRunner(
            front.make_app(),
            access_log=logging.getLogger("aiohttp.access")
            if log.isEnabledFor(logging.DEBUG)
            else None,
            shutdown_timeout=_env_number(
                os.environ, "DEVHOST_SHUTDOWN_SECONDS", DEFAULT_SHUTDOWN_SECONDS
            ),
            auto_decompress=False,  # the host hands request bodies over as sent (no gunzip)
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.options.host, port)
        try:
            await site.start()
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {self.options.host} is already in use"
                ) from error
            raise
        address = self.runner.addresses[0]
        return int(address[1])

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_stop)
        try:
            loaded, config, port = self._prepare()
            await self._start_listeners(loaded, config)
            self._start_timers(loaded)
            catalog: list[dict[str, Any]] = []
            viewer = MailViewer(os.environ, config.http.route_prefix)
            front = HttpFrontEnd(
                loaded.http,
                self.invoker,
                max_body=max_request_bytes(),
                catalog=lambda: catalog,
                extensions=[viewer.register],
            )
            bound = await self._start_http(front, port)
            base_url = f"http://{self.options.host}:{bound}"
            catalog.extend(_catalog(loaded, base_url, config.http.route_prefix))
            _print_functions(catalog)
            front.state = "Running"
            print(f"Mail viewer: {base_url}{MAIL_VIEWER_PATH}", flush=True)
            print(f"Dev host ready: {base_url} ({len(loaded.runnable)} functions)", flush=True)
            await self._stop.wait()
            front.state = "Stopping"
            log.info("Stopping the dev host")
        finally:
            await self._shutdown()
        log.info("Dev host stopped")
        return 0

    async def _drain(self, budget: float) -> None:
        pending = {task for listener in self.listeners for task in listener.in_flight}
        pending |= {task for timer in self.timers for task in timer.in_flight}
        if pending:
            log.info("Waiting up to %.0f s for %d running invocation(s)", budget, len(pending))
        steps: list[Awaitable[Any]] = [asyncio.wait(pending, timeout=budget)] if pending else []
        if self.runner is not None:
            steps.append(self.runner.cleanup())  # waits for HTTP requests in progress
        await asyncio.gather(*steps)

    async def _shutdown(self) -> None:
        """Stop polling, let running invocations finish (bounded), then close everything."""
        budget = _env_number(os.environ, "DEVHOST_SHUTDOWN_SECONDS", DEFAULT_SHUTDOWN_SECONDS)
        await asyncio.gather(
            *(listener.stop() for listener in self.listeners),
            *(timer.stop() for timer in self.timers),
        )
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._drain(budget)),
            asyncio.ensure_future(self._force.wait()),
        }
        _, unfinished = await asyncio.wait(
            waiters, timeout=budget + 5, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in unfinished:
            waiter.cancel()
        for service in self.services.values():
            await service.close()
        for keeper in self.lease_keepers.values():
            await keeper.stop()
        abandoned = self.invoker.in_flight
        self.invoker.close()
        if abandoned:
            log.warning(
                "%d invocation(s) still running were abandoned; their queue messages "
                "reappear when their lease expires",
                abandoned,
            )
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)  # a stuck sync function would otherwise block the interpreter's exit


def _shorten_pacing_window(environ: Mapping[str, str]) -> None:
    """``DEVHOST_PACING_WINDOW_SECONDS``: the gateway's rolling 24-hour sending window shortened
    to this many seconds, so that a test sees over-budget mail go out after its wait."""
    seconds = _env_number(environ, "DEVHOST_PACING_WINDOW_SECONDS", 0)
    if seconds <= 0:
        return
    from mailgw.pacing.budget import use_test_window

    window = use_test_window(int(seconds))
    log.warning("Pacing window shortened to %ss (DEVHOST_PACING_WINDOW_SECONDS)", window.seconds)
