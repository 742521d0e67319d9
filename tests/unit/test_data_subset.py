"""max_per_class subsampling: stratified, seeded, split-preserving, fingerprinted."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.data import load_dataset
from bobench.errors import InvalidArgument


def test_max_per_class_caps_each_class_and_keeps_splits():
    full = load_dataset("toy")
    sub = load_dataset({"name": "toy", "max_per_class": 5})
    assert np.bincount(sub.labels).tolist() == [5] * len(full.classes)
    assert sum(len(v) for v in sub.splits.values()) == len(sub)
    for name, idx in sub.splits.items():
        assert set(sub.labels[idx]).issubset(set(full.labels[full.splits[name]]))
    # items are the parent's own images
    parent_pixels = {full.load(i).tobytes() for i in range(len(full))}
    assert all(sub.load(i).tobytes() in parent_pixels for i in range(len(sub)))


def test_max_per_class_fingerprint_depends_on_cap_and_seed():
    a = load_dataset({"name": "toy", "max_per_class": 5})
    assert a.fingerprint == load_dataset({"name": "toy", "max_per_class": 5}).fingerprint
    assert a.fingerprint != load_dataset({"name": "toy", "max_per_class": 6}).fingerprint
    assert a.fingerprint != load_dataset({"name": "toy", "max_per_class": 5}, seed=1).fingerprint
    assert a.fingerprint != load_dataset("toy").fingerprint


@pytest.mark.parametrize("bad", [0, -3, "ten", True])
def test_max_per_class_rejects_bad_values(bad):
    with pytest.raises(InvalidArgument, match="max_per_class"):
        load_dataset({"name": "toy", "max_per_class": bad})


def test_split_seed_in_a_ref_redraws_the_splits_and_changes_the_fingerprint():
    a, b = load_dataset("toy"), load_dataset({"name": "toy", "split_seed": 1})
    assert a.fingerprint != b.fingerprint
    assert any(not np.array_equal(a.splits[s], b.splits[s]) for s in a.splits)
    assert load_dataset({"name": "toy", "split_seed": 1}).fingerprint == b.fingerprint
    with pytest.raises(InvalidArgument, match="seed"):
        load_dataset({"name": "toy", "split_seed": -1})


def _synthetic(per_class: int, n_classes: int, shares: dict[str, float], seed: int = 0):
    """A dataset whose every class is split train/val/test in exactly `shares` (like a stratified split)."""
    from bobench.data.base import Dataset, fingerprint_arrays

    labels = np.repeat(np.arange(n_classes), per_class)
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.size)
    labels = labels[order]
    splits: dict[str, list[int]] = {name: [] for name in shares}
    for cls in range(n_classes):
        members = np.flatnonzero(labels == cls)
        start = 0
        for name, share in shares.items():
            count = int(round(share * per_class))
            splits[name].extend(members[start : start + count].tolist())
            start += count
    return Dataset(
        name="synthetic",
        classes=[f"c{i}" for i in range(n_classes)],
        labels=labels,
        splits={k: np.sort(np.asarray(v, np.int64)) for k, v in splits.items()},
        load=lambda i: np.zeros((4, 4, 3), np.uint8),
        fingerprint=fingerprint_arrays("synthetic", f"{per_class}x{n_classes}"),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_per_class_keeps_each_splits_share_of_every_class(seed):
    from bobench.data.subset import subsample_per_class

    shares = {"train": 0.6, "val": 0.2, "test": 0.2}
    full = _synthetic(300, 10, shares)
    sub = subsample_per_class(full, 60, seed)
    for name, share in shares.items():
        counts = np.bincount(sub.labels[sub.splits[name]], minlength=10)
        assert counts.tolist() == [round(60 * share)] * 10, name


@pytest.mark.parametrize("cap", [3, 5, 10])
def test_small_max_per_class_keeps_every_class_in_every_split(cap):
    from bobench.data.subset import subsample_per_class

    full = _synthetic(100, 12, {"train": 0.8, "val": 0.1, "test": 0.1})
    sub = subsample_per_class(full, cap, seed=0)
    assert np.bincount(sub.labels, minlength=12).tolist() == [cap] * 12
    for name in ("train", "val", "test"):
        assert set(sub.labels[sub.splits[name]].tolist()) == set(range(12)), name
