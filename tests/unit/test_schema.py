"""The committed JSON Schema is what the model generates, and it accepts what the model accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import NOW, b64, valid_request

from mailgw import schema
from mailgw.models import SendRequest

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "send-request.schema.json"

DESIGN_EXAMPLE: dict[str, Any] = {
    "from": "noreply@contoso.com",
    "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
    "cc": [],
    "bcc": [],
    "replyTo": [],
    "subject": "Your receipt",
    "text": "plain body",
    "html": "<p>html body</p>",
    "attachments": [
        {
            "name": "r.pdf",
            "contentType": "application/pdf",
            "contentBase64": b64(b"%PDF-1.7"),
            "inline": False,
            "contentId": None,
        }
    ],
    "headers": {"X-Order-Id": "42"},
    "importance": "normal",
    "saveToSentItems": True,
    "sendAt": "2026-06-03T08:00:00Z",
    "metadata": {"orderId": "42"},
}


def test_committed_schema_is_fresh() -> None:
    """Fails when the model changed and nobody ran `python -m mailgw.schema`."""
    assert COMMITTED.read_text(encoding="utf-8") == schema.render_schema(), (
        "docs/send-request.schema.json is stale: run `python -m mailgw.schema` and commit it"
    )


def test_generation_is_deterministic() -> None:
    assert schema.render_schema() == schema.render_schema()


def test_file_format() -> None:
    text = schema.render_schema()
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert '\n  "$schema": ' in text  # indent 2
    document = json.loads(text)
    assert list(document)[:4] == ["$schema", "$id", "title", "description"]


def test_identity_keys() -> None:
    document = schema.build_schema()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == "urn:mailgw:schema:send-request:v1"
    assert document["title"]
    assert "docs/problems.md" in document["description"]
    assert document["required"] == ["from"]
    assert document["additionalProperties"] is False
    assert "from" in document["properties"]
    assert "sender" not in document["properties"]


def test_check_passes_on_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text(schema.render_schema().replace('"from"', '"sender"'), encoding="utf-8")
    assert schema.main(["--check", "--output", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "is stale" in err
    assert "python -m mailgw.schema" in err


def test_check_fails_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schema.main(["--check", "--output", str(tmp_path / "absent.json")]) == 1
    assert "is missing" in capsys.readouterr().err


def test_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "docs" / "schema.json"
    assert schema.main(["--output", str(target)]) == 0
    assert target.read_bytes() == schema.render_schema().encode("utf-8")
    assert b"\r\n" not in target.read_bytes()
    assert schema.main(["--check", "--output", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out


# --- the schema against real documents (needs jsonschema) ---------------------------------------

ACCEPTED = [
    DESIGN_EXAMPLE,
    valid_request(),
    valid_request(to=[], bcc=[{"address": "x@example.com"}], text=None, html="<b>x</b>"),
]

REJECTED = [
    valid_request(priority="high"),  # unknown field
    valid_request(to="a@example.com"),  # not a list
    valid_request(to=[42]),
    valid_request(importance="urgent"),
    valid_request(saveToSentItems="yes"),
    valid_request(attachments=[{"name": "a"}]),  # contentBase64 missing
    valid_request(subject="s" * 999),
    {"to": ["a@example.com"], "text": "no from"},
]


@pytest.fixture(scope="module")
def validator() -> Any:
    import jsonschema  # a dev dependency: missing, the test fails rather than skips

    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


@pytest.mark.parametrize("document", ACCEPTED, ids=["design-example", "minimal", "bcc-html"])
def test_schema_accepts_what_the_model_accepts(validator: Any, document: dict[str, Any]) -> None:
    SendRequest.model_validate(document, context={"now": NOW})  # really valid
    errors = [e.message for e in validator.iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize("document", REJECTED)
def test_schema_rejects_structural_errors(validator: Any, document: dict[str, Any]) -> None:
    assert not validator.is_valid(document)


def test_every_problem_type_is_documented() -> None:
    """docs/problems.md is the clients' list of problem types: one section per slug in the HTTP
    table (functions/problems.py), which is the only place an error becomes a problem type."""
    from functions.problems import INTERNAL, PROBLEM_TYPES

    root = Path(__file__).resolve().parents[2]
    mapped = {kind.slug for kind in PROBLEM_TYPES.values()} | {INTERNAL.slug}
    document = (root / "docs" / "problems.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^## `urn:mailgw:problem:([a-z-]+)`", document, re.MULTILINE))
    assert mapped - documented == set(), "mapped but not documented"
    assert documented - mapped == set(), "documented but never mapped"


def test_every_domain_error_has_a_problem_type() -> None:
    """A new domain error without a row in the table would reach callers as a 500."""
    from functions.problems import INTERNAL, problem_type
    from mailgw import errors

    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.GatewayError):
            if cls in (errors.GatewayError, errors.InvalidMessage, errors.InvalidEnvelope,
                       errors.PayloadMissing):  # fmt: skip
                continue  # queue-side errors: delivery's table records them, HTTP never sees them
            assert problem_type(cls("x")) is not INTERNAL, name
