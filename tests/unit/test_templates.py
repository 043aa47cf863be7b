"""Rendering stored templates (mailgw/templates/render.py) and the request rules around them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from unit_helpers import NOW, valid_request

from mailgw.errors import InvalidRequest
from mailgw.models import SendRequest
from mailgw.templates import MAX_RENDERED_CHARS, MAX_TEMPLATE_BYTES, Template
from mailgw.templates.render import TemplateInvalid
from mailgw.templates.store import check_name


def receipt(**parts: Any) -> Template:
    fields: dict[str, Any] = {
        "subject": "Receipt {{ order.id }}",
        "text": "Hello {{ customer }}",
        "html": "<p>Hello {{ customer }}</p>",
    }
    fields.update(parts)
    return Template("receipt", 3, **fields)


def test_render_fills_every_part() -> None:
    rendered = receipt().render({"customer": "Ann", "order": {"id": 42}})
    assert rendered == {
        "subject": "Receipt 42",
        "text": "Hello Ann",
        "html": "<p>Hello Ann</p>",
    }


def test_html_autoescapes_the_callers_data_and_text_does_not() -> None:
    rendered = receipt().render({"customer": "<script>x()</script>", "order": {"id": 1}})
    assert rendered["html"] == "<p>Hello &lt;script&gt;x()&lt;/script&gt;</p>"
    assert rendered["text"] == "Hello <script>x()</script>"


def test_a_missing_variable_is_a_400_naming_it() -> None:
    with pytest.raises(InvalidRequest) as refused:
        receipt().render({"order": {"id": 1}})
    (error,) = refused.value.errors
    assert error.field == "templateData.customer"
    assert "'customer' is undefined" in error.message
    assert "receipt" in error.message and "version 3" in error.message


def test_a_missing_attribute_points_at_the_data() -> None:
    with pytest.raises(InvalidRequest) as refused:
        receipt().render({"customer": "Ann", "order": {}})
    assert [e.field for e in refused.value.errors] == ["templateData"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ customer.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ lipsum.__globals__ }}",
    ],
)
def test_the_sandbox_keeps_templates_from_python_internals(source: str) -> None:
    with pytest.raises(InvalidRequest):
        receipt(text=source).render({"customer": "Ann", "order": {"id": 1}})


def test_rendered_output_is_bounded() -> None:
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}xxxx{% endfor %}{% endfor %}"
    with pytest.raises(InvalidRequest, match=str(MAX_RENDERED_CHARS)):
        receipt(text=loop).render({"customer": "Ann", "order": {"id": 1}})


def test_templates_are_checked_when_stored() -> None:
    with pytest.raises(TemplateInvalid, match="html, line 1"):
        receipt(html="<p>{% if %}</p>")
    with pytest.raises(TemplateInvalid, match="text or an html part"):
        Template("x", 1, subject="s")
    with pytest.raises(TemplateInvalid, match=str(MAX_TEMPLATE_BYTES)):
        receipt(html="x" * (MAX_TEMPLATE_BYTES + 1))
    with pytest.raises(TemplateInvalid):
        check_name("Has Spaces")
    assert check_name("receipt.v2_en-gb") == "receipt.v2_en-gb"


def _validate(templates: bool, **fields: Any) -> SendRequest:
    document = {k: v for k, v in valid_request(**fields).items() if v is not None}
    return SendRequest.model_validate(document, context={"now": NOW, "templates": templates})


def test_a_template_replaces_subject_text_and_html() -> None:
    request = _validate(True, subject=None, text=None, template="receipt", templateData={"a": 1})
    assert (request.template, request.template_data) == ("receipt", {"a": 1})
    with pytest.raises(ValidationError, match="either template or subject, text"):
        _validate(True, template="receipt")
    with pytest.raises(ValidationError, match="templateData needs a template"):
        _validate(True, templateData={})


def test_only_the_http_intake_renders_templates() -> None:
    """A queue producer's message carries its own subject and body: a template there is
    refused (mailgw/invalid-request) rather than sent without a body."""
    with pytest.raises(ValidationError, match="rendered by the HTTP API"):
        _validate(False, subject=None, text=None, template="receipt")


def test_sandbox_is_a_strict_boolean() -> None:
    assert _validate(False, sandbox=True).sandbox is True
    with pytest.raises(ValidationError):
        _validate(False, sandbox="yes")
