"""Write deploy/secrets/secrets.env and deploy/secrets/auth-tokens.jsonl, the git-ignored files behind the
Secrets `bobench-credentials` and `bobench-auth-tokens` of `kubectl apply -k deploy/`.

`make deploy-secrets` runs this. The keys of secrets.env come from deploy/secrets/secrets.env.example (one
owner of the list); user names get a readable prefix and a random suffix, bearer tokens the `bob_` prefix
of `bob auth token` and 43 URL-safe random characters, the result signing key 64 random hex characters,
other passwords and keys 48 (safe inside Triton's `--*-restricted-*=...:key=value` flags and in MinIO,
which wants at least 8).

Re-running keeps every value already in secrets.env and only fills keys it lacks (a cluster deployed
before a key existed gets it without losing the others: MinIO keeps its administrator from the first
start). `--force` (FORCE=1 in make) draws every value anew, which a running cluster takes only with a
rotation (deploy/README.md).

auth-tokens.jsonl is the services' tokens file (`bobench.rpc.auth_tokens`: one JSON object a line,
identity, roles and the SHA-256 of the token, never the token). This script owns two entries, made from
secrets.env: identity `scheduler` (role service, token SCHEDULER_TOKEN: the scheduler's calls to the
evaluators) and identity `admin` (role admin, token ADMIN_TOKEN: for people, used by no pod). Every
other line (users added with `bob auth token --tokens-file deploy/secrets/auth-tokens.jsonl`) is kept
as it is. Both files are mode 0600 and rewritten only when their content changes. The hash is
hashlib's SHA-256 of the token's UTF-8 bytes, as `bobench.rpc.auth_tokens.token_digest` computes it:
this script runs with the system python3, without the bobench package.

Exit status: 0 written or already complete, 1 the example or an existing file cannot be used (the
message says which file and line).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "secrets" / "secrets.env.example"
TARGET = ROOT / "deploy" / "secrets" / "secrets.env"
TOKENS_FILE = "auth-tokens.jsonl"  # next to secrets.env (deploy/secrets/kustomization.yaml reads both)
# Keys that hold a user name: a fixed prefix (readable in MinIO's and Grafana's logs) + random suffix.
USER_PREFIXES = {
    "MINIO_ROOT_USER": "minio-admin-",
    "BOBENCH_S3_ACCESS_KEY": "bobench-",
    "TRITON_S3_ACCESS_KEY": "triton-",
    "GRAFANA_ADMIN_USER": "admin-",
}
# Keys that hold a bearer token -> (identity, roles) of its entry in the tokens file.
TOKEN_IDENTITIES = {
    "SCHEDULER_TOKEN": ("scheduler", ("service",)),
    "ADMIN_TOKEN": ("admin", ("admin",)),
}
TOKEN_PREFIX = "bob_"  # = bobench.rpc.auth_tokens.TOKEN_PREFIX
SIGNING_KEYS = ("RESULT_SIGNING_KEY",)  # HMAC-SHA256 keys: 32 random bytes
_KEY_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=\s*$")
_VALUE_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
HEADER = "# Written by `make deploy-secrets`; never commit this file.\n"
TOKENS_HEADER = (
    "# The services' tokens file (Secret bobench-auth-tokens), written by `make deploy-secrets`: hashes\n"
    "# only. Identities 'scheduler' and 'admin' are that script's (tokens in secrets.env); add people\n"
    "# with `bob auth token --tokens-file deploy/secrets/auth-tokens.jsonl` (deploy/README.md).\n"
)


class SecretsError(Exception):
    """The secrets files cannot be written; the message says why and what to do."""


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


def random_value(key: str) -> str:
    """A fresh random value for `key` (see the module docstring for the forms)."""
    if key in USER_PREFIXES:
        return USER_PREFIXES[key] + secrets.token_hex(6)
    if key in TOKEN_IDENTITIES:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)
    if key in SIGNING_KEYS:
        return secrets.token_hex(32)
    return secrets.token_hex(24)


def random_values(keys: list[str]) -> dict[str, str]:
    """One fresh random value per key."""
    return {key: random_value(key) for key in keys}


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an existing secrets file ({} when it does not exist).

    Raises SecretsError naming the file and line of a line that is not KEY=VALUE (never its content:
    it may hold a secret).
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SecretsError(f"cannot read {path}: {exc.strerror}") from None
    values = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _VALUE_LINE.match(line)
        if match is None:
            raise SecretsError(f"{path}:{number}: not a KEY=VALUE line; fix it or run with FORCE=1")
        values[match.group(1)] = match.group(2).strip()
    return values


def _write_private(path: Path, text: str) -> bool:
    """Replace `path` with `text` (mode 0600, atomically); False, and nothing written, when unchanged."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
    return True


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a token, as bobench.rpc.auth_tokens.token_digest computes it."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_lines(values: dict[str, str]) -> dict[str, str]:
    """identity -> the tokens-file line of each token this script owns (keys of TOKEN_IDENTITIES)."""
    lines = {}
    for key, (identity, roles) in TOKEN_IDENTITIES.items():
        if values.get(key):
            entry = {"identity": identity, "roles": sorted(roles), "sha256": token_digest(values[key])}
            lines[identity] = json.dumps(entry)
    return lines


