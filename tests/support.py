"""Helpers shared by the tests: sample requests and waiting for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar

from devhost.azurite import free_ports
from mailgw.storage import azurite_connection_string

T = TypeVar("T")


def sample_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "noreply@contoso.com",
        "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
        "subject": "Your receipt",
        "text": "plain body",
        "html": "<p>html body</p>",
    }
    body.update(overrides)
    return body


class TransportDefaults:
    """What the tests' scripted transports share: the parts of ``Transport`` they do not script."""

    async def probe(self, mailbox: str | None) -> str:
        return f"{mailbox or 'no mailbox'}: a test transport probes nothing"

    async def aclose(self) -> None:
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _until_deadline(timeout: float, what: str) -> Iterator[None]:
    """One step per poll; after ``timeout`` seconds, the next step fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` on timeout."""
    for _ in _until_deadline(timeout, what):
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError("unreachable")


async def wait_until_async(
    predicate: Callable[[], Awaitable[T | Literal[False] | None]],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """:func:`wait_until` for an async ``predicate``."""
    for _ in _until_deadline(timeout, what):
        if value := await predicate():
            return value
        await asyncio.sleep(interval)
    raise AssertionError("unreachable")


async def pull(queue: Any, name: str | None = None) -> Any:
    """Receive (and delete) one visible message of a ``MailQueue``'s queue as the host would when
    its function succeeds, or None."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        async for message in queue.queue(name).receive_messages(visibility_timeout=30):
            await queue.queue(name).delete_message(message)
            return message
    except ResourceNotFoundError:
        pass  # the queue does not exist yet: nothing was ever sent to it
    return None


async def depth(queue: Any, name: str | None = None) -> int:
    """Approximate message count of a ``MailQueue``'s queue (0 if it does not exist yet)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        props = await queue.queue(name).get_queue_properties()
    except ResourceNotFoundError:
        return 0
    return int(props.approximate_message_count)


#: Storage that refuses every connection: Azurite's account on port 9 (discard), nothing listening.
DEAD_STORAGE = azurite_connection_string(ports={"blob": 9, "queue": 9, "table": 9})


#: The default MAILGW_RETENTION_DAYS, as a duration.
RETENTION = timedelta(days=30)


def new_record(message_id: str, status: Any, *, now: datetime | None = None, **fields: Any) -> Any:
    """A state record as the gateway would write it (now, kept for the default retention)."""
    from mailgw.state import machine

    return machine.new_record(
        message_id, status, now=now or datetime.now(UTC), retention=RETENTION, **fields
    )


class CaughtProblem:
    """What :func:`raises_problem` caught: the problem an HTTP caller would have seen."""

    value: Any = None


@contextlib.contextmanager
def raises_problem() -> Iterator[CaughtProblem]:
    """Like ``pytest.raises``, for the gateway's domain errors, rendered through the HTTP table
    (``functions/problems.py``) as the caller sees them: ``caught.value.status`` and so on."""
    import pytest

    from functions.problems import problem_for
    from mailgw.errors import GatewayError

    caught = CaughtProblem()
    with pytest.raises(GatewayError) as raised:
        yield caught
    caught.value = problem_for(raised.value)


def _test_seal() -> Any:
    from mailgw.seal import EnvelopeSeal

    return EnvelopeSeal.with_key(b"mailgw-tests-envelope-key-000000")


#: The seal of the tests' own queues (the gateway keeps its key in the state table; tests that
#: build a MailQueue by hand seal with this fixed one).
TEST_SEAL = _test_seal()


async def sealed(envelope: Any, seal: Any = None) -> str:
    """An envelope as the gateway writes it to the queue: sealed (``TEST_SEAL`` unless told)."""
    import json

    stamped = await (seal or TEST_SEAL).seal(envelope)
    return json.dumps(stamped.to_json())


class QuietHandler(BaseHTTPRequestHandler):
    """A stand-in's request handler that keeps the test output free of access logs."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free 127.0.0.1 port in a thread; yields ``http://127.0.0.1:<port>``
    and stops the server on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A port on 127.0.0.1 the OS reports free now (another process may still take it)."""
    return free_ports(1)[0]


def fresh_storage(azurite: Any, prefix: str) -> dict[str, str]:
    """The settings of a queue, a payload container and a state table of the test's own on
    ``azurite`` (``prefix``: lowercase letters, so that every name is valid)."""
    run = uuid.uuid4().hex[:10]
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "MAILGW_QUEUE": f"{prefix}-{run}",
        "MAILGW_STATE_TABLE": f"{prefix}{run}",
        "MAILGW_PAYLOAD_CONTAINER": f"{prefix}-payloads-{run}",
    }


def run_mailgw(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``mailgw ARGS`` as a user runs it: the installed console script, in its own process, with
    ``env`` (default: this environment without the gateway's settings) and ``cwd``."""
    script = Path(sys.executable).with_name("mailgw")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mailgw"]
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    return run_captured([*command, *args], cwd=cwd, env=env, timeout=timeout)


def run_captured(
    command: Sequence[str | Path],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end, its output captured as text. It never raises on a non-zero
    exit: the caller asserts the return code, with the output in the message."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
