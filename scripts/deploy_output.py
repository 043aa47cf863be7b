#!/usr/bin/env python3
"""Print one output of an ARM deployment, looked up by name without regard to case.

ARM does not keep the case of output names: a template's ``FUNCTION_APP_NAME`` can come back as
``functioN_APP_NAME`` (Azure/bicep#9360, Azure/azure-dev#512), so a JMESPath query such as
``properties.outputs.FUNCTION_APP_NAME.value`` silently prints nothing. docs/deploy.md reads the
outputs once and takes each one from here:

    az deployment group show -g "$RG" -n mailgw --query properties.outputs > outputs.json
    python3 scripts/deploy_output.py FUNCTION_APP_NAME < outputs.json

Input: the outputs object (``--query properties.outputs``) or the whole deployment document.
Strings print as they are, other values as JSON. An unknown name exits with 1 and lists the names
there are, so a typo never turns into an empty variable. Standard library only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any


class OutputError(LookupError):
    """The document has no such output, or is not a deployment's outputs at all."""


def outputs_of(document: Any) -> Mapping[str, Any]:
    """The outputs object, from either the outputs themselves or the whole deployment."""
    if isinstance(document, Mapping) and isinstance(document.get("properties"), Mapping):
        document = document["properties"].get("outputs") or {}
    if not isinstance(document, Mapping):
        raise OutputError("expected the JSON of `az deployment group show` or of its outputs")
    return document


def output_value(document: Any, name: str) -> Any:
    """The value of output ``name``, matched case-insensitively, as ARM returns it."""
    outputs = outputs_of(document)
    matches = [key for key in outputs if key.casefold() == name.casefold()]
    if not matches:
        known = ", ".join(sorted(outputs)) or "none"
        raise OutputError(f"no output named {name} (outputs: {known})")
    if len(matches) > 1:  # a template cannot declare two, but say so rather than guess
        raise OutputError(f"{name} matches several outputs: {', '.join(matches)}")
    entry = outputs[matches[0]]
    return entry.get("value") if isinstance(entry, Mapping) else entry


def render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(render(output_value(json.load(sys.stdin), argv[0])))
    except json.JSONDecodeError as exc:
        print(f"deploy_output: the input is not JSON: {exc}", file=sys.stderr)
        return 1
    except OutputError as exc:
        print(f"deploy_output: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
