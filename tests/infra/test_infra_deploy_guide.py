"""docs/deploy.md and CI agree with the tools they rely on: a pinned Bicep that is at least the
minimum the guide states, and a `what-if` before the first `create`, with the same parameters."""

from __future__ import annotations

import re

from infra_support import ROOT, fenced_blocks, load_yaml

GUIDE = ROOT / "docs" / "deploy.md"
HOOK = ROOT / "scripts" / "azd-preprovision.sh"


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.removeprefix("v").split("."))


def minimum_bicep() -> str:
    (found,) = re.findall(r"^MIN_BICEP=([0-9.]+)$", HOOK.read_text(), re.MULTILINE)
    return str(found)


def test_ci_pins_bicep_and_proves_the_stated_minimum() -> None:
    job = load_yaml(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]["bicep"]
    pinned = job["strategy"]["matrix"]["bicep"]
    assert all(re.fullmatch(r"v\d+\.\d+\.\d+", v) for v in pinned), pinned  # never "latest"
    assert pinned[0] == "v" + minimum_bicep()  # the oldest supported Bicep builds the template
    assert all(version(v) >= version(minimum_bicep()) for v in pinned)
    assert version(pinned[-1]) > version(pinned[0])  # and a current one lints it
    assert job["env"]["BICEP_VERSION"] == "${{ matrix.bicep }}"
    install = next(s["run"] for s in job["steps"] if s.get("name") == "Install Bicep")
    assert 'az bicep install --version "$BICEP_VERSION"' in install
    assert re.search(r"^\s*az bicep install\s*$", install, re.MULTILINE) is None  # unpinned


def parameters_of(command: str) -> list[str]:
    (params,) = re.findall(r"--parameters (.*)", command.replace("\\\n", " "))
    return str(params).split()


def test_guide_previews_with_what_if_before_the_first_create() -> None:
    blocks = fenced_blocks(GUIDE.read_text())
    step3 = next(b for b in blocks if "az deployment group create" in b)
    commands = [c for c in re.split(r"\n\n+", step3) if c.startswith("az deployment group")]
    verbs = [c.split()[3] for c in commands]
    assert verbs == ["what-if", "create"]
    what_if, create = commands
    assert parameters_of(what_if) == parameters_of(create)  # previews what create will do
    for option in ("--resource-group", "--name mailgw", "--template-file infra/main.bicep"):
        assert option in what_if and option in create, option
    # the first create of the guide is the one previewed
    first_create = GUIDE.read_text().index("az deployment group create")
    assert GUIDE.read_text().index("az deployment group what-if") < first_create


def test_guide_never_installs_an_unchecked_bicep() -> None:
    step1 = next(b for b in fenced_blocks(GUIDE.read_text()) if "az login" in b)
    assert "az bicep install" in step1
    assert "az bicep version" in step1 and minimum_bicep() in step1


def test_guide_files_exist() -> None:
    """Every repository file the guide links or runs is there."""
    text = GUIDE.read_text()
    linked = set(re.findall(r"\]\(\.\./([^)#\s]+)", text))
    run = set(re.findall(r"(?<![\w/])(scripts/[\w.-]+)", text))
    assert linked and run
    for path in sorted(linked | run):
        assert (ROOT / path).exists(), path
    for doc in re.findall(r"\]\(([\w-]+\.md)", text):
        assert (GUIDE.parent / doc).exists(), doc
