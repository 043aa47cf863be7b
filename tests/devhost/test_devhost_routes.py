"""Route templates compile to matchers with ASP.NET Core's semantics (no process needed)."""

from __future__ import annotations

import pytest

from devhost.routes import RouteTemplateError, compile_route, order_routes


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("hello", "/api/hello", {}),
        ("hello", "/api/HELLO/", {}),  # literals are case-insensitive; a trailing slash is fine
        ("hello", "/api/hello/x", None),
        ("hello", "/hello", None),
        ("items/{id}", "/api/items/a%20b", {"id": "a b"}),  # values are URL-decoded
        ("items/{id}", "/api/items", None),
        ("items/{id}", "/api/items/1/2", None),
        ("items/{id:int}", "/api/items/-5", {"id": "-5"}),
        ("items/{id:int}", "/api/items/2147483648", None),  # int is Int32
        ("items/{id:long}", "/api/items/2147483648", {"id": "2147483648"}),
        ("items/{id:int}", "/api/items/five", None),
        ("v/{flag:bool}", "/api/v/True", {"flag": "True"}),
        ("v/{flag:bool}", "/api/v/yes", None),
        (
            "g/{id:guid}",
            "/api/g/0f8fad5b-d9cb-469f-a165-70867728950e",
            {"id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        ),
        ("g/{id:guid}", "/api/g/0f8fad5b", None),
        ("a/{name:alpha}", "/api/a/abc", {"name": "abc"}),
        ("a/{name:alpha}", "/api/a/ab1", None),
        ("n/{x:double}", "/api/n/1.5e3", {"x": "1.5e3"}),
        ("n/{x:range(1,10)}", "/api/n/10", {"x": "10"}),
        ("n/{x:range(1,10)}", "/api/n/11", None),
        ("n/{x:min(3)}", "/api/n/2", None),
        ("s/{x:minlength(2):maxlength(3)}", "/api/s/abc", {"x": "abc"}),
        ("s/{x:minlength(2):maxlength(3)}", "/api/s/abcd", None),
        ("s/{x:length(2)}", "/api/s/ab", {"x": "ab"}),
        ("r/{code:regex(^\\d{{3}}$)}", "/api/r/123", {"code": "123"}),
        ("r/{code:regex(^\\d{{3}}$)}", "/api/r/1234", None),
        ("opt/{name?}", "/api/opt", {}),
        ("opt/{name?}", "/api/opt/x", {"name": "x"}),
        ("def/{page=1}", "/api/def", {"page": "1"}),
        ("def/{page=1}", "/api/def/7", {"page": "7"}),
        ("two/{a?}/{b?}", "/api/two/1", {"a": "1"}),
        ("two/{a?}/{b?}", "/api/two/1/2", {"a": "1", "b": "2"}),
        ("files/{*path}", "/api/files", {}),
        ("files/{*path}", "/api/files/a/b/c.txt", {"path": "a/b/c.txt"}),
        ("files/{**path}", "/api/files/a/b", {"path": "a/b"}),
        ("f/{name}.{ext}", "/api/f/a.b.c", {"name": "a.b", "ext": "c"}),  # right to left
        ("f/{name}.{ext?}", "/api/f/a.b.c", {"name": "a.b", "ext": "c"}),
        ("f/{name}.{ext?}", "/api/f/readme", {"name": "readme"}),
        ("", "/api", {}),
        ("/lead/{x}", "/api/lead/1", {"x": "1"}),  # a leading slash is ignored
    ],
)
def test_template_matching(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_route(template, "api").match(path) == expected


def test_empty_route_prefix() -> None:
    route = compile_route("hello/{x}", "")
    assert route.match("/hello/1") == {"x": "1"}
    assert route.match("/api/hello/1") is None


@pytest.mark.parametrize(
    "template",
    [
        "a/{x:nosuchconstraint}",
        "a/{x:int(3)}",
        "a/{x:range(1)}",
        "a/{*rest}/b",
        "a/{x?}/b",
        "a/{x}/{x}",
        "a/{x",
        "a/x}",
        "a//b",
        "a/{x?}-b",
    ],
)
def test_invalid_templates_are_rejected(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        compile_route(template, "api")


def test_precedence_literal_then_constrained_then_plain_then_catch_all() -> None:
    templates = ["items/{*rest}", "items/{id}", "items/{id:int}", "items/special"]
    ordered = order_routes(compile_route(t, "api") for t in templates)
    assert [r.template for r in ordered] == [
        "items/special",
        "items/{id:int}",
        "items/{id}",
        "items/{*rest}",
    ]
