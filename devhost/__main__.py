"""``python -m devhost``: run a function app locally the way ``func start`` would."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LOG_FORMAT = "[%(asctime)s.%(msecs)03dZ] %(levelname)s %(name)s: %(message)s"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description="Serve a Python v2 function app's HTTP triggers and run its queue and timer "
        "triggers with the Functions host's semantics (a local stand-in for `func start`).",
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=Path("."),
        help="folder with function_app.py, host.json, local.settings.json",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="HTTP port (default: Host.LocalHttpPort of local.settings.json, "
        "else 7071; 0 picks a free port)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="debug logging, including HTTP access and Azure SDK logs",
    )
    return parser.parse_args(argv)


def configure_logging(verbose: bool) -> None:
    """Timestamped UTC lines on stderr; ``DEVHOST_LOG_LEVEL`` or ``--verbose`` set the level."""
    level_name = "DEBUG" if verbose else os.environ.get("DEVHOST_LOG_LEVEL", "INFO").upper()
    level = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if level > logging.DEBUG:
        # The Azure SDK logs every request at INFO; the host does not show those either.
        logging.getLogger("azure").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    from devhost.app_loader import AppLoadError
    from devhost.host import DevHost, HostOptions, StartupError  # after logging is set up
    from devhost.settings import SettingsError
    from mailgw.storage import StorageConfigError

    host = DevHost(HostOptions(app_dir=args.app_dir, host=args.host, port=args.port))
    try:
        return asyncio.run(host.run())
    except (StartupError, AppLoadError, SettingsError, StorageConfigError, ValueError) as error:
        logging.getLogger("devhost").error("Dev host failed to start: %s", error)
        return 1
    finally:
        # The Functions programming model gives an app no shutdown hook, so clients it created
        # lazily are reclaimed with the process (as in Azure); that is not an error worth a report.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    sys.exit(main())
