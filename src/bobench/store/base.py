"""The artifact store interface: flat keys ("battles/b1/plan.json") mapped to immutable-per-put objects.

Every implementation makes `put_*` atomic: a reader sees either the previous object or the whole new
one, never a partial write. State that changes over time is kept as one small JSON object per run or
battle and rewritten whole, so no append semantics are needed (S3 has none).
"""

from __future__ import annotations

import abc
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bobench.errors import InvalidArgument

_KEY_PART = re.compile(r"^[A-Za-z0-9_=+@,-][A-Za-z0-9._=+@,-]*$")


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object: its key, size in bytes and content digest (etag)."""

    key: str
    size_bytes: int
    etag: str


def check_key(key: str) -> str:
    """Validate a store key and return it.

    Keys are '/'-separated parts of letters, digits and `._=+@,-`, none empty or starting with '.'
    (which also rules out '..' and the stores' hidden temporary files), so the same key is safe as a
    file path and as an S3 object name.
    Raises InvalidArgument naming the key and the offending part.
    """
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"store key must be a non-empty string, got {key!r}")
    for part in key.split("/"):
        if not _KEY_PART.match(part):
            raise InvalidArgument(
                f"store key {key!r}: part {part!r} is not allowed (use letters, digits and ._=+@,- "
                "between single '/', not starting with '.')"
            )
    return key


def check_prefix(prefix: str) -> str:
    """Validate a listing prefix: '' (everything) or a key, optionally ending in '/'."""
    if prefix == "":
        return prefix
    check_key(prefix.rstrip("/") or "/")
    return prefix


class ArtifactStore(abc.ABC):
    """Objects by key. Missing objects raise `bobench.errors.NotFound`; an unreachable backend raises
    `bobench.errors.Unavailable`; a refused credential raises `bobench.errors.FailedPrecondition`."""

    url: str

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store `data` under `key` atomically, replacing any previous object."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's content; raises NotFound naming the key when it does not exist."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and etag of the object; raises NotFound when it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with `prefix` (recursively), sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object; returns False when there was none (deleting twice is not an error)."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str | Path) -> None:
        """Upload a local file atomically (streamed; large files are not read into memory)."""

    @abc.abstractmethod
    def get_file(self, key: str, path: str | Path) -> Path:
        """Download to `path` atomically (a temporary sibling renamed into place); returns `path`."""

    def exists(self, key: str) -> bool:
        """Whether an object exists under `key`."""
        from bobench.errors import NotFound

        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def put_json(self, key: str, value: Any) -> None:
        """Store `value` as compact, key-sorted JSON."""
        self.put_bytes(
            key, json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), "application/json"
        )

    def get_json(self, key: str) -> Any:
        """Load a JSON object; raises NotFound when missing and InvalidArgument when it is not JSON."""
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise InvalidArgument(f"{self.url}: object {key!r} is not valid JSON: {exc}") from None

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections (no-op by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
