"""Helpers for crash tests: a dev host that kills itself at a fail point, and its successor.

``MAILGW_FAULT_INJECTION`` (mailgw/faults.py) makes the worker ``os._exit(70)`` at an exact line
of delivery. The successor is a fresh dev host process on the same queue, payload container,
outbox and transport settings, without the fault: what Azure does when it replaces a dead worker.
A short ``DEVHOST_QUEUE_LEASE_SECONDS`` makes the dead worker's message visible again quickly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway_host import DevHost

from support import wait_until

LEASE_SECONDS = "3"
FAULT_EXIT_CODE = 70  # mailgw.faults.point's os._exit code
#: settings that make a successor host the same deployment as the one that died
_CARRIED_PREFIXES = ("MAILGW_", "IDENTITY_", "AZURE_", "AzureFunctionsJobHost__", "DEVHOST_")


def start_crashing_host(start_devhost: Callable[..., DevHost], fault: str, **env: str) -> DevHost:
    """A dev host that dies at ``fault`` (before_send | after_send | after_record)."""
    return start_devhost(
        MAILGW_FAULT_INJECTION=fault, DEVHOST_QUEUE_LEASE_SECONDS=LEASE_SECONDS, **env
    )


def wait_for_crash(host: DevHost, timeout: float = 30) -> int:
    """Wait for the process to die at its fail point; returns its exit code."""
    wait_until(lambda: host.process.poll() is not None, timeout=timeout, what="the crash")
    code = host.process.returncode
    assert code == FAULT_EXIT_CODE, (
        f"dev host exited with {code}, not the fault's exit:\n{host.log()}"
    )
    assert "fault injection: killing the process" in host.log()
    return int(code)


def start_successor(start_devhost: Callable[..., DevHost], crashed: DevHost) -> DevHost:
    """A new dev host on the crashed one's queue, storage names, outbox and transport, without
    the fault injection."""
    carried = {
        key: value
        for key, value in crashed.env.items()
        if key.startswith(_CARRIED_PREFIXES) and key != "MAILGW_FAULT_INJECTION"
    }
    successor = start_devhost(**carried)
    assert successor.queue == crashed.queue
    assert successor.outbox == crashed.outbox
    assert "MAILGW_FAULT_INJECTION" not in successor.env
    return successor


def status_of(host: DevHost, message_id: str) -> dict[str, Any]:
    return host.status(message_id)


def wait_for_status(
    host: DevHost, message_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    return wait_until(
        lambda: host.status(message_id, status),
        timeout=timeout,
        what=f"message {message_id} {status}",
    )


def outcomes(state: dict[str, Any]) -> list[str]:
    return [step["outcome"] for step in state.get("history", [])]


def failure_events(host: DevHost, message_id: str) -> list[dict[str, Any]]:
    """The ``MAILGW_FAILED {json}`` lines the dev host logged for one message."""
    events = []
    for line in host.log().splitlines():
        _, marker, rest = line.partition("MAILGW_FAILED ")
        if not marker:
            continue
        try:
            event = json.loads(rest)
        except ValueError:
            continue
        if event.get("messageId") == message_id:
            events.append(event)
    return events
