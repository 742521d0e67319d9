"""Write deploy/secrets/secrets.env (Secret `bobench-credentials` of `kubectl apply -k deploy/`), random values.

`make deploy-secrets` runs this. The keys come from deploy/secrets/secrets.env.example (one owner of the
list); user names get a readable prefix and a random suffix, passwords and keys 48 random hex characters (safe
inside Triton's `--*-restricted-*=...:key=value` flags and in MinIO, which wants at least 8). The file is
created with mode 0600. An existing file is never overwritten unless `--force` (FORCE=1 in make): MinIO
keeps its administrator from the first start, so new values on a running cluster need a rotation.

Exit status: 0 written, 1 refused (file exists) or the example file is unreadable/empty.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "secrets" / "secrets.env.example"
TARGET = ROOT / "deploy" / "secrets" / "secrets.env"
# Keys that hold a user name: a fixed prefix (readable in MinIO's and Grafana's logs) + random suffix.
USER_PREFIXES = {
    "MINIO_ROOT_USER": "minio-admin-",
    "BOBENCH_S3_ACCESS_KEY": "bobench-",
    "TRITON_S3_ACCESS_KEY": "triton-",
    "GRAFANA_ADMIN_USER": "admin-",
}
_KEY_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=\s*$")


class SecretsError(Exception):
    """The secrets file cannot be written; the message says why and what to do."""


def example_keys(example: Path = EXAMPLE) -> list[str]:
    """Keys declared in the example file (`KEY=` lines with no value), in order.

    Raises SecretsError when the file is missing, declares a value, or declares no key.
    """
    try:
        lines = example.read_text().splitlines()
    except OSError as exc:
        raise SecretsError(f"cannot read {example}: {exc}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            raise SecretsError(f"{example}:{number}: expected 'KEY=' with no value, got {line!r}")
        keys.append(match.group(1))
    if not keys:
        raise SecretsError(f"{example}: declares no keys")
    return keys


def random_values(keys: list[str]) -> dict[str, str]:
    """One fresh random value per key (user names prefixed, see USER_PREFIXES)."""
    return {
        key: USER_PREFIXES[key] + secrets.token_hex(6) if key in USER_PREFIXES else secrets.token_hex(24)
        for key in keys
    }


def write_secrets(target: Path = TARGET, example: Path = EXAMPLE, *, force: bool = False) -> dict[str, str]:
    """Write `target` (mode 0600) with random values for every key of `example`; returns the values.

    Raises SecretsError when `target` exists and `force` is false.
    """
    if target.exists() and not force:
        raise SecretsError(
            f"{target} exists: not overwriting it (MinIO keeps the credentials of its first start). "
            "Run with FORCE=1 (make deploy-secrets FORCE=1) to replace it."
        )
    values = random_values(example_keys(example))
    text = "# Written by `make deploy-secrets`; never commit this file.\n"
    text += "".join(f"{k}={v}\n" for k, v in values.items())
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, target)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"file to write (default {TARGET})")
    args = parser.parse_args(argv)
    try:
        values = write_secrets(args.out, force=args.force)
    except SecretsError as exc:
        print(f"deploy-secrets: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (mode 0600): {', '.join(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
