"""`make audit` (scripts/audit_lock.py): pip-audit over every pin of constraints.txt; findings, accepted
findings (with reasons), stale ignores and an unreachable vulnerability service are told apart."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "scripts" / "audit_lock.py")
audit = importlib.util.module_from_spec(_spec)
sys.modules["audit_lock"] = audit
_spec.loader.exec_module(audit)


def report(*deps: dict) -> dict:
    return {"dependencies": list(deps), "fixes": []}


VULN = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-0001"], "fix_versions": ["2.0"], "description": "x"}


def test_an_unaccepted_vulnerability_fails_with_its_package_and_fix():
    status, lines = audit.judge(report({"name": "foo", "version": "1.0", "vulns": [VULN]}), [])
    assert status == audit.FINDINGS
    assert "FINDING   foo==1.0: PYSEC-2099-1 (fixed in: 2.0)" in lines


def test_an_accepted_vulnerability_passes_and_is_still_printed_with_its_reason():
    accepted = [audit.Accepted("CVE-2099-0001", "foo", "only reachable through the CLI we do not ship")]
    status, lines = audit.judge(
        report(
            {"name": "Foo", "version": "1.0", "vulns": [VULN]}, {"name": "bar", "version": "2", "vulns": []}
        ),
        accepted,
    )
    assert status == audit.OK
    assert any(line.startswith("accepted") and "we do not ship" in line for line in lines)
    assert lines[-1] == "2 of 2 pinned packages audited, 0 finding(s), 1 accepted"


def test_stale_ignores_and_unknown_packages_are_reported_but_do_not_fail():
    accepted = [audit.Accepted("GHSA-xxxx", "foo", "fixed long ago")]
    status, lines = audit.judge(
        report(
            {"name": "foo", "version": "1.0", "vulns": []},
            {"name": "tensorrt-cu12-libs", "skip_reason": "Dependency not found on PyPI"},
        ),
        accepted,
    )
    assert status == audit.OK
    assert "stale ignore entry (matches no finding): GHSA-xxxx foo" in lines
    assert "not audited  tensorrt-cu12-libs: Dependency not found on PyPI" in lines


def test_a_service_that_knows_none_of_the_pins_is_not_a_pass():
    skipped = [{"name": f"p{i}", "skip_reason": "Dependency not found on PyPI"} for i in range(3)]
    status, lines = audit.judge(report(*skipped), [])
    assert status == audit.NOT_AUDITED
    assert lines[-1] == "NOT AUDITED: the vulnerability service knew none of the 3 pins"


def test_judging_a_saved_report_from_the_command_line(tmp_path):
    saved = tmp_path / "audit.json"
    saved.write_text(json.dumps(report({"name": "foo", "version": "1.0", "vulns": [VULN]})))
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# none\n")
    assert audit.main(["--report", str(saved), "--ignore-file", str(ignore)]) == audit.FINDINGS
    ignore.write_text("PYSEC-2099-1  foo  accepted for the test\n")
    assert audit.main(["--report", str(saved), "--ignore-file", str(ignore)]) == audit.OK


def test_ignore_entries_need_a_reason(tmp_path):
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# header\nPYSEC-2099-1  foo\n")
    with pytest.raises(ValueError, match="ignore.txt:2"):
        audit.read_ignores(ignore)
    assert audit.read_ignores(ROOT / "pip-audit-ignore.txt") is not None  # the repository's file parses


def test_the_lock_holds_every_pin_and_pip_audit_is_pinned(tmp_path):
    out = tmp_path / "lock.txt"
    n = audit.lock_requirements(ROOT / "constraints.txt", out)
    lines = out.read_text().splitlines()
    assert n == len(lines) > 100 and all("==" in line and "#" not in line for line in lines)
    assert any(line.replace("_", "-").startswith("pip-audit==") for line in lines)
    assert any(line.startswith("tensorrt-cu12==") for line in lines)  # the GPU-only section is audited too
