"""``make run`` (scripts/run_local.py) as a newcomer starts it, for the tests that drive it: a
copy of the checkout's files, a clean environment, and the process up to its banner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from support import wait_until

ROOT = Path(__file__).resolve().parents[1]
#: what run_local.py needs of a checkout (it imports the dev host, the core and the stand-ins)
CHECKOUT = [
    "function_app.py",
    "host.json",
    "local.settings.sample.json",
    "functions",
    "mailgw",
    "devhost",
    "scripts/run_local.py",
    "tests/standins",
    "tests/support.py",
]


def copy_checkout(target: Path, names: Iterable[str] = CHECKOUT) -> Path:
    """The files ``names`` (paths from the checkout's root) copied into ``target``."""
    ignore = shutil.ignore_patterns("__pycache__")
    for name in names:
        source = ROOT / name
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def clean_environment(**settings: str) -> dict[str, str]:
    """This environment without the gateway's settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGW_", "Azure"))}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


@contextmanager
def running(checkout: Path, env: Mapping[str, str], timeout: float) -> Iterator[list[str]]:
    """``make run`` in ``checkout``: its output lines up to the banner once it is printed;
    stopped with Ctrl-C afterwards."""
    process = subprocess.Popen(
        [sys.executable, "scripts/run_local.py"],
        cwd=checkout,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output: list[str] = []
    stdout: IO[str] | None = process.stdout
    assert stdout is not None

    def banner_printed() -> bool:
        line = stdout.readline()
        output.append(line)
        return "Stop: Ctrl-C" in line or process.poll() is not None

    wait_until(banner_printed, timeout=timeout, interval=0, what="make run's banner")
    assert process.poll() is None, "".join(output)
    try:
        yield output
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
