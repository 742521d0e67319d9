"""Dataset fingerprints: a content hash that changes whenever the data, labels, split or seed change.

The fingerprint is part of every feature-cache key (and of the checkpoint keys of the training
protocols). Hashing file bytes can take a while
for large folders, so datasets compute it on first access (`LazyFingerprintDataset`) and the content
digest is cached in-process per dataset ref. For file datasets the cache entry also remembers the
file list with each file's size and modification time, so an added or edited file invalidates it.
Labels, classes and splits are cheap to hash and are combined afresh on every computation.

Run keys use a cheaper stand-in with the same guarantees, the reference fingerprint computed while
planning (`bobench.data.reference`): for local files the same formula with `stat_digest` (each file's
size and modification time) in place of `files_digest` (its bytes). Every local-file source therefore
takes `content_digest` (default `files_digest`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np

from bobench.data.base import Dataset, fingerprint_arrays
from bobench.errors import InvalidArgument
from bobench.hashing import sha256_file

FINGERPRINT_VERSION = "bobench-dataset-v1"

_cache_lock = threading.Lock()
_cache: dict[Hashable, tuple[Hashable, str]] = {}


class LazyFingerprintDataset(Dataset):
    """A `Dataset` whose `fingerprint` is computed by `fingerprint_fn` on first read, then kept.

    Everything else behaves like `Dataset`; construct it with the same keyword arguments, giving
    `fingerprint_fn` instead of `fingerprint` (a given `fingerprint` wins, as `dataclasses.replace`
    does). Pickling computes the fingerprint first, so worker processes never need the function.
    """

    def __init__(
        self, *, fingerprint_fn: Callable[[], str] | None = None, fingerprint: str = "", **fields
    ) -> None:
        if fingerprint_fn is None and not fingerprint:
            raise TypeError("LazyFingerprintDataset needs fingerprint_fn or fingerprint")
        self._fingerprint_fn = fingerprint_fn
        self._fingerprint: str | None = None
        super().__init__(fingerprint=fingerprint, **fields)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fingerprint"], state["_fingerprint_fn"] = self.fingerprint, None
        return state

    @property
    def fingerprint(self) -> str:  # type: ignore[override]
        if self._fingerprint is None and self._fingerprint_fn is not None:
            self._fingerprint = self._fingerprint_fn()
        return self._fingerprint

    @fingerprint.setter
    def fingerprint(self, value: str) -> None:
        self._fingerprint = value or None

    def __repr__(self) -> str:  # the dataclass repr would hash every file
        splits = {k: int(v.size) for k, v in self.splits.items()}
        return f"{type(self).__name__}(name={self.name!r}, items={len(self)}, classes={len(self.classes)}, splits={splits})"


def combine_fingerprint(
    content_digest: str,
    classes: Sequence[str],
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    seed: int,
) -> str:
    """The dataset fingerprint: content digest, class names, labels, split assignment and split seed."""
    parts: list[np.ndarray | bytes | str] = [FINGERPRINT_VERSION, content_digest, json.dumps(list(classes))]
    parts.append(np.asarray(labels, dtype=np.int64))
    for name in sorted(splits):
        parts += [f"split:{name}", np.asarray(splits[name], dtype=np.int64)]
    parts.append(f"seed:{int(seed)}")
    return fingerprint_arrays(*parts)


def arrays_digest(images: Iterable[np.ndarray]) -> str:
    """sha256 over a sequence of pixel arrays (dtype, shape and bytes of each, in order)."""
    h = hashlib.sha256()
    for image in images:
        a = np.ascontiguousarray(image)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of one file's bytes. A missing/unreadable file is an InvalidArgument naming it."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}") from None


def files_digest(paths: Sequence[str]) -> str:
    """sha256 over the per-file digests, in item order (file names do not enter: moving a dataset
    to another directory keeps its fingerprint)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(file_digest(path).encode())
    return h.hexdigest()


ContentDigest = Callable[[Sequence[str]], str]  # paths -> digest of what they hold


def stat_digest(paths: Sequence[str]) -> str:
    """sha256 over each file's (size, mtime_ns), in item order: reads no file bytes. Editing, replacing
    or truncating a file changes it; like `files_digest`, file names do not enter. A missing file is an
    InvalidArgument naming it."""
    h = hashlib.sha256(b"stat-v1")
    for size, mtime_ns, _inode in stat_signature(paths):
        h.update(f"{size}:{mtime_ns};".encode())
    return h.hexdigest()


def stat_signature(paths: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """(size, mtime_ns, inode) of each file: cheap evidence that no file changed since it was hashed
    (the make/rsync heuristic; `clear_fingerprint_cache` forces a rehash)."""
    sig = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InvalidArgument(f"cannot stat {path}: {exc.strerror or exc}") from None
        sig.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sig)


def cached_digest(key: Hashable, compute: Callable[[], str], token: Hashable = None) -> str:
    """Return the content digest cached under `key` if its `token` still matches, else compute and cache it."""
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == token:
        return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (token, value)
    return value


def clear_fingerprint_cache() -> None:
    """Forget every cached fingerprint (tests; long-lived servers after data was replaced in place)."""
    with _cache_lock:
        _cache.clear()


def array_fingerprint_fn(
    cache_key: Hashable,
    images: Sequence[np.ndarray],
    classes: Sequence[str],
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    seed: int,
) -> Callable[[], str]:
    """A fingerprint function for in-memory datasets (bundled and synthetic sets)."""

    def fingerprint() -> str:
        content = cached_digest(cache_key, lambda: arrays_digest(images), token=len(images))
        return combine_fingerprint(content, classes, labels, splits, seed)

    return fingerprint


def file_fingerprint_fn(
    cache_key: Hashable,
    paths: Sequence[str],
    classes: Sequence[str],
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    seed: int,
    content_digest: ContentDigest = files_digest,
) -> Callable[[], str]:
    """A fingerprint function for file datasets: hashes file bytes (cached, revalidated by size and
    mtime), or whatever `content_digest` computes (uncached: the stand-ins are cheap)."""

    def fingerprint() -> str:
        if content_digest is not files_digest:
            return combine_fingerprint(content_digest(paths), classes, labels, splits, seed)
        token = (tuple(paths), stat_signature(paths))
        content = cached_digest(cache_key, lambda: files_digest(paths), token=token)
        return combine_fingerprint(content, classes, labels, splits, seed)

    return fingerprint
