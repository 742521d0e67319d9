"""`max_per_class`: a seeded, stratified subsample of any dataset (fast demos, quick looks at big sets)."""

from __future__ import annotations

import numpy as np

from bobench.data.base import Dataset, fingerprint_arrays
from bobench.errors import InvalidArgument


def subsample_per_class(ds: Dataset, max_per_class: int, seed: int = 0) -> Dataset:
    """Keep at most `max_per_class` items of each class, chosen with `seed`; split membership is kept.

    The result's fingerprint covers the parent's fingerprint, the cap and the seed, so cached features
    of the full set and of a subsample never mix.
    """
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class <= 0:
        raise InvalidArgument(
            f"dataset {ds.name!r}: max_per_class must be a positive integer, got {max_per_class!r}"
        )
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for cls in np.unique(ds.labels):
        members = np.flatnonzero(ds.labels == cls)
        if members.size > max_per_class:
            members = np.sort(rng.choice(members, size=max_per_class, replace=False))
        keep.append(members)
    kept = np.sort(np.concatenate(keep))
    new_index = np.full(len(ds), -1, dtype=np.int64)
    new_index[kept] = np.arange(kept.size)
    splits = {name: new_index[idx][new_index[idx] >= 0] for name, idx in ds.splits.items()}
    parent_load, sources = ds.load, list(ds.sources)
    return Dataset(
        name=ds.name,
        classes=list(ds.classes),
        labels=ds.labels[kept].copy(),
        splits=splits,
        load=lambda i: parent_load(int(kept[i])),
        fingerprint=fingerprint_arrays(ds.fingerprint, f"max_per_class={max_per_class}", f"seed={seed}"),
        sources=[sources[int(k)] for k in kept] if sources else (),
        meta={**ds.meta, "max_per_class": max_per_class, "parent_size": len(ds)},
    )
