"""checkov over infra/ (and over the CI workflow) finds no failure left unsuppressed.

Every suppression is an inline ``// checkov:skip=CKV_...: reason`` inside the resource it concerns,
and is listed in SUPPRESSIONS below with the resource: a new one needs a reviewed change here too.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from infra_support import INFRA, ROOT, CheckovRun, run_checkov

#: (check id, resource) → why it is accepted (the full reason is the comment in the Bicep).
SUPPRESSIONS = {
    ("CKV_AZURE_35", "Microsoft.Storage/storageAccounts.account"): "no VNet: public endpoint",
    ("CKV_AZURE_59", "Microsoft.Storage/storageAccounts.account"): "no VNet: public endpoint",
    ("CKV_AZURE_206", "Microsoft.Storage/storageAccounts.account"): "replication is a parameter",
    ("CKV_AZURE_225", "Microsoft.Web/serverfarms.plan"): "zone redundancy is a parameter",
    ("CKV_AZURE_222", "Microsoft.Web/sites.site"): "the HTTP API is public by design",
    ("CKV_AZURE_17", "Microsoft.Web/sites.site"): "callers use keys or Entra tokens",
    ("CKV_AZURE_212", "Microsoft.Web/sites.site"): "Flex scales on demand",
    ("CKV_AZURE_213", "Microsoft.Web/sites.site"): "health check would evict every instance",
    ("CKV_AZURE_193", "Microsoft.EventGrid/topics.topic"): "no VNet: public endpoint, Entra only",
}

SKIP_COMMENT = re.compile(r"//\s*checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?$")


@pytest.fixture(scope="module")
def infra_scan() -> CheckovRun:
    return run_checkov("--directory", "infra", "--framework", "bicep", "secrets")


def failures(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]
    ]


def test_checkov_made_no_network_call(infra_scan: CheckovRun) -> None:
    assert infra_scan.network_attempts == []


def test_checkov_parses_every_bicep_file(infra_scan: CheckovRun) -> None:
    summary = infra_scan.report("bicep")["summary"]
    assert summary["parsing_errors"] == 0, infra_scan.report("bicep")["results"]["parsing_errors"]
    # identity, workspace, components, account + services, queues, table, containers, lifecycle,
    # role assignments, plan, site, and the Graph resources of the two optional modules
    assert summary["resource_count"] >= 30


def test_no_unsuppressed_failure(infra_scan: CheckovRun) -> None:
    assert failures(infra_scan.report("bicep")) == []
    for report in infra_scan.reports:
        assert failures(report) == [], report["check_type"]


def test_suppressions_are_the_reviewed_ones_each_with_a_reason(infra_scan: CheckovRun) -> None:
    skipped = infra_scan.report("bicep")["results"]["skipped_checks"]
    found = {(c["check_id"], c["resource"]): c["check_result"]["suppress_comment"] for c in skipped}
    assert set(found) == set(SUPPRESSIONS)
    for key, reason in found.items():
        assert len(reason) >= 60, f"{key}: the reason is too thin: {reason!r}"


def test_every_skip_comment_has_a_reason_and_is_used(infra_scan: CheckovRun) -> None:
    applied = {c["check_id"] for c in infra_scan.report("bicep")["results"]["skipped_checks"]}
    for path in INFRA.rglob("*.bicep"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:" not in line:
                continue
            match = SKIP_COMMENT.search(line.strip())
            where = f"{path.relative_to(ROOT)}:{number}"
            assert match, f"{where}: write suppressions as // checkov:skip=CKV_ID: reason"
            assert match.group(2), f"{where}: {match.group(1)} has no reason"
            assert match.group(1) in applied, f"{where}: {match.group(1)} suppresses nothing"


def test_checkov_still_catches_an_insecure_template() -> None:
    """Canary for the pycep-parser override (requirements-infra.txt): a file with an extension
    declaration and obviously wrong settings must be parsed and must fail."""
    canary = run_checkov("--file", "tests/infra/fixtures/insecure.bicep", "--framework", "bicep")
    report = canary.report("bicep")
    assert report["summary"]["parsing_errors"] == 0
    failed = {check for check, _, _ in failures(report)}
    expected = {
        "CKV_AZURE_3",  # storage: HTTPS only
        "CKV_AZURE_44",  # storage: TLS 1.2
        "CKV_AZURE_70",  # site: HTTPS only
        "CKV_AZURE_78",  # site: FTP(S) disabled
    }
    assert expected <= failed, failed
    assert canary.network_attempts == []


def test_ci_workflow_passes_checkov() -> None:
    scan = run_checkov(
        "--directory", str(ROOT / ".github"), "--framework", "github_actions", "secrets"
    )
    assert scan.network_attempts == []
    report = scan.report("github_actions")
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 0
    for r in scan.reports:
        assert failures(r) == [], r["check_type"]
