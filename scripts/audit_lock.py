"""Vulnerability audit of the lock: `pip-audit` over every exact pin of constraints.txt.

`make audit` runs this. constraints.txt pins every package of every extra of pyproject.toml (a test
keeps it so), so auditing it with `--no-deps --disable-pip` covers the images' dependencies too, with
nothing installed or resolved. Known findings that are accepted are listed in pip-audit-ignore.txt, one
per line: `<vulnerability id or alias>  <package>  <why it is accepted>`; an accepted finding is still
printed, and an entry that matches nothing is reported as stale.

The outcome is told apart, because CI treats them differently:
  0  audited: no finding beyond the accepted ones (packages the service does not know, e.g. the
     tensorrt wheels on NVIDIA's index only, are listed as not audited);
  1  findings: a pinned version with a known vulnerability that is not accepted;
  2  usage: the lock, the ignore file or pip-audit itself is broken;
  3  not audited: the vulnerability service (PyPI's JSON API or OSV) could not be reached or knew
     none of the pins, so nothing was checked. Never reported as a pass.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = ROOT / "pip-audit-ignore.txt"
OK, FINDINGS, USAGE, NOT_AUDITED = 0, 1, 2, 3
_NETWORK = re.compile(
    r"ConnectionError|NameResolution|Name or service not known|Temporary failure in name resolution|"
    r"Max retries exceeded|timed out|Timeout|Connection refused|Network is unreachable|ServiceError",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Accepted:
    vuln: str
    package: str
    reason: str


def read_ignores(path: Path) -> list[Accepted]:
    """Accepted findings; raises ValueError naming the line of an entry without a reason."""
    accepted = []
    if not path.exists():
        return accepted
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split(None, 2)
        if len(words) < 3:
            raise ValueError(f"{path.name}:{number}: expected '<vulnerability id> <package> <why accepted>'")
        accepted.append(Accepted(words[0], words[1].lower(), words[2]))
    return accepted


def lock_requirements(constraints: Path, out: Path) -> int:
    """Write the `name==version` lines of the lock to `out`; returns how many."""
    lines = [
        line.split("#", 1)[0].strip()
        for line in constraints.read_text().splitlines()
        if "==" in line.split("#", 1)[0]
    ]
    out.write_text("".join(f"{line}\n" for line in lines))
    return len(lines)


def run_pip_audit(requirements: Path, service: str, timeout_s: float) -> tuple[dict | None, str]:
    """(pip-audit's JSON report or None, its stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip"]
        command += ["-s", service, "-f", "json", "-o", str(report), "--progress-spinner", "off"]
        command += ["--timeout", str(int(timeout_s))]
        result = subprocess.run(command, capture_output=True, text=True)
        text = report.read_text() if report.exists() else ""
    try:
        return (json.loads(text) if text.strip() else None), result.stderr
    except json.JSONDecodeError:
        return None, result.stderr


def judge(report: dict, accepted: list[Accepted]) -> tuple[int, list[str]]:
    """(exit status, lines to print) for pip-audit's JSON report."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    lines, findings, used = [], 0, set()
    for dep in audited:
        for vuln in dep.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            match = next((a for a in accepted if a.vuln in ids and a.package == dep["name"].lower()), None)
            fix = ", ".join(vuln.get("fix_versions", [])) or "no fixed version"
            where = f"{dep['name']}=={dep['version']}: {vuln['id']} (fixed in: {fix})"
            if match:
                used.add(match)
                lines.append(f"accepted  {where}: {match.reason}")
            else:
                findings += 1
                lines.append(f"FINDING   {where}")
    lines += [
        f"stale ignore entry (matches no finding): {a.vuln} {a.package}" for a in accepted if a not in used
    ]
    lines += [f"not audited  {d['name']}: {d['skip_reason']}" for d in skipped]
    summary = (
        f"{len(audited)} of {len(deps)} pinned packages audited, {findings} finding(s), {len(used)} accepted"
    )
    if not audited:
        return NOT_AUDITED, lines + [
            f"NOT AUDITED: the vulnerability service knew none of the {len(deps)} pins"
        ]
    return (FINDINGS if findings else OK), lines + [summary]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--ignore-file", type=Path, default=IGNORE)
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument(
        "--report", type=Path, help="judge this pip-audit JSON report instead of running pip-audit"
    )
    args = parser.parse_args(argv)
    try:
        accepted = read_ignores(args.ignore_file)
        if args.report:
            report, stderr = json.loads(args.report.read_text()), ""
        else:
            with tempfile.TemporaryDirectory() as tmp:
                requirements = Path(tmp) / "lock.txt"
                if not lock_requirements(args.constraints, requirements):
                    raise ValueError(f"{args.constraints.name}: no name==version pins")
                report, stderr = run_pip_audit(requirements, args.service, args.timeout_s)
    except (OSError, ValueError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return USAGE
    if report is None:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1][:500]
        if _NETWORK.search(stderr):
            print(
                f"audit: NOT AUDITED: the {args.service} vulnerability service is unreachable: {tail}",
                file=sys.stderr,
            )
            return NOT_AUDITED
        print(f"audit: pip-audit failed without a report: {tail}", file=sys.stderr)
        return USAGE
    status, lines = judge(report, accepted)
    for line in lines:
        print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
