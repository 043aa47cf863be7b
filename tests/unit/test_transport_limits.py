"""The gateway knows its transport's limits (issue 16, item 3): a message Graph can never take in
the configured mode is a 413 at intake with what to do, not a 202 that fails seconds later."""

from __future__ import annotations

import os

import pytest
from unit_helpers import NOW, b64, valid_request

from mailgw.models import SendRequest
from mailgw.settings import Settings
from mailgw.transports import check_fits
from support import raises_problem


def request_with(size: int, **overrides: object) -> SendRequest:
    attachment = {"name": "big.pdf", "contentBase64": b64(os.urandom(size))}
    return SendRequest.model_validate(
        valid_request(attachments=[attachment], **overrides), context={"now": NOW}
    )


def test_30_mb_in_sendmail_mode_is_a_413_that_names_draft_mode() -> None:
    settings = Settings(transport="graph", graph_mode="sendmail")
    with raises_problem() as caught:
        check_fits(settings, "00000000-0000-7000-8000-000000000000", request_with(30 * 2**20))
    problem = caught.value
    assert problem.status == 413
    assert "MAILGW_GRAPH_MODE=draft" in problem.detail and "150 MB" in problem.detail
    assert [e.field for e in problem.errors] == ["attachments"]


@pytest.mark.parametrize("size", [1024, 2 * 2**20, int(2.8 * 2**20)])
def test_what_fits_one_request_passes(size: int) -> None:
    check_fits(Settings(transport="graph", graph_mode="sendmail"), "m", request_with(size))


@pytest.mark.parametrize(
    "settings",
    [
        Settings(transport="graph", graph_mode="draft"),
        Settings(transport="outbox"),
        Settings(transport="smtp"),
    ],
    ids=["draft", "outbox", "smtp"],
)
def test_other_modes_take_30_mb(settings: Settings) -> None:
    check_fits(settings, "m", request_with(30 * 2**20))


def test_a_body_over_4_mb_is_refused_even_in_draft_mode() -> None:
    request = SendRequest.model_validate(
        valid_request(text=None, html="<p>" + "x" * 4_100_000 + "</p>"), context={"now": NOW}
    )
    with raises_problem() as caught:
        check_fits(Settings(transport="graph", graph_mode="draft"), "m", request)
    assert caught.value.status == 413
    assert [e.field for e in caught.value.errors] == ["html"]
