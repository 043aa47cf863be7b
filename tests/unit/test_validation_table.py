"""Bad input, one row each, through the real intake path (parse → validate → sender policy).

Each row is ``(case id, mutation, HTTP status, field, message substring)``. The mutation gets a
fresh copy of a valid request and returns the document to send, or an :class:`Input` when the
case is about the raw body, the content type, the size limit or the settings. ``field`` is the
``errors[].field`` the caller must see; ``None`` means the problem has no field errors and the
substring is looked for in ``detail`` instead.

No storage is involved: :func:`submit` mirrors ``Intake.submit`` up to the enqueue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import NOW, b64, valid_request

from functions.problems import PROBLEM_CONTENT_TYPE, problem_for
from mailgw.errors import GatewayError
from mailgw.models import SendRequest
from mailgw.policy import SenderPolicy
from mailgw.settings import Settings
from mailgw.validation import check_sender, parse_json_body, validate_request
from support import raises_problem

BODY_LIMIT = 1024 * 1024
SETTINGS = Settings(allowed_senders=("noreply@contoso.com", "*@fabrikam.com"))


@dataclass(frozen=True)
class Input:
    """Everything the intake path sees, for rows that change more than the JSON document."""

    body: bytes
    content_type: str | None = "application/json"
    limit: int = BODY_LIMIT
    settings: Settings = field(default=SETTINGS)


def submit(given: Input) -> SendRequest:
    """``Intake.submit`` without the queue: the same checks in the same order."""
    document = parse_json_body(given.body, given.content_type, given.limit)
    request = validate_request(document, given.settings, now=NOW)
    check_sender(SenderPolicy(given.settings.allowed_senders), request.sender.address)
    return request


def as_input(document: Any) -> Input:
    return document if isinstance(document, Input) else Input(json.dumps(document).encode())


# --- mutation helpers ---------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], Any]


def put(**changes: Any) -> Mutation:
    """Set top-level keys; ``from_`` stands for ``from`` (a keyword in Python)."""

    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        for key, value in changes.items():
            doc[key.rstrip("_")] = value
        return doc

    return mutate


def drop(*keys: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        for key in keys:
            doc.pop(key, None)
        return doc

    return mutate


def raw(
    body: bytes, content_type: str | None = "application/json", limit: int = BODY_LIMIT
) -> Mutation:
    return lambda _doc: Input(body, content_type, limit)


def with_settings(mutation: Mutation, **overrides: Any) -> Mutation:
    return lambda doc: Input(
        json.dumps(mutation(doc)).encode(), settings=replace(SETTINGS, **overrides)
    )


def att(**fields: Any) -> dict[str, Any]:
    attachment: dict[str, Any] = {"name": "a.txt", "contentBase64": b64(b"abc")}
    attachment.update(fields)
    return attachment


def addresses(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(count)]


SEND_AT_FAR = (NOW + timedelta(days=7, seconds=1)).isoformat().replace("+00:00", "Z")

# --- the table ----------------------------------------------------------------------------------

Row = tuple[str, Mutation, int, str | None, str]

CASES: list[Row] = [
    # from
    ("from-missing", drop("from"), 400, "from", "is required"),
    ("from-not-an-address", put(from_="noreply"), 400, "from", "not a valid email address"),
    ("from-empty-string", put(from_=""), 400, "from", "not a valid email address"),
    ("from-object-bad-address", put(from_={"address": "noreply@"}), 400, "from.address",
     "not a valid email address"),
    ("from-display-name-lf", put(from_={"address": "noreply@contoso.com", "name": "A\nB"}), 400,
     "from.name", "CR or LF"),
    # recipients
    ("to-string-bad-address", put(to=["a@example.com", "not-an-address"]), 400, "to[1]",
     "not a valid email address"),
    ("to-object-bad-address", put(to=["a@example.com", {"address": "b@@example.com"}]), 400,
     "to[1].address", "not a valid email address"),
    ("to-object-missing-address", put(to=["a@example.com", {"name": "B"}]), 400,
     "to[1].address", "is required"),
    ("to-empty-string", put(to=[""]), 400, "to[0]", "not a valid email address"),
    # Unclear today: "Input should be a valid dictionary or instance of Recipient" names a class.
    ("to-item-not-string-or-object", put(to=["a@example.com", 42]), 400, "to[1]",
     "email address"),
    ("cc-bad-address", put(cc=["not-an-address"]), 400, "cc[0]", "not a valid email address"),
    ("bcc-bad-address", put(bcc=[{"address": "x@"}]), 400, "bcc[0].address",
     "not a valid email address"),
    ("replyTo-bad-address", put(replyTo=["nobody"]), 400, "replyTo[0]",
     "not a valid email address"),
    ("display-name-crlf", put(to=[{"address": "a@example.com", "name": "A\r\nBcc: x@evil.com"}]),
     400, "to[0].name", "CR or LF"),
    ("display-name-too-long", put(to=[{"address": "a@example.com", "name": "n" * 257}]), 400,
     "to[0].name", "at most 256"),
    ("no-recipients", put(to=[], cc=[], bcc=[]), 400, "to", "at least one recipient"),
    ("501-recipients", put(to=addresses("t", 200), cc=addresses("c", 200),
                           bcc=addresses("b", 101)), 400, "to", "at most 500 recipients"),
    ("to-is-a-string", put(to="a@example.com"), 400, "to",
     'must be a list of addresses, e.g. ["a@example.com"]'),
    # body
    ("no-text-no-html", drop("text", "html"), 400, "text", "at least one of text or html"),
    ("empty-text-and-html", put(text="", html=""), 400, "text", "at least one of text or html"),
    ("text-not-a-string", put(text=5), 400, "text", "must be a string"),
    # subject
    ("subject-crlf", put(subject="Hi\r\nBcc: x@evil.com"), 400, "subject", "CR or LF"),
    ("subject-lf", put(subject="Hi\nthere"), 400, "subject", "CR or LF"),
    ("subject-nul", put(subject="Hi\x00"), 400, "subject", "NUL"),
    ("subject-too-long", put(subject="s" * 999), 400, "subject", "at most 998"),
    # custom headers
    ("header-value-crlf", put(headers={"X-Foo": "1\r\nBcc: x@evil.com"}), 400, "headers.X-Foo",
     "CR or LF"),
    ("header-value-nul", put(headers={"X-Foo": "1\x002"}), 400, "headers.X-Foo", "NUL"),
    ("header-value-too-long", put(headers={"X-Foo": "v" * 999}), 400, "headers.X-Foo",
     "longer than 998"),
    ("header-name-crlf", put(headers={"X-Foo\r\nBcc": "x"}), 400, r"headers.X-Foo\r\nBcc",
     "CR, LF or NUL"),
    ("header-not-x", put(headers={"Reply-To": "x@evil.com"}), 400, "headers.Reply-To",
     "must start with 'X-'"),
    # Unclear today: "must start with 'X-'; got 'X-'" (it does start with X-; the name is empty).
    ("header-name-only-prefix", put(headers={"X-": "1"}), 400, "headers.X-", "after 'X-'"),
    ("six-headers", put(headers={f"X-H{i}": "1" for i in range(6)}), 400, "headers",
     "at most 5 custom headers"),
    ("duplicate-header", put(headers={"X-Foo": "1", "x-foo": "2"}), 400, "headers.x-foo",
     "given twice"),
    ("header-name-space", put(headers={"X-Foo Bar": "1"}), 400, "headers.X-Foo Bar",
     "not a valid RFC 5322 field name"),
    ("header-name-colon", put(headers={"X-Foo:": "1"}), 400, "headers.X-Foo:",
     "not a valid RFC 5322 field name"),
    ("headers-is-a-list", put(headers=["X-Foo"]), 400, "headers", "must be an object, e.g."),
    # attachments
    ("base64-bad-alphabet", put(attachments=[att(contentBase64="not base64!")]), 400,
     "attachments[0].contentBase64", "not valid Base64"),
    ("base64-missing-padding", put(attachments=[att(contentBase64="YWJjZA")]), 400,
     "attachments[0].contentBase64", "not valid Base64"),
    ("content-type-not-mime", put(attachments=[att(contentType="pdf")]), 400,
     "attachments[0].contentType", "MIME type"),
    ("inline-without-content-id", put(attachments=[att(inline=True)]), 400,
     "attachments[0].contentId", "needs a contentId"),
    ("content-id-angle-brackets-inside", put(attachments=[att(contentId="lo<go>1")]), 400,
     "attachments[0].contentId", "angle brackets"),
    ("content-id-space", put(attachments=[att(contentId="logo 1")]), 400,
     "attachments[0].contentId", "without spaces"),
    ("duplicate-content-ids",
     put(attachments=[att(contentId="logo"), att(name="b.txt", contentId="<logo>")]), 400,
     "attachments", "must be unique"),
    ("attachment-name-empty", put(attachments=[att(name="")]), 400, "attachments[0].name",
     "at least 1 character"),
    ("attachment-name-cr", put(attachments=[att(name="a\r.txt")]), 400, "attachments[0].name",
     "CR or LF"),
    ("attachment-unknown-field", put(attachments=[att(size=3)]), 400, "attachments[0].size",
     "is not a known field"),
    ("attachments-is-an-object", put(attachments=att()), 400, "attachments",
     "must be a list of attachments"),
    # Bug today: lax bool parsing accepts "yes" (and 1, "on", "true") as true.
    ("inline-not-a-bool", put(attachments=[att(inline="yes", contentId="c")]), 400,
     "attachments[0].inline", "must be true or false"),
    # scheduling, importance, flags, metadata
    ("sendAt-over-7-days", put(sendAt=SEND_AT_FAR), 400, "sendAt", "at most 7 days"),
    ("sendAt-no-timezone", put(sendAt="2026-06-02T08:00:00"), 400, "sendAt", "time zone"),
    ("sendAt-not-a-date", put(sendAt="tomorrow"), 400, "sendAt", "must be a date and time"),
    ("importance-invalid", put(importance="urgent"), 400, "importance",
     "must be one of low, normal, high"),
    ("saveToSentItems-not-a-bool", put(saveToSentItems="maybe"), 400, "saveToSentItems",
     "must be true or false"),
    # Bug today: "yes" is silently taken as true.
    ("saveToSentItems-yes", put(saveToSentItems="yes"), 400, "saveToSentItems",
     "must be true or false"),
    ("metadata-non-string", put(metadata={"orderId": 42}), 400, "metadata.orderId",
     "must be a string"),
    ("metadata-too-many", put(metadata={f"k{i}": "v" for i in range(33)}), 400, "metadata",
     "at most 32 metadata entries"),
    ("metadata-empty-key", put(metadata={"": "v"}), 400, "metadata", "1-64 characters"),
    # unknown fields
    ("unknown-top-level-field", put(priority="high"), 400, "priority", "is not a known field"),
    # Bug today: the Python field names are accepted as undocumented aliases.
    ("python-field-name", put(save_to_sent_items=False), 400, "save_to_sent_items",
     "is not a known field"),
    # the body itself
    ("invalid-json", raw(b'{"from": '), 400, None, "not valid JSON"),
    ("not-utf8", raw(b'{"text": "\xff"}'), 400, None, "not UTF-8"),
    ("json-array-body", raw(b"[]"), 400, "(body)", "expected an object, got list"),
    ("json-string-body", raw(b'"hello"'), 400, "(body)", "expected an object, got str"),
    ("empty-body", raw(b""), 400, None, "body is empty"),
    ("whitespace-body", raw(b" \r\n "), 400, None, "body is empty"),
    # Bug today: RecursionError / ValueError escape parse_json_body (a 500, not a 400).
    ("deeply-nested-json", raw(b"[" * 100_000), 400, None, "JSON"),
    ("huge-integer", raw(b'{"text": ' + b"1" * 5000 + b"}"), 400, None, "JSON"),
    ("content-type-text-plain", raw(b"{}", "text/plain"), 415, None, "application/json"),
    ("content-type-form", raw(b"a=b", "application/x-www-form-urlencoded"), 415, None,
     "not application/x-www-form-urlencoded"),
    ("body-over-limit", raw(b'{"text": "' + b"x" * 200 + b'"}', limit=100), 413, None,
     "the limit is 100 bytes"),
    # sizes and policy
    ("attachments-over-limit",
     with_settings(put(attachments=[att(contentBase64=b64(b"x" * 65))]), max_attachment_bytes=64),
     413, "attachments", "over the limit of 64 bytes"),
    ("attachments-sum-over-limit",
     with_settings(put(attachments=[att(contentBase64=b64(b"x" * 40)),
                                    att(name="b.txt", contentBase64=b64(b"y" * 40))]),
                   max_attachment_bytes=64),
     413, "attachments", "total 80 bytes"),
    ("sender-not-allowed", put(from_="someone@contoso.com"), 403, "from", "not allowed"),
    ("sender-subdomain-not-allowed", put(from_="noreply@mail.fabrikam.com"), 403, "from",
     "not allowed"),
    ("empty-policy", with_settings(lambda doc: doc, allowed_senders=()), 403, None,
     "MAILGW_ALLOWED_SENDERS"),
]  # fmt: skip


def test_the_table_is_big_and_ids_are_unique() -> None:
    ids = [row[0] for row in CASES]
    assert len(ids) >= 35
    assert len(ids) == len(set(ids))


def test_the_unmutated_request_passes() -> None:
    """Otherwise every row below could fail for the wrong reason."""
    request = submit(as_input(valid_request()))
    assert request.sender.address == "noreply@contoso.com"
    assert [r.address for r in request.to] == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("case", "mutation", "status", "field", "message"), CASES, ids=[row[0] for row in CASES]
)
def test_bad_input(
    case: str, mutation: Mutation, status: int, field: str | None, message: str
) -> None:
    with raises_problem() as caught:
        submit(as_input(mutation(valid_request())))
    problem = caught.value

    assert problem.status == status, f"{case}: {problem.to_json()}"
    body = problem.to_json(instance="/api/v1/messages")
    assert json.loads(json.dumps(body)) == body  # serialisable as the HTTP adapter sends it
    assert body["type"] == f"urn:mailgw:problem:{problem.slug}"
    assert body["type"].startswith("urn:mailgw:problem:")
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == "/api/v1/messages"

    if field is None:
        assert message in problem.detail, problem.detail
        if status != 403:
            assert "errors" not in body
        return
    pairs = [(e.field, e.message) for e in problem.errors]
    matching = [m for f, m in pairs if f == field]
    assert matching, f"no error for field {field!r}; got {pairs}"
    assert any(message in m for m in matching), f"{field}: {matching}"
    assert {"field": field, "message": matching[0]} in body["errors"]
    if status == 400 and problem.slug == "validation" and field != "(body)":
        assert field in problem.detail  # the summary names the field too


def test_every_slug_is_documented() -> None:
    """docs/problems.md is the contract for ``type``: every slug the intake path raises is in it."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "problems.md").read_text("utf-8")
    slugs = set()
    for _case, mutation, _status, _field, _message in CASES:
        try:
            submit(as_input(mutation(valid_request())))
        except GatewayError as error:
            slugs.add(problem_for(error).slug)
        except Exception:  # a crash is reported by test_bad_input; here only slugs matter
            continue
    assert slugs == {
        "validation",
        "too-large",
        "invalid-json",
        "empty-body",
        "unsupported-media-type",
        "sender-not-allowed",
    }
    for slug in slugs:
        assert f"## `urn:mailgw:problem:{slug}`" in docs, slug


