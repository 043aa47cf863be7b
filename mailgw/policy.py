"""Sender policy: which ``from`` mailboxes this gateway may send as (``MAILGW_ALLOWED_SENDERS``).

Enforced at intake and again at delivery (queue producers bypass intake). An empty policy allows
nobody: a gateway that can send as anyone in the tenant is exactly what an attacker wants.
"""

from __future__ import annotations

from collections.abc import Iterable


class SenderPolicy:
    def __init__(self, entries: Iterable[str]):
        self.addresses: frozenset[str] = frozenset()
        self.domains: frozenset[str] = frozenset()
        addresses, domains = set(), set()
        for entry in entries:
            entry = entry.strip().lower()
            if entry.startswith("*@"):
                domains.add(entry[2:])
            elif entry:
                addresses.add(entry)
        self.addresses, self.domains = frozenset(addresses), frozenset(domains)

    def allows(self, address: str) -> bool:
        """Exact mailbox match, or ``*@domain`` for that domain only (not its subdomains)."""
        address = address.strip().lower()
        return address in self.addresses or address.rpartition("@")[2] in self.domains

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)


def denial_reason(policy: SenderPolicy, address: str) -> str:
    if not policy:
        return (
            "MAILGW_ALLOWED_SENDERS is empty, so this gateway allows no sender; "
            "add the mailbox (or *@its-domain) to the setting"
        )
    return f"'{address}' is not in MAILGW_ALLOWED_SENDERS"
