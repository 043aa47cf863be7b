"""Protocol stand-ins: real HTTP servers on 127.0.0.1 that speak just enough of Azure's protocols
for the real client libraries (azure-identity, msgraph-sdk/kiota) to run their own code.

- :mod:`standins.identity`: the App Service managed identity endpoint (``IDENTITY_ENDPOINT`` /
  ``IDENTITY_HEADER``) and a minimal Entra ID token endpoint for the federated flow.
- :mod:`standins.graph`: the Microsoft Graph v1.0 mail endpoints (sendMail, drafts, attachments,
  upload sessions), with recording and fault injection.

Every stand-in shares the lifecycle of :class:`StandInServer`: ``async with`` in the test's event
loop, ``start_in_thread()`` / ``stop()`` for synchronous tests, and a ``python -m`` command line
for tests whose client runs in another process. Nothing here listens on anything but loopback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from support import wait_until

__all__ = [
    "LOOPBACK",
    "RemoteAdmin",
    "StandInServer",
    "json_response",
    "poll_until",
    "poll_until_async",
]

LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def _bind(host: str, port: int) -> socket.socket:
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(f"stand-ins listen on loopback only, not {host!r}")
    sock = socket.socket(socket.AF_INET6 if host == "::1" else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class StandInServer:
    """An aiohttp application on a loopback socket, usable three ways.

    ``async with Server() as s`` starts it in the running loop; ``s = Server().start_in_thread()``
    runs it on a private loop in a daemon thread (``s.stop()`` ends it); ``run_cli`` serves until
    SIGINT/SIGTERM and prints one ``READY {json}`` line first, so a parent process can wait for it.

    State that tests read (lists of recorded requests) is appended from the server's loop; list
    appends are atomic, so a test thread may read them while the server runs.
    """

    #: seconds aiohttp waits for running handlers when the server closes
    shutdown_timeout = 0.5

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    # --- to implement -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def _start_extra_sites(self, runner: web.AppRunner) -> None:
        """Hook for subclasses that listen on a second socket (e.g. TLS)."""

    async def _on_close(self) -> None:
        """Hook for subclasses to release resources."""

    # --- address ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
        sock = _bind(self.host, self._requested_port)
        site = web.SockSite(runner, sock)
        await site.start()
        self._port = int(sock.getsockname()[1])
        self._runner = runner
        await self._start_extra_sites(runner)
        return self

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._on_close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- as a process -------------------------------------------------------------------------
    def ready_info(self) -> dict[str, Any]:
        return {"url": self.url}

    def run_cli(self) -> None:
        """Serve until SIGINT/SIGTERM; first print ``READY {json}`` (see :meth:`ready_info`)."""

        async def main() -> None:
            await self.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            sys.stdout.write("READY " + json.dumps(self.ready_info()) + "\n")
            sys.stdout.flush()
            try:
                await stop.wait()
            finally:
                await self.close()

        asyncio.run(main())


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers=headers,
    )


class RemoteAdmin:
    """Synchronous client of a stand-in's ``/_standin/...`` admin endpoints in another process."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, what: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_standin/{what}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            body = response.read()
        return json.loads(body) if body else None


def poll_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` every 10 ms until truthy (thread-safe reads of stand-in state)."""
    return wait_until(predicate, timeout=timeout, interval=0.01, what=what)


async def poll_until_async(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Async twin of :func:`poll_until`; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
