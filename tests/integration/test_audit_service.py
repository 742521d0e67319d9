"""`make audit` against the real pip-audit and its real vulnerability service, in a subprocess (the
judging logic is tested without one in tests/unit/test_audit_lock.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "scripts" / "audit_lock.py")
audit = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("audit_lock", audit)
_spec.loader.exec_module(audit)


def test_pip_audit_runs_here_and_says_clearly_whether_it_audited(tmp_path):
    """The real pip-audit against its real service: 0 or 1 where the service answers, 3 with NOT AUDITED
    where it cannot be reached (the development machines: no OSV, PyPI's per-version API answers 404)."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# two pins\nrequests==2.34.2\nidna==3.10\n")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "audit_lock.py"),
            "--constraints",
            str(constraints),
            "--timeout-s",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (audit.OK, audit.FINDINGS, audit.NOT_AUDITED), result.stderr[-2000:]
    if result.returncode == audit.NOT_AUDITED:
        assert "NOT AUDITED" in result.stderr
    else:
        assert "pinned packages audited" in result.stdout + result.stderr
