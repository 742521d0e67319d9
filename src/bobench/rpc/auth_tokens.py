"""Static bearer tokens, hashed at rest: the tokens file and the lookup of a presented token.

The tokens file is JSON Lines, one entry per line:

    {"identity": "alice", "roles": ["submit", "read"], "sha256": "<hex digest of the token>"}

The token itself is never stored: `new_token` prints it once and appends only its SHA-256. An entry
without "sha256" holds no token; it names the roles of the client certificate whose subject CN is
`identity` (mTLS). Lookups hash the presented token and compare it with every entry in constant
time. The file is read again when it changes, so an appended token works without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from bobench.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

READ, SUBMIT, ADMIN, SERVICE = "read", "submit", "admin", "service"
ROLES = (READ, SUBMIT, ADMIN, SERVICE)
TOKEN_PREFIX = "bob_"

T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """Who is calling and what it may do. `admin` may do everything."""

    name: str
    roles: frozenset[str]

    def has_any(self, roles: Iterable[str]) -> bool:
        return ADMIN in self.roles or any(r in self.roles for r in roles)


@dataclass(frozen=True)
class TokenEntry:
    identity: str
    roles: frozenset[str]
    sha256: str = ""  # "" = an mTLS identity without a token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_roles(roles: Iterable[str] | str, where: str) -> frozenset[str]:
    """Roles from a list or a comma-separated string; InvalidArgument names an unknown one."""
    items = roles.split(",") if isinstance(roles, str) else list(roles)
    out = frozenset(str(r).strip() for r in items if str(r).strip())
    unknown = sorted(out - set(ROLES))
    if unknown:
        raise InvalidArgument(f"{where}: unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
    if not out:
        raise InvalidArgument(f"{where}: at least one role is required ({', '.join(ROLES)})")
    return out


def _check_identity(identity: str, where: str) -> str:
    if not identity or identity != identity.strip() or any(c.isspace() for c in identity):
        raise InvalidArgument(f"{where}: identity must be non-empty and without whitespace")
    return identity


def parse_tokens_file(path: Path) -> list[TokenEntry]:
    """The entries of a tokens file. InvalidArgument names the file and line of a bad entry (never
    its content: a line could be a pasted token)."""
    entries = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidArgument(f"tokens file {path}: cannot be read ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"tokens file {path} line {number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise InvalidArgument(f"{where}: not a JSON object") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("identity"), str):
            raise InvalidArgument(f"{where}: expected an object with 'identity', 'roles' and 'sha256'")
        digest = doc.get("sha256", "")
        if not isinstance(digest, str) or (digest and len(digest) != 64):
            raise InvalidArgument(f"{where}: 'sha256' must be a 64-digit hex digest")
        if "token" in doc:
            raise InvalidArgument(f"{where}: holds a plain token; store only its sha256 (bob auth token)")
        roles = doc.get("roles", [])
        if not isinstance(roles, list | str):
            raise InvalidArgument(f"{where}: 'roles' must be a list of role names")
        entries.append(
            TokenEntry(_check_identity(doc["identity"], where), parse_roles(roles, where), digest.lower())
        )
    return entries


def new_token(tokens_file: str | Path, identity: str, roles: Iterable[str] | str) -> str:
    """Create a token for `identity` with `roles`, append its hash to `tokens_file` (created 0600) and
    return the token (shown once; it cannot be recovered from the file)."""
    path = Path(tokens_file)
    entry = {
        "identity": _check_identity(identity, "--identity"),
        "roles": sorted(parse_roles(roles, "--roles")),
    }
    if path.exists():
        parse_tokens_file(path)  # refuse to append to a file the services could not read
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry["sha256"] = token_digest(token)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return token


def fresh_tokens_file(
    tokens_file: str | Path, roles_by_identity: dict[str, Iterable[str] | str]
) -> dict[str, str]:
    """Replace `tokens_file` with one new token per identity; returns {identity: token} (the local
    stack and the integration tests start their services with such a file)."""
    path = Path(tokens_file)
    path.unlink(missing_ok=True)
    return {identity: new_token(path, identity, roles) for identity, roles in roles_by_identity.items()}


class ReloadingFile(Generic[T]):
    """`parse(path)` of a file, parsed again when its size or mtime changes. A change that does not
    parse keeps the last good value (and logs why), so a half-written file cannot lock everyone out."""

    def __init__(self, path: str | Path, parse: Callable[[Path], T]) -> None:
        self.path = Path(path)
        self._parse = parse
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._value = parse(self.path)  # errors at start are the caller's to report

    def _stat(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (-1, -1)
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> T:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._value = self._parse(self.path)
                    except InvalidArgument as exc:
                        log.error("keeping the previous contents of %s: %s", self.path, exc)
                    self._stamp = stamp
        return self._value


class TokenStore:
    """Looks up presented tokens and certificate identities in a tokens file."""

    def __init__(self, tokens_file: str | Path) -> None:
        self._file = ReloadingFile(tokens_file, parse_tokens_file)

    def identity_of_token(self, token: str) -> Identity:
        """The identity a token belongs to; NotFound when no entry matches (every entry is compared,
        in constant time, whether or not an earlier one matched)."""
        digest = token_digest(token)
        match = None
        for entry in self._file.get():
            if entry.sha256 and hmac.compare_digest(entry.sha256, digest) and match is None:
                match = entry
        if match is None:
            raise NotFound("token")
        return Identity(match.identity, match.roles)

    def roles_of(self, identity: str) -> frozenset[str]:
        """Every role the file gives `identity` (the CN of a client certificate); empty when none."""
        roles: set[str] = set()
        for entry in self._file.get():
            if entry.identity == identity:
                roles |= entry.roles
        return frozenset(roles)