def test_attachment_413_detail_gives_the_numbers() -> None:
    """The 413 detail should say by how much, not only "exceeds a size limit" (unclear today)."""
    doc = valid_request(attachments=[att(contentBase64=b64(b"x" * 65))])
    given = Input(json.dumps(doc).encode(), settings=replace(SETTINGS, max_attachment_bytes=64))
    with raises_problem() as caught:
        submit(given)
    assert caught.value.status == 413
    assert "64 bytes" in caught.value.detail


def test_several_errors_are_reported_together() -> None:
    doc = valid_request(to=["nobody"], subject="a\nb", headers={"Foo": "1"})
    with raises_problem() as caught:
        submit(as_input(doc))
    problem = caught.value
    assert problem.status == 400
    assert {e.field for e in problem.errors} == {"to[0]", "subject", "headers.Foo"}
    assert problem.detail.startswith("The request has 3 invalid fields: ")


def test_size_error_mixed_with_another_error_is_a_400() -> None:
    """413 only when size is the sole problem; otherwise the caller must fix the 400 first."""
    doc = valid_request(to=["nobody"], attachments=[att(contentBase64=b64(b"x" * 65))])
    given = Input(json.dumps(doc).encode(), settings=replace(SETTINGS, max_attachment_bytes=64))
    with raises_problem() as caught:
        submit(given)
    assert caught.value.status == 400
    assert caught.value.slug == "validation"


