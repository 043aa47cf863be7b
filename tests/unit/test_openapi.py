"""docs/openapi.json is what the route table and the models generate, and the table is the app's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from unit_helpers import NOW, valid_request

from functions import openapi
from functions.problems import PROBLEM_TYPES
from functions.routes import ROUTES
from mailgw.models import SendRequest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"


def test_committed_document_is_fresh() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == openapi.render_openapi(), (
        "docs/openapi.json is stale: run `make schema` and commit it"
    )


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text(openapi.render_openapi().replace('"3.1.0"', '"3.0.0"'), encoding="utf-8")
    assert openapi.main(["--check", "--output", str(stale)]) == 1
    assert openapi.main(["--output", str(stale)]) == 0
    assert openapi.main(["--check", "--output", str(stale)]) == 0


def test_the_route_table_is_the_function_apps() -> None:
    """Every HTTP function the app registers is in the table (so documented), with its route,
    method and auth level, and nothing in the table is missing from the app."""
    program = (
        "import function_app\n"
        "for f in function_app.app.get_functions():\n"
        "    for b in f.get_bindings():\n"
        "        if b.type == 'httpTrigger':\n"
        "            methods = ','.join(str(m.value) for m in b.methods)\n"
        "            print(f.get_function_name(), b.route, methods, b.auth_level)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MAILGW_ALLOWED_SENDERS": "*@contoso.com"}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    registered = {tuple(line.split()) for line in result.stdout.splitlines()}
    declared = {(r.name, r.route, r.method, r.auth.upper()) for r in ROUTES}
    assert registered == declared


def test_the_document_is_valid_openapi_31() -> None:
    document = openapi.build_openapi()
    assert document["openapi"] == "3.1.0"
    assert {op["operationId"] for path in document["paths"].values() for op in path.values()} == {
        r.name for r in ROUTES
    }
    # every $ref resolves
    text = json.dumps(document)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in document["components"]["schemas"], name


def test_every_problem_a_route_may_answer_is_documented_on_it() -> None:
    document = openapi.build_openapi()
    for route in ROUTES:
        responses = document["paths"][route.path][route.method.lower()]["responses"]
        for error in route.problems():
            kind = PROBLEM_TYPES[error]
            assert kind.uri in responses[str(kind.status)]["description"], (route.name, kind)
        assert "500" in responses


def _validator(name: str) -> Any:
    document = openapi.build_openapi()
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    "request_body",
    [valid_request(), valid_request(to=["a@example.com"], text=None, html="<b>x</b>")],
)
def test_the_request_schema_accepts_what_the_model_accepts(request_body: dict[str, Any]) -> None:
    SendRequest.model_validate(request_body, context={"now": NOW})
    assert list(_validator("SendRequest").iter_errors(request_body)) == []
    batch = {"messages": [request_body] * 3}
    assert list(_validator("BatchRequest").iter_errors(batch)) == []
    assert not _validator("BatchRequest").is_valid({"messages": []})
    assert not _validator("BatchRequest").is_valid({"messages": [request_body] * 501})
