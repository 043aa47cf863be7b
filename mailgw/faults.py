"""Fail points for crash tests: ``MAILGW_FAULT_INJECTION=after_send`` kills the process there.

The crash tests must stop a worker at an exact line (after Graph accepted a message, before the
queue message is deleted) to prove nothing is lost or sent twice. Off unless the variable is set;
never set it in production.
"""

from __future__ import annotations

import logging
import os

POINTS = ("before_send", "after_send", "after_record")


def point(name: str) -> None:
    if name in os.environ.get("MAILGW_FAULT_INJECTION", "").split(","):
        logging.getLogger("mailgw.faults").critical(
            "fault injection: killing the process at %s", name
        )
        logging.shutdown()
        os._exit(70)
