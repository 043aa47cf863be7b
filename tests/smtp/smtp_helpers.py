"""Helpers for the SMTP transport tests. The request builders and the queue Pipeline are the Graph
tests' own (tests/graph/graph_helpers.py), so both transports are driven the same way."""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage
from typing import Any

from graph.graph_helpers import Pipeline, Step, attachment, b64, body, outbound, request

from mailgw.transports.base import OutboundMessage
from mailgw.transports.errors import DeliveryError
from mailgw.transports.smtp import SmtpTransport

__all__ = [
    "SENDER",
    "Pipeline",
    "Step",
    "addresses",
    "attachment",
    "b64",
    "body",
    "outbound",
    "parse",
    "request",
    "send_failing",
]

SENDER = "noreply@contoso.com"


def parse(data: bytes) -> EmailMessage:
    """The DATA bytes as a receiving MTA would read them."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def addresses(message: EmailMessage, header: str) -> list[tuple[str, str]]:
    """``[(display name, address), ...]`` of an address header, [] when absent."""
    value: Any = message[header]
    if value is None:
        return []
    return [(a.display_name, a.addr_spec) for a in value.addresses]


async def send_failing(transport: SmtpTransport, message: OutboundMessage) -> DeliveryError:
    """Send, expecting a classified failure (anything else escaping is a crash: the test fails)."""
    try:
        receipt = await transport.send(message)
    except DeliveryError as error:
        return error
    raise AssertionError(f"expected a DeliveryError, the message was sent: {receipt}")
