"""Run checkov with the network switched off (runs in .venv-infra).

The test suite must not reach the network, and checkov would: its guideline download (unless
``--skip-download``), its check for a newer checkov on pypi.org (unless
CKV_SKIP_PACKAGE_UPDATE_CHECK, set below; its answer is cached per user, so a warm cache hid it
on a developer's machine and a fresh CI machine did not), and anything else a new version adds.
Every attempt to resolve a name or open an internet socket fails here and is reported on stderr as
``NETWORK-ATTEMPT <address>``, so the test can insist there was none. Unix sockets
(multiprocessing) stay allowed.

Usage: run_checkov.py <checkov arguments>
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from typing import Any

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _report(address: object) -> None:
    print(f"NETWORK-ATTEMPT {address!r}", file=sys.stderr, flush=True)


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family == socket.AF_UNIX:
        return _real_connect(self, address)
    _report(address)
    raise OSError("network access is disabled during the infrastructure checks")


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if self.family == socket.AF_UNIX:
        return _real_connect_ex(self, address)
    _report(address)
    return 111  # ECONNREFUSED


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    _report(host)
    raise socket.gaierror(socket.EAI_NONAME, "network access is disabled")


socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
socket.getaddrinfo = _guarded_getaddrinfo
os.environ["CKV_SKIP_PACKAGE_UPDATE_CHECK"] = "true"  # read when checkov.main is imported

from checkov.main import Checkov  # noqa: E402  (after the guard, on purpose)

if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=SyntaxWarning)
        sys.exit(Checkov(argv=sys.argv[1:]).run())
