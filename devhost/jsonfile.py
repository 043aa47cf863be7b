"""Reading the host's JSON files (host.json, local.settings.json) with one set of error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The file's top-level object; ``error`` (naming the file) if it is not JSON or not an object.

    ``utf-8-sig`` because editors on Windows like to add a BOM, which the Functions host accepts.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise error(f"{path}: expected a JSON object")
    return document
