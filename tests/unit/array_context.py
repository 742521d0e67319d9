"""ArrayContext: a RunContext fixture serving fixed (features, labels) arrays, shared by protocol tests.

Keys are split names, or (split, variant) pairs for variant-aware protocols (retrieval, OOD). It records
what was asked for, so tests can check e.g. that selection never reads the test split.
"""

from __future__ import annotations

import numpy as np

from bobench.data.base import Dataset
from bobench.errors import InvalidArgument


class ArrayContext:
    def __init__(self, arrays: dict, n_classes: int = 1) -> None:
        self._arrays = {(k, None) if isinstance(k, str) else k: v for k, v in arrays.items()}
        self.requests: list[tuple[str, str | None]] = []
        clean = {split: xy for (split, variant), xy in self._arrays.items() if variant is None}
        offsets = np.cumsum([0] + [len(y) for _, y in clean.values()])
        self.dataset = Dataset(
            name="arrays",
            classes=[f"c{i}" for i in range(n_classes)],
            labels=np.concatenate([y for _, y in clean.values()]),
            splits={name: np.arange(offsets[i], offsets[i + 1]) for i, name in enumerate(clean)},
            load=lambda i: np.zeros((8, 8, 3), np.uint8),
            fingerprint="fixture",
        )

    @property
    def requested(self) -> list[str]:
        return [split for split, _ in self.requests]

    def features(self, split, dataset=None, variant=None):
        self.requests.append((split, variant))
        self.dataset.split(split)  # an unknown split raises InvalidArgument, as in the real context
        if (split, variant) not in self._arrays:
            raise InvalidArgument(f"fixture has no variant {variant!r} of split {split!r}")
        return self._arrays[(split, variant)]

    def progress(self, done: int, total: int, message: str = "") -> None:
        assert 0 <= done <= total
