"""The gateway's OpenAPI 3.1 document, generated from the route table (``functions/routes.py``),
the problem table (``functions/problems.py``) and the pydantic models: nothing is written twice.

``GET /api/v1/openapi.json`` serves it; ``docs/openapi.json`` is the same text, committed.
``python -m functions.openapi`` rewrites that file (``make schema`` does), and with ``--check``
fails when it is stale, as ``mailgw.schema`` does for the send request's JSON Schema.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from functions.problems import INTERNAL, PROBLEM_CONTENT_TYPE, PROBLEM_TYPES, ProblemType
from functions.routes import ROUTES, Route, schema_models
from mailgw.auth import ROLE_READ_ALL
from mailgw.schema import GeneratedFile, drop_property_titles, recipient_forms

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
_REF = "#/components/schemas/{model}"
_PROBLEM = {"$ref": "#/components/schemas/ProblemDetails"}
_DESCRIPTION = (
    "The mailgw mail gateway's HTTP API. Every error is application/problem+json (RFC 9457); "
    "the problem types are listed in docs/problems.md, the contracts in docs/contracts.md. "
    "Authentication: Functions keys (x-functions-key header, or ?code=) by default, or with "
    "MAILGW_AUTH=entra an Entra ID access token with the route's app role."
)


def _schemas() -> dict[str, Any]:
    _, generated = models_json_schema(schema_models(), ref_template=_REF, by_alias=True)
    schemas: dict[str, Any] = drop_property_titles(generated.get("$defs", {}))
    if "Recipient" in schemas:
        schemas["Recipient"] = recipient_forms(schemas["Recipient"])
    return dict(sorted(schemas.items()))


def _problem_response(kinds: list[ProblemType]) -> dict[str, Any]:
    listed = ", ".join(sorted({f"`{kind.uri}` ({kind.title})" for kind in kinds}))
    return {"description": listed, "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM}}}


def _responses(route: Route) -> dict[str, Any]:
    success: dict[str, Any] = {"description": route.summary}
    schema = {"$ref": _REF.format(model=route.answer.__name__)} if route.answer else {}
    success["content"] = {"application/json": {"schema": schema or {"type": "object"}}}
    if route.location:
        success["headers"] = {
            "Location": {"description": "the message's state", "schema": {"type": "string"}}
        }
    by_status: dict[int, list[ProblemType]] = {}
    for error in route.problems():
        kind = PROBLEM_TYPES[error]
        by_status.setdefault(kind.status, []).append(kind)
    by_status.setdefault(INTERNAL.status, []).append(INTERNAL)
    responses: dict[str, Any] = {str(route.status): success}
    for status, kinds in sorted(by_status.items()):
        response = _problem_response(kinds)
        if any(_retry_after(kind) for kind in kinds):
            response["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}
            }
        responses[str(status)] = response
    return responses


def _retry_after(kind: ProblemType) -> bool:
    return any(
        known is kind and error.retry_after is not None for error, known in PROBLEM_TYPES.items()
    )


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "description": route.description,
        "tags": list(route.tags),
    }
    if route.auth == "anonymous":
        operation["security"] = []
    else:
        operation["security"] = [{"functionKey": []}, {"entraId": list(route.roles)}]
        roles = " or ".join(f"`{role}`" for role in route.roles)
        key = "the admin key" if route.auth == "admin" else "a Functions key"
        operation["description"] += f" Authorization: {key}, or an Entra ID token with {roles}."
    parameters: list[dict[str, Any]] = []
    if "{id}" in route.route:
        parameters.append(
            {
                "name": "id",
                "in": "path",
                "required": True,
                "description": "the message id from the 202 answer",
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
            }
        )
    if "{address}" in route.route:
        parameters.append(
            {
                "name": "address",
                "in": "path",
                "required": True,
                "description": "a sender mailbox's address (any case)",
                "schema": {"type": "string", "minLength": 3, "maxLength": 320},
            }
        )
    if route.idempotency_key:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "the same key with the same body answers the first answer again "
                "and enqueues nothing; with another body it is 422",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": "^[ -~]+$",
                },
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=route.body.__name__)}}
            },
        }
    operation["responses"] = _responses(route)
    return operation


def build_openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailgw", "version": "v1", "description": _DESCRIPTION},
        "tags": [
            {"name": "messages", "description": "send, batch, state, cancel, replay"},
            {"name": "service", "description": "health and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "functionKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-functions-key",
                    "description": "MAILGW_AUTH=keys (default): a Functions key (replay: the "
                    "admin key); the Functions host checks it. A key is every caller at once.",
                },
                "entraId": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "MAILGW_AUTH=entra: an Entra ID v2 access token for the "
                    "gateway's API app registration, with the route's app role. A message "
                    f"belongs to the app that sent it; {ROLE_READ_ALL} reads any app's.",
                },
            },
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document as served (built once per process)."""
    return build_openapi()


OPENAPI_FILE = GeneratedFile(
    "python -m functions.openapi",
    "the OpenAPI document docs/openapi.json",
    DEFAULT_PATH,
    build_openapi,
)
render_openapi = OPENAPI_FILE.render
main = OPENAPI_FILE.main


if __name__ == "__main__":
    raise SystemExit(main())
