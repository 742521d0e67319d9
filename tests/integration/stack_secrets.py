"""Helpers of the stack tests (imported by test modules): the secret values of a local stack and the
files under its state dir that contain any of them."""

from __future__ import annotations

import re
from pathlib import Path

from bobench.stack import read_secrets, secret_files


def stack_secret_values(state_dir: Path) -> dict[str, str]:
    """Every credential of the stack: `secrets.env` (S3 secret key, Triton admin key, auth tokens)
    and SeaweedFS's JWT signing keys, by name."""
    values = dict(read_secrets(state_dir))
    security = state_dir / "seaweedfs" / "conf" / "security.toml"
    section = ""
    for line in security.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif match := re.fullmatch(r'key = "([^"/]{16,})"', line.strip()):
            values[f"security.toml {section}"] = match.group(1)
    assert len(values) >= 6, sorted(values)  # S3 secret, Triton admin key, four JWT keys at least
    return {name: v for name, v in values.items() if v}


def files_holding(state_dir: Path, values: dict[str, str]) -> dict[str, list[str]]:
    """{file relative to state_dir: [names of the secrets it contains]} over every file under
    `state_dir` except `secret_files(state_dir)` (read as bytes: logs, stack.json, the S3 volumes)."""
    skip = {p.resolve() for p in secret_files(state_dir)}
    found: dict[str, list[str]] = {}
    for path in sorted(state_dir.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.resolve() in skip:
            continue
        data = path.read_bytes()
        hits = [name for name, v in values.items() if v.encode() in data]
        if hits:
            found[str(path.relative_to(state_dir))] = hits
    return found


def stack_cli(state_dir: Path, *args: str, timeout_s: float = 600) -> str:
    """`python -m bobench.stack ACTION --state-dir ...`: its stdout+stderr; fails the test on exit != 0."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bobench.stack", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr
