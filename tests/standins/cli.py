"""The command line the stand-ins share: ``python -m standins.<name> [--port N] ...``.

Each prints one ``READY {json}`` line when it listens (see :meth:`StandInServer.run_cli`), so a
parent process (:mod:`standins.processes`, ``make run``) waits for that instead of guessing.
"""

from __future__ import annotations

import argparse

from standins.identity import DEFAULT_SIGNING_KEY

__all__ = ["signing_key", "stand_in_parser"]


def stand_in_parser(
    name: str, description: str, *, port_flag: str = "--port"
) -> argparse.ArgumentParser:
    """A parser with the options every stand-in takes: its HTTP port (``port_flag``), the
    fallback when that port is taken, and the token signing key shared between stand-ins."""
    parser = argparse.ArgumentParser(prog=f"python -m standins.{name}", description=description)
    parser.add_argument(port_flag, type=int, default=0, help="HTTP port (0: any free one)")
    parser.add_argument(
        "--port-fallback",
        action="store_true",
        help=f"if {port_flag} is taken, listen on a free port (READY then says portTaken)",
    )
    parser.add_argument(
        "--signing-key", default=None, help="token key shared between the stand-ins"
    )
    return parser


def signing_key(args: argparse.Namespace) -> bytes:
    return args.signing_key.encode() if args.signing_key else DEFAULT_SIGNING_KEY