def test_exactly_500_recipients_and_exactly_the_attachment_limit_pass() -> None:
    doc = valid_request(
        to=addresses("t", 200),
        cc=addresses("c", 200),
        bcc=addresses("b", 100),
        attachments=[att(contentBase64=b64(b"x" * 64))],
    )
    given = Input(json.dumps(doc).encode(), settings=replace(SETTINGS, max_attachment_bytes=64))
    request = submit(given)
    assert len(request.recipients()) == 500


def test_send_at_exactly_7_days_ahead_passes() -> None:
    at = (NOW + timedelta(days=7)).isoformat()
    request = submit(as_input(valid_request(sendAt=at)))
    assert request.send_at == NOW + timedelta(days=7)


def test_body_exactly_at_the_limit_passes() -> None:
    body = json.dumps(valid_request()).encode()
    assert submit(Input(body, limit=len(body))).subject == "Your receipt"
    with raises_problem() as caught:
        submit(Input(body, limit=len(body) - 1))
    assert caught.value.status == 413


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/merge-patch+json"],
)  # fmt: skip
def test_json_content_types_are_accepted(content_type: str | None) -> None:
    body = json.dumps(valid_request()).encode()
    assert submit(Input(body, content_type)).sender.address == "noreply@contoso.com"


def test_sender_not_allowed_detail_names_the_address_and_setting() -> None:
    with raises_problem() as caught:
        submit(as_input(valid_request(**{"from": "Someone@Contoso.com"})))
    problem = caught.value
    assert problem.to_json()["type"] == "urn:mailgw:problem:sender-not-allowed"
    assert "Someone@contoso.com" in problem.detail
    assert "MAILGW_ALLOWED_SENDERS" in problem.detail


