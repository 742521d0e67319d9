"""`max_per_class`: a seeded subsample of any dataset, stratified per class *and* per split.

Each class keeps at most `max_per_class` items, shared among the splits in the proportions the class
has in the parent (largest-remainder rounding), so a 60/20/20 split stays 60/20/20 in every class.
When the cap allows it, every split that holds a class keeps at least one of its items: a small cap
never makes a class vanish from val or test.
"""

from __future__ import annotations

import numpy as np

from bobench.data.base import Dataset, fingerprint_arrays
from bobench.errors import InvalidArgument

SUBSET_VERSION = "per-split-v2"  # part of the fingerprint: bump when the selection rule changes


def split_quotas(sizes: list[int], cap: int) -> list[int]:
    """How many of each group to keep: proportional to `sizes`, summing to min(cap, sum(sizes)).

    Largest-remainder rounding; every non-empty group gets at least one item when the cap is at
    least the number of non-empty groups (taken from the groups with the largest quotas).
    """
    total = sum(sizes)
    if total <= cap:
        return list(sizes)
    exact = [cap * s / total for s in sizes]
    quotas = [int(np.floor(e)) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (quotas[i] - exact[i], i))
    for i in by_remainder[: cap - sum(quotas)]:
        quotas[i] += 1
    if cap >= sum(1 for s in sizes if s > 0):
        for i in (i for i, s in enumerate(sizes) if s > 0 and quotas[i] == 0):
            donor = max(range(len(sizes)), key=lambda j: (quotas[j], -j))
            quotas[donor] -= 1
            quotas[i] = 1
    return quotas


def _split_groups(ds: Dataset) -> np.ndarray:
    """Group id of each item: the index of the first split holding it, len(splits) for none."""
    group = np.full(len(ds), len(ds.splits), dtype=np.int64)
    for g, idx in reversed(list(enumerate(ds.splits.values()))):
        group[np.asarray(idx, dtype=np.int64)] = g
    return group


def _kept_items(ds: Dataset, max_per_class: int, rng: np.random.Generator) -> np.ndarray:
    group = _split_groups(ds)
    groups = np.unique(group)
    keep: list[np.ndarray] = []
    for cls in np.unique(ds.labels):
        members = [np.flatnonzero((ds.labels == cls) & (group == g)) for g in groups]
        quotas = split_quotas([m.size for m in members], max_per_class)
        for m, quota in zip(members, quotas, strict=True):
            keep.append(m if quota == m.size else rng.choice(m, size=quota, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def subsample_per_class(ds: Dataset, max_per_class: int, seed: int = 0) -> Dataset:
    """Keep at most `max_per_class` items of each class, chosen with `seed`, stratified per split.

    The result's fingerprint covers the parent's fingerprint, the cap, the seed and the selection
    rule's version, so cached features of the full set and of a subsample never mix. Raises
    InvalidArgument when `max_per_class` is not a positive integer.
    """
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class <= 0:
        raise InvalidArgument(
            f"dataset {ds.name!r}: max_per_class must be a positive integer, got {max_per_class!r}"
        )
    kept = _kept_items(ds, max_per_class, np.random.default_rng(seed))
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
        fingerprint=fingerprint_arrays(
            ds.fingerprint, f"max_per_class={max_per_class}", f"seed={seed}", SUBSET_VERSION
        ),
        sources=[sources[int(k)] for k in kept] if sources else (),
        meta={**ds.meta, "max_per_class": max_per_class, "parent_size": len(ds)},
    )
