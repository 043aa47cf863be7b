"""Schemathesis against the dev host, driven by the committed docs/openapi.json.

Every operation gets generated requests (valid ones and, in negative mode, broken ones); each
answer must be no 5xx, a status code and a content type the document declares for the operation,
and a body matching its schema. The number of examples is bounded so the run stays within a
minute or two on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from gateway_host import DevHost
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

DOCUMENT = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text(encoding="utf-8")
)
schema = schemathesis.openapi.from_dict(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def gateway(start_devhost: Any) -> DevHost:
    # Shorter polling than usual is not needed: only the HTTP side is exercised.
    host: DevHost = start_devhost()
    return host


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_keeps_its_document(case: schemathesis.Case[Any], gateway: DevHost) -> None:
    case.call_and_validate(base_url=gateway.base_url, checks=CHECKS, timeout=60)
