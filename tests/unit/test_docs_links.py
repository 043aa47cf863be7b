"""The repository stands alone: every relative link in the README and docs/ names a file inside
it (a link to ../shared/DESIGN.md once sent readers outside), and the contracts are linked."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: [text](target) or [text](target#anchor), not URLs with a scheme, not in-page anchors
LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:)([^)#\s]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_stay_inside_the_repository(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        resolved = (document.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name} links outside: {target}"
        assert resolved.exists(), f"{document.name} links to a missing file: {target}"


def test_the_readme_links_the_public_contracts() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/contracts.md)" in readme
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    for section in ("## HTTP API", "## Send request", "## Queue format", "## Message states",
                    "## Settings"):  # fmt: skip
        assert section in contracts


def _user_facing_strings(path: Path) -> list[str]:
    """The string constants of a module that can reach a user (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


CODE = sorted(p for folder in ("mailgw", "functions") for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("module", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_hint_that_points_at_the_docs_names_a_file_that_exists(module: Path) -> None:
    """A hint once ended "rules in docs/": a reader must be told which page, and it must exist."""
    for text in _user_facing_strings(module):
        for reference in re.findall(r"docs/[^\s,;:)'\"]*", text):
            name = reference.removeprefix("docs/").split("#")[0].rstrip(".")
            assert name, f"{module.name}: {text!r} points at docs/ without naming a page"
            assert (ROOT / "docs" / name).is_file(), f"{module.name}: no such page {reference}"
