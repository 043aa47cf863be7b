"""Sender policy (MAILGW_ALLOWED_SENDERS): exact mailboxes and ``*@domain``, nothing else."""

from __future__ import annotations

import pytest

from mailgw.policy import SenderPolicy, denial_reason

POLICY = SenderPolicy(["noreply@contoso.com", "*@fabrikam.com", " Alerts@Northwind.example "])


@pytest.mark.parametrize(
    "address",
    [
        "noreply@contoso.com",
        "NoReply@Contoso.COM",
        " noreply@contoso.com ",
        "anyone@fabrikam.com",
        "Billing@FABRIKAM.COM",
        "alerts@northwind.example",
        "ALERTS@NORTHWIND.EXAMPLE",
    ],
)
def test_allowed(address: str) -> None:
    assert POLICY.allows(address)


@pytest.mark.parametrize(
    "address",
    [
        "other@contoso.com",  # the exact entry allows only that mailbox, not its domain
        "noreply@contoso.com.evil.example",
        "noreply@sub.contoso.com",
        "a@mail.fabrikam.com",  # *@domain does not reach subdomains
        "a@evilfabrikam.com",  # nor domains that merely end with the same letters
        "a@fabrikam.com.evil.example",
        '"noreply@contoso.com"@evil.example',  # quoted local part that looks like an entry
        "noreply@contoso.co",
        "alerts@northwind.example.org",
        "",
    ],
)
def test_denied(address: str) -> None:
    assert not POLICY.allows(address)


def test_entries_are_normalised() -> None:
    assert POLICY.addresses == frozenset({"noreply@contoso.com", "alerts@northwind.example"})
    assert POLICY.domains == frozenset({"fabrikam.com"})


def test_empty_policy_allows_nobody() -> None:
    for empty in (SenderPolicy([]), SenderPolicy(["", "  "])):
        assert not empty
        assert not empty.allows("noreply@contoso.com")
        assert not empty.allows("")
    assert POLICY


def test_denial_reason_names_the_setting() -> None:
    assert denial_reason(POLICY, "x@contoso.com") == (
        "'x@contoso.com' is not in MAILGW_ALLOWED_SENDERS"
    )
    empty_reason = denial_reason(SenderPolicy([]), "x@contoso.com")
    assert "MAILGW_ALLOWED_SENDERS is empty" in empty_reason
    assert "*@" in empty_reason  # tells the operator the pattern form, too
