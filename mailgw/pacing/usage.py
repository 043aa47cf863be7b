"""What ``GET /api/v1/mailboxes/{address}/usage`` and ``mailgw usage`` show: each budget's limit
and use (docs/operations.md, "Budgets and pacing")."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RecipientsUse(_Model):
    """Recipients in the rolling 24 hours: ``used`` counts what the instances hold reserved
    (``reserved``) as well as what they sent."""

    limit: int
    used: int
    reserved: int


class MinuteUse(_Model):
    """Messages this calendar minute; ``limit`` null: not paced per minute."""

    limit: int | None
    used: int


class ConcurrencyUse(_Model):
    """Concurrent requests: the limit, and the slots instances hold now."""

    limit: int
    leased: int


class MailboxUsage(_Model):
    """One sender mailbox's budgets and their use; ``blockedUntil``: Exchange refused for quota
    and the mailbox waits until then (``blockedReason`` is its answer's code)."""

    mailbox: str
    daily_recipients: RecipientsUse
    per_minute: MinuteUse
    concurrency: ConcurrencyUse
    blocked_until: datetime | None = None
    blocked_reason: str | None = None
    #: the tenant's budget, when MAILGW_TENANT_DAILY_RECIPIENTS is set
    tenant_daily_recipients: RecipientsUse | None = None
