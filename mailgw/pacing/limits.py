"""The sending limits a mailbox is paced to: defaults, per-mailbox overrides, the tenant's budget.

Exchange Online limits each mailbox to 10,000 recipients in a rolling 24 hours and 30 messages a
minute (SMTP client submission), Graph to 4 concurrent requests per app and mailbox, and the
tenant as a whole to its TERRL (500 x licences^0.7 + 9,500 recipients a day). The gateway keeps
its own use under these limits so that over-limit mail waits instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_DAILY_RECIPIENTS = 10_000
#: Exchange Online's SMTP submission limit; the default only for MAILGW_TRANSPORT=smtp
SMTP_PER_MINUTE = 30
DEFAULT_CONCURRENCY = 4
#: the keys of one mailbox's entry in MAILGW_MAILBOX_LIMITS
OVERRIDE_KEYS = {"dailyRecipients", "perMinute", "concurrency"}


class LimitsError(ValueError):
    """MAILGW_MAILBOX_LIMITS is malformed; the message says where."""


@dataclass(frozen=True)
class MailboxLimits:
    """One mailbox's budget. ``per_minute`` None: no per-minute pacing."""

    daily_recipients: int = DEFAULT_DAILY_RECIPIENTS
    per_minute: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    def as_json(self) -> dict[str, Any]:
        return {
            "dailyRecipients": self.daily_recipients,
            "perMinute": self.per_minute,
            "concurrency": self.concurrency,
        }


@dataclass(frozen=True)
class PacingLimits:
    """Every mailbox's limits: the default, the overrides (by lower-case address), the tenant's."""

    default: MailboxLimits = field(default_factory=MailboxLimits)
    overrides: Mapping[str, MailboxLimits] = field(default_factory=dict)
    #: MAILGW_TENANT_DAILY_RECIPIENTS; None: not paced tenant-wide
    tenant_daily_recipients: int | None = None

    def for_mailbox(self, mailbox: str) -> MailboxLimits:
        return self.overrides.get(mailbox.strip().lower(), self.default)


def parse_overrides(raw: str, default: MailboxLimits) -> dict[str, MailboxLimits]:
    """``{"hve@contoso.com": {"dailyRecipients": 100000, "perMinute": 60}}``: each entry changes
    only the limits it names; ``"perMinute": null`` turns per-minute pacing off for that mailbox."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as error:
        raise LimitsError(f"MAILGW_MAILBOX_LIMITS is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise LimitsError("MAILGW_MAILBOX_LIMITS must be a JSON object keyed by mailbox address")
    overrides: dict[str, MailboxLimits] = {}
    for address, entry in parsed.items():
        where = f"MAILGW_MAILBOX_LIMITS[{address!r}]"
        local, at, domain = address.strip().partition("@")
        if not (local and at and domain) or "@" in domain:
            raise LimitsError(f"{where}: the key must be a mailbox address")
        if not isinstance(entry, dict) or not entry or set(entry) - OVERRIDE_KEYS:
            raise LimitsError(
                f"{where} must be an object with some of {', '.join(sorted(OVERRIDE_KEYS))}"
            )
        limits = default
        if "dailyRecipients" in entry:
            limits = replace(limits, daily_recipients=_count(entry["dailyRecipients"], where))
        if "perMinute" in entry:
            value = entry["perMinute"]
            limits = replace(limits, per_minute=None if value is None else _count(value, where))
        if "concurrency" in entry:
            limits = replace(limits, concurrency=_concurrency(entry["concurrency"], where))
        overrides[address.strip().lower()] = limits
    return overrides


def mailbox_address(text: str) -> str:
    """An address named by an operator (a URL path, the CLI), checked and normalised as a send
    request's ``from`` is; anything else is :class:`~mailgw.errors.InvalidMailbox`."""
    from mailgw.errors import InvalidMailbox
    from mailgw.models import Recipient

    try:
        return Recipient.model_validate({"address": text}).address.lower()
    except ValueError as error:
        raise InvalidMailbox(f"{text[:320]!r} is not a mailbox address") from error


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LimitsError(f"{where}: limits are positive whole numbers; got {value!r}")
    return value


def _concurrency(value: object, where: str) -> int:
    count = _count(value, where)
    if count > DEFAULT_CONCURRENCY:
        raise LimitsError(f"{where}: concurrency is 1-4 (Graph's limit per mailbox); got {count}")
    return count
