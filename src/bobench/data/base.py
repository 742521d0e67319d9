"""The dataset abstraction every protocol reads: labelled RGB images with named splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bobench.errors import InvalidArgument


@dataclass
class Dataset:
    """Labelled images with named splits.

    `load(i)` returns image i as an HxWx3 uint8 RGB array (it raises InvalidArgument naming the file
    when the image cannot be decoded). `splits` maps a split name ("train", "val", "test" for
    classification; "query", "gallery" for retrieval) to sorted item indices. `fingerprint` is a
    content hash (pixels or file bytes, labels, split assignment): any change to the data changes it.
    """

    name: str
    classes: list[str]
    labels: np.ndarray  # int64 [N], indices into classes
    splits: dict[str, np.ndarray]
    load: Callable[[int], np.ndarray]
    fingerprint: str
    sources: Sequence[str] = ()  # per-item origin (file path or "package:item") for error messages
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def split(self, name: str) -> np.ndarray:
        """Indices of split `name`; an unknown split is an InvalidArgument listing the known ones."""
        try:
            return self.splits[name]
        except KeyError:
            raise InvalidArgument(
                f"dataset {self.name!r} has no split {name!r} (splits: {', '.join(sorted(self.splits))})"
            ) from None

    def describe(self, i: int) -> str:
        return self.sources[i] if i < len(self.sources) else f"{self.name}[{i}]"


def fingerprint_arrays(*parts: np.ndarray | bytes | str) -> str:
    """sha256 over arrays/bytes/strings, in order; 16 hex chars."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]
