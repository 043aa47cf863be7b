"""Everything the renderer refuses is refused at intake, naming the field (issue 9, loss path 5).

Before, a subject or a file name with a vertical tab, a form feed, NEL or U+2028 (anything
``str.splitlines()`` splits on) passed validation with 202 and then crashed the renderer on every
attempt; a ``contentType`` with a trailing LF passed its pattern and put a line break into the
MIME part's headers.
"""

from __future__ import annotations

from typing import Any

import pytest
from unit_helpers import NOW, b64, valid_request

from mailgw.models import SendRequest
from mailgw.settings import Settings
from mailgw.transports.render import render_mime
from mailgw.validation import validate_request
from support import raises_problem

#: Every character str.splitlines() splits on, and other C0/C1 controls (not TAB).
SPLITTERS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
OTHER_CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x9f"]


def test_the_list_is_what_splitlines_splits_on() -> None:
    assert all(len(f"a{c}b".splitlines()) == 2 for c in SPLITTERS)


def placements(char: str) -> list[tuple[str, dict[str, Any]]]:
    text = f"before{char}after"
    return [
        ("subject", {"subject": text}),
        ("to[0].name", {"to": [{"address": "a@example.com", "name": text}]}),
        ("from.name", {"from": {"address": "noreply@contoso.com", "name": text}}),
        ("attachments[0].name", {"attachments": [{"name": text, "contentBase64": b64(b"x")}]}),
        (
            "attachments[0].contentId",
            {
                "html": "<p>x</p>",
                "attachments": [
                    {
                        "name": "a.png",
                        "contentBase64": b64(b"x"),
                        "inline": True,
                        "contentId": text,
                    }
                ],
            },
        ),
        ("headers.X-Order", {"headers": {"X-Order": text}}),
    ]


CASES = [
    pytest.param(field, change, id=f"{field}-U+{ord(char):04X}")
    for char in SPLITTERS + OTHER_CONTROLS
    for field, change in placements(char)
]


@pytest.mark.parametrize(("field", "change"), CASES)
def test_control_characters_in_header_text_are_a_400_naming_the_field(
    field: str, change: dict[str, Any]
) -> None:
    with raises_problem() as caught:
        validate_request(valid_request(**change), Settings(), now=NOW)
    problem = caught.value
    assert problem.status == 400
    assert field in [e.field for e in problem.errors], problem.errors


@pytest.mark.parametrize(
    "content_type", ["text/plain\n", "text/plain\r\nX-Evil: 1", "text/pl\u00e4in"]
)
def test_a_content_type_with_a_trailing_line_break_is_refused(content_type: str) -> None:
    attachment = {"name": "a.txt", "contentType": content_type, "contentBase64": b64(b"x")}
    with raises_problem() as caught:
        validate_request(valid_request(attachments=[attachment]), Settings(), now=NOW)
    assert "attachments[0].contentType" in [e.field for e in caught.value.errors]


@pytest.mark.parametrize("name", ["X-Order\n", "X-Or\x0bder"])
def test_a_header_name_with_a_control_character_is_refused(name: str) -> None:
    with raises_problem() as caught:
        validate_request(valid_request(headers={name: "1"}), Settings(), now=NOW)
    assert caught.value.status == 400


def test_tab_and_ordinary_unicode_stay_allowed_and_render() -> None:
    request = SendRequest.model_validate(
        valid_request(
            subject="Tab\there · Grüße · 日本 · emoji 📨",
            to=[{"address": "a@example.com", "name": "Zoë\tB"}],
            headers={"X-Note": "a\tb ü"},
        ),
        context={"now": NOW},
    )
    rendered = render_mime("m-1", request).as_bytes()
    assert b"Subject:" in rendered
