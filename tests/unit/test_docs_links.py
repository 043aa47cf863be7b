"""The repository stands alone: every relative link in the README and docs/ names a file inside
it (a link to ../shared/DESIGN.md once sent readers outside), and the contracts are linked."""

from __future__ import annotations

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