def write_auth_tokens(path: Path, values: dict[str, str]) -> bool:
    """Write the tokens file: this script's entries from `values`, every other line of an existing file
    kept. Returns whether the file changed.

    Raises SecretsError naming the file and line of an existing line that is not a JSON object with an
    identity (the services could not read the file either).
    """
    wanted = token_lines(values)
    try:
        old = path.read_text().splitlines()
    except FileNotFoundError:
        old = []
    except OSError as exc:
        raise SecretsError(f"cannot read {path}: {exc.strerror}") from None
    kept = []
    for number, line in enumerate(old, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("identity"), str):
            raise SecretsError(f"{path}:{number}: not a tokens-file entry (JSON object with 'identity')")
        if doc["identity"] not in wanted:
            kept.append(line)
    return _write_private(path, TOKENS_HEADER + "".join(f"{line}\n" for line in [*wanted.values(), *kept]))


def write_secrets(
    target: Path = TARGET, example: Path = EXAMPLE, *, force: bool = False, tokens_file: Path | None = None
) -> dict[str, str]:
    """Make `target` hold a value for every key of `example` (existing values kept unless `force`) and
    write the tokens file (default: auth-tokens.jsonl next to `target`); returns the values.

    Keys in an existing `target` that the example no longer declares are kept at its end.
    Raises SecretsError for an unusable example, secrets file or tokens file.
    """
    keys = example_keys(example)
    existing = {} if force else read_env(target)
    values = {key: existing.get(key) or random_value(key) for key in keys}
    extra = {k: v for k, v in existing.items() if k not in values}
    text = HEADER + "".join(f"{k}={v}\n" for k, v in {**values, **extra}.items())
    _write_private(target, text)
    write_auth_tokens(tokens_file or target.with_name(TOKENS_FILE), values)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="draw every value anew")
    parser.add_argument("--out", type=Path, default=TARGET, help=f"secrets file (default {TARGET})")
    parser.add_argument(
        "--tokens-file", type=Path, help=f"tokens file (default {TOKENS_FILE} next to the secrets file)"
    )
    args = parser.parse_args(argv)
    try:
        before = {} if args.force else read_env(args.out)
        values = write_secrets(args.out, force=args.force, tokens_file=args.tokens_file)
    except SecretsError as exc:
        print(f"deploy-secrets: {exc}", file=sys.stderr)
        return 1
    new = [k for k in values if not before.get(k)]
    kept = [k for k in values if before.get(k)]
    tokens_file = args.tokens_file or args.out.with_name(TOKENS_FILE)
    print(f"{args.out} (mode 0600): new {', '.join(new) or 'none'}; kept {', '.join(kept) or 'none'}")
    print(f"{tokens_file} (mode 0600): hashes of {', '.join(TOKEN_IDENTITIES)} and any users added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
