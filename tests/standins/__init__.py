"""Protocol stand-ins: real HTTP servers on 127.0.0.1 that speak just enough of Azure's protocols
for the real client libraries (azure-identity, msgraph-sdk/kiota) to run their own code.

- :mod:`standins.identity`: the App Service managed identity endpoint (``IDENTITY_ENDPOINT`` /
  ``IDENTITY_HEADER``) and a minimal Entra ID token endpoint for the federated flow.
- :mod:`standins.graph`: the Microsoft Graph v1.0 mail endpoints (sendMail, drafts, attachments,
  upload sessions), with recording and fault injection.
- :mod:`standins.smtp`: Exchange Online's SMTP submission and relay endpoints (aiosmtpd).
- :mod:`standins.entra`: Entra ID as a resource API sees it (OpenID metadata, signing keys).

What they share lives here: the server lifecycle (:class:`StandInServer`), one fault model
(:mod:`standins.faults`), one admin API shape and its client (:mod:`standins.admin`), and one way
to wait for what they recorded (:mod:`standins.waiting`).

Every stand-in shares the lifecycle of :class:`StandInServer`: ``async with`` in the test's event
loop, ``start_in_thread()`` / ``stop()`` for synchronous tests, and a ``python -m`` command line
for tests whose client runs in another process. Nothing here listens on anything but loopback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import signal
import socket
import sys
import threading
from collections.abc import Collection, Mapping
from typing import Any, Generic, Self

from aiohttp import web

from standins.admin import RemoteAdmin, admin_routes
from standins.faults import F, FaultQueue
from standins.waiting import poll_until, poll_until_async, wait_recorded, wait_recorded_async

__all__ = [
    "LOOPBACK",
    "RemoteAdmin",
    "StandInServer",
    "grants",
    "json_response",
    "poll_until",
    "poll_until_async",
    "wait_recorded",
    "wait_recorded_async",
]

LOOPBACK = "127.0.0.1"


def _bind(host: str, port: int) -> socket.socket:
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(f"stand-ins listen on loopback only, not {host!r}")
    sock = socket.socket(socket.AF_INET6 if host == "::1" else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class StandInServer(Generic[F]):
    """An aiohttp application on a loopback socket, usable three ways.

    ``async with Server() as s`` starts it in the running loop; ``s = Server().start_in_thread()``
    runs it on a private loop in a daemon thread (``s.stop()`` ends it); ``run_cli`` serves until
    SIGINT/SIGTERM and prints one ``READY {json}`` line first, so a parent process can wait for it.

    State that tests read (lists of recorded requests) is appended from the server's loop; list
    appends are atomic, so a test thread may read them while the server runs. Scripted faults wait
    in :attr:`fault_queue`; :meth:`new_app` serves the admin API (:mod:`standins.admin`) from the
    hooks below, which a stand-in overrides where it records, takes faults or has settings.

    ``port_fallback``: when ``port`` is taken, listen on a free port instead (``make run`` asks
    for a fixed port so its address stays the same from run to run, but must not fail because
    another program has it); :attr:`requested_port` keeps what was asked for.
    """

    #: seconds aiohttp waits for running handlers when the server closes
    shutdown_timeout = 0.5

    def __init__(self, *, host: str = LOOPBACK, port: int = 0, port_fallback: bool = False) -> None:
        self.host = host
        self.requested_port = port
        self.port_fallback = port_fallback
        self.fault_queue: FaultQueue[F] = FaultQueue()
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # --- to implement -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def _start_extra_sites(self, runner: web.AppRunner) -> None:
        """Hook for subclasses that listen on a second socket (e.g. TLS)."""

    async def _on_close(self) -> None:
        """Hook for subclasses to release resources."""

    # --- the admin API (see standins.admin) ---------------------------------------------------
    def new_app(self, **options: Any) -> web.Application:
        """An application that already serves the admin API; add the protocol's routes to it."""
        app = web.Application(**options)
        app.router.add_routes(admin_routes(self))
        return app

    def recordings(self) -> Mapping[str, list[Any]]:
        """What ``GET /_standin/<name>`` lists (items with ``to_json()``); reset clears them."""
        return {}

    def stats(self) -> dict[str, Any]:
        counts: dict[str, Any] = {name: len(items) for name, items in self.recordings().items()}
        return {**counts, "pendingFaults": self.pending_fault_count()}

    def add_fault_json(self, item: Mapping[str, Any]) -> object:
        """Script a fault from its JSON form (``POST /_standin/faults``)."""
        raise ValueError(f"{type(self).__name__} takes no scripted faults")

    def add_fault(self, fault: F) -> F:
        """Script ``fault`` (see :mod:`standins.faults`)."""
        return self.fault_queue.add(fault)

    def pending_fault_count(self) -> int:
        return len(self.fault_queue)

    def clear_faults(self) -> None:
        self.fault_queue.clear()

    def reset(self) -> None:
        """Forget scripted faults and everything recorded."""
        self.fault_queue.clear()
        for items in self.recordings().values():
            items.clear()

    def configure_json(self, config: Mapping[str, Any]) -> None:
        """Change settings from their JSON form (``POST /_standin/config``)."""
        if config:
            raise ValueError(f"{type(self).__name__} has no settings {sorted(config)}")

    # --- address ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port of the HTTP app (a stand-in with another protocol may redefine it)."""
        return self._http_port()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the HTTP app (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._http_port()}"

    def _http_port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def started(self) -> bool:
        return self._runner is not None

    # --- in the caller's loop -----------------------------------------------------------------
    async def start(self) -> Self:
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        app = self.build_app()
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
            handler_cancellation=True,
        )
        await runner.setup()
        sock = self._bind_main_socket()
        site = web.SockSite(runner, sock)
        await site.start()
        self._port = int(sock.getsockname()[1])
        self._runner = runner
        await self._start_extra_sites(runner)
        return self

    def _bind_main_socket(self) -> socket.socket:
        try:
            return _bind(self.host, self.requested_port)
        except OSError as exc:
            if not (self.port_fallback and self.requested_port and exc.errno == errno.EADDRINUSE):
                raise
            return _bind(self.host, 0)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._on_close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- in a thread --------------------------------------------------------------------------
    def start_in_thread(self, timeout: float = 10.0) -> Self:
        """Serve from a daemon thread with its own event loop; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already runs in a thread")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # report to the caller instead of dying silently
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread_loop = loop
        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread`."""
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._thread_loop = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- as a process -------------------------------------------------------------------------
    def ready_info(self) -> dict[str, Any]:
        return {"url": self.url}

    @property
    def port_taken(self) -> bool:
        """Whether the fixed port asked for was taken, so another one serves (``port_fallback``)."""
        return bool(self.requested_port) and self._port != self.requested_port

    def run_cli(self) -> None:
        """Serve until SIGINT/SIGTERM; first print ``READY {json}`` (see :meth:`ready_info`)."""

        async def main() -> None:
            await self.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            info = self.ready_info()
            if self.port_taken:
                info["portTaken"] = self.requested_port
            sys.stdout.write("READY " + json.dumps(info) + "\n")
            sys.stdout.flush()
            try:
                await stop.wait()
            finally:
                await self.close()

        asyncio.run(main())


def grants(mapping: Mapping[str, Collection[str]] | None) -> dict[str, set[str]] | None:
    """``{mailbox: addresses}`` in lower case (Exchange compares addresses case-insensitively);
    ``None`` stays ``None`` (no check)."""
    if mapping is None:
        return None
    return {key.lower(): {value.lower() for value in values} for key, values in mapping.items()}


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers=headers,
    )
