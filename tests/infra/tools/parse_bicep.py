"""Parse Bicep files with pycep-parser and print one JSON document (runs in .venv-infra).

Usage: parse_bicep.py FILE_OR_DIR...  A directory is searched for ``*.bicep`` recursively.
Output: ``{"pycep_version": ..., "files": {"<path>": {"tree": ...} | {"error": ...}}}``.
The test suite (in the app's venv, which has no pycep) reads this instead of importing pycep.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

from pycep import BicepParser


def main(arguments: list[str]) -> int:
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        paths.extend(sorted(path.rglob("*.bicep")) if path.is_dir() else [path])
    files: dict[str, dict[str, object]] = {}
    for path in paths:
        try:
            files[path.as_posix()] = {"tree": BicepParser().parse(text=path.read_text("utf-8"))}
        except Exception as exc:  # report every file, not just the first failure
            files[path.as_posix()] = {"error": f"{type(exc).__name__}: {exc}"}
    result = {"pycep_version": version("pycep-parser"), "files": files}
    json.dump(result, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
