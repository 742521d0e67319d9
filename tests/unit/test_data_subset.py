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
