"""Pacing across instances: every sender mailbox's budgets (recipients per rolling 24 h, messages
per minute, concurrent requests) and the tenant's, shared through Table storage, so that mail over
a limit waits instead of failing. docs/operations.md, "Budgets and pacing"."""

from mailgw.pacing.budget import Window
from mailgw.pacing.limits import MailboxLimits, PacingLimits
from mailgw.pacing.pacer import Deferral, Pacer, Permit
from mailgw.pacing.table import BudgetTable
from mailgw.pacing.usage import MailboxUsage

__all__ = [
    "BudgetTable",
    "Deferral",
    "MailboxLimits",
    "MailboxUsage",
    "Pacer",
    "PacingLimits",
    "Permit",
    "Window",
]
