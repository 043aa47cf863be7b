"""The JSON Schema of the send request, generated from the pydantic model and committed to docs/.

Why generate and commit: callers and queue producers (often not in Python) need the contract as a
file they can validate against and review in diffs, and the model in ``mailgw.models`` is the one
source of truth for it. ``python -m mailgw.schema`` rewrites ``docs/send-request.schema.json``;
``python -m mailgw.schema --check`` fails (exit 1) when the committed file no longer matches the
model, so CI catches a contract change that nobody regenerated or reviewed.

The schema is structural (types, required fields, lengths, enums). Rules that need code, such as
address syntax, the recipient count across to/cc/bcc or the ``X-`` header prefix, are enforced by
the gateway and listed in ``docs/problems.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailgw.models import SendRequest

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:mailgw:schema:send-request:v1"
SCHEMA_TITLE = "mailgw send request"
SCHEMA_DESCRIPTION = (
    "The body of POST /api/v1/messages and what a queue producer may enqueue. "
    "This schema is structural; the gateway also checks addresses, the recipient count "
    "(1-500 across to, cc and bcc), that text or html is present, custom header names (X-, "
    "at most 5), CR/LF in header-bound text, Base64, contentId rules and the sendAt window "
    "(see docs/problems.md)."
)

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "send-request.schema.json"


def recipient_forms(definition: dict[str, Any]) -> dict[str, Any]:
    """A recipient is a bare address string or an object; pydantic only sees the object form.

    ``Recipient`` turns a string into ``{"address": ...}`` in a ``mode="before"`` validator, which
    pydantic cannot describe, so the string form is added here, or the schema would reject the
    commonest request of all (``"to": ["a@example.com"]``).
    """
    description = definition.pop("description", None)
    title = definition.pop("title", "Recipient")
    merged: dict[str, Any] = {"title": title}
    if description:
        merged["description"] = description
    merged["anyOf"] = [{"type": "string", "description": "an email address"}, definition]
    return merged


def drop_property_titles(node: Any) -> Any:
    """Remove pydantic's generated per-property titles ("Savetosentitems"): noise, not contract."""
    if isinstance(node, dict):
        cleaned: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                cleaned[key] = {
                    name: drop_property_titles(
                        {k: v for k, v in prop.items() if k != "title"}
                        if isinstance(prop, dict)
                        else prop
                    )
                    for name, prop in value.items()
                }
            else:
                cleaned[key] = drop_property_titles(value)
        return cleaned
    if isinstance(node, list):
        return [drop_property_titles(item) for item in node]
    return node


def build_schema() -> dict[str, Any]:
    """The schema as a dict, with the identifying keys first (key order is part of the output)."""
    generated = SendRequest.model_json_schema(by_alias=True, mode="validation")
    generated = drop_property_titles(generated)
    definitions = generated.get("$defs", {})
    if "Recipient" in definitions:
        definitions["Recipient"] = recipient_forms(definitions["Recipient"])
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": SCHEMA_TITLE,
        "description": SCHEMA_DESCRIPTION,
        **generated,
    }


@dataclass(frozen=True)
class GeneratedFile:
    """A contract file generated from the code and committed (a JSON document): its exact text,
    and the command that writes it or, with ``--check``, verifies it."""

    prog: str
    what: str
    default: Path
    build: Callable[[], Any]

    def render(self) -> str:
        """The file's exact text: indent 2, UTF-8 kept readable, one trailing newline."""
        return json.dumps(self.build(), indent=2, ensure_ascii=False) + "\n"

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``prog [--check] [--output PATH]``: write the file, or with ``--check`` exit 1 when
        the committed one no longer matches the code (CI catches an unreviewed change)."""
        parser = argparse.ArgumentParser(
            prog=self.prog, description=f"Write (or, with --check, verify) {self.what}."
        )
        parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
        parser.add_argument("--output", type=Path, default=self.default, help="file path")
        args = parser.parse_args(argv)
        path: Path = args.output
        expected = self.render()

        if args.check:
            try:
                current = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                current = None
            if current == expected:
                print(f"{path} is up to date")
                return 0
            state = "is missing" if current is None else "is stale (it does not match the code)"
            print(f"{path} {state}; run `{self.prog}` and commit the result", file=sys.stderr)
            return 1

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected, encoding="utf-8", newline="\n")
        print(f"wrote {path}")
        return 0


SCHEMA_FILE = GeneratedFile(
    "python -m mailgw.schema", "the send request's JSON Schema", DEFAULT_PATH, build_schema
)
render_schema = SCHEMA_FILE.render
main = SCHEMA_FILE.main


if __name__ == "__main__":
    raise SystemExit(main())