def test_empty_policy_detail_says_how_to_fix_it() -> None:
    given = Input(
        json.dumps(valid_request()).encode(), settings=replace(SETTINGS, allowed_senders=())
    )
    with raises_problem() as caught:
        submit(given)
    problem = caught.value
    assert problem.status == 403
    assert "MAILGW_ALLOWED_SENDERS is empty" in problem.detail
    assert [(e.field, e.message) for e in problem.errors] == [
        ("from", "this gateway is not allowed to send as this mailbox")
    ]


def test_allowed_by_domain_pattern_case_insensitively() -> None:
    request = submit(as_input(valid_request(**{"from": "Billing@FABRIKAM.com"})))
    assert request.sender.address == "Billing@fabrikam.com"


def test_problem_content_type_is_rfc_9457() -> None:
    assert PROBLEM_CONTENT_TYPE == "application/problem+json"


def test_every_problem_is_listed_at_once_with_a_suggestion() -> None:
    """A typo (``too``) also leaves the message without recipients and a body: the caller hears
    all three at once, not one retry at a time, and learns which field was meant."""
    document = {"from": "noreply@contoso.com", "too": ["a@example.com"], "subject": "Hi"}
    with raises_problem() as caught:
        submit(as_input(document))
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("too", 'is not a known field; did you mean "to"?'),
        ("to", "at least one recipient in to, cc or bcc is required"),
        ("text", "at least one of text or html is required"),
    ]
