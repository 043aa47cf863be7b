"""One convention for every failure code a message can carry: ``<origin>/<name>``
(docs/problems.md, "Failure codes")."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgw import errors
from mailgw.delivery import FAILURES, failure
from mailgw.operations import CRASH_LOOP
from mailgw.transports.errors import token_unavailable
from mailgw.transports.graph_errors import GRAPH_CODES, classify_graph
from mailgw.transports.smtp_errors import SMTP_CODES, classify_smtp

CODE = re.compile(r"^(graph|smtp|mailgw)/[A-Za-z0-9][A-Za-z0-9._-]*$")


def test_the_gateways_own_failures_follow_the_convention() -> None:
    for code, _hint in FAILURES.values():
        assert CODE.match(code) and code.startswith("mailgw/"), code
    assert CODE.match(CRASH_LOOP.code)
    assert token_unavailable(RuntimeError("x")).code == "mailgw/token-unavailable"


@pytest.mark.parametrize(
    "cls",
    [errors.InvalidMessage, errors.InvalidEnvelope, errors.InvalidRequest, errors.MessageTooLarge,
     errors.SenderNotAllowed, errors.PayloadMissing],
)  # fmt: skip
def test_every_reason_a_queued_message_can_fail_for_has_a_row(cls: type) -> None:
    info = failure(cls("what went wrong"))
    assert info.message == "what went wrong"
    assert info.hint and CODE.match(info.code)


def test_an_error_that_is_not_a_reason_to_fail_stays_a_crash() -> None:
    with pytest.raises(errors.QueueUnavailable):
        failure(errors.QueueUnavailable("storage is down"))


GRAPH_CODE = st.one_of(
    st.none(), st.sampled_from(sorted(GRAPH_CODES)), st.from_regex(r"\A[A-Za-z]{1,30}\Z")
)


@given(status=st.one_of(st.none(), st.integers(min_value=400, max_value=599)), code=GRAPH_CODE)
def test_every_graph_answer_gets_a_graph_code(status: int | None, code: str | None) -> None:
    label = classify_graph(status, code, "message").code
    assert CODE.match(label) and label.startswith("graph/"), label
    if code:
        assert label == f"graph/{code}"  # Graph's own code, verbatim


@given(
    reply=st.integers(min_value=400, max_value=599),
    enhanced=st.one_of(st.just(""), st.sampled_from(sorted(SMTP_CODES))),
)
def test_every_smtp_reply_gets_an_smtp_code(reply: int, enhanced: str) -> None:
    label = classify_smtp(reply, f"{enhanced} the server said no".strip()).code
    assert CODE.match(label), label
    assert label == (f"smtp/{reply}-{enhanced}" if enhanced else f"smtp/{reply}")
