"""Stratified splits: deterministic, disjoint, covering, proportional, every class in every split."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.data import DEFAULT_FRACTIONS, stratified_split
from bobench.data.splits import check_fractions
from bobench.errors import InvalidArgument


def _random_labels(rng: np.random.Generator) -> np.ndarray:
    n_classes = int(rng.integers(2, 8))
    sizes = rng.integers(3, 40, size=n_classes)
    labels = np.repeat(np.arange(n_classes), sizes)
    return rng.permutation(labels)


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    labels = np.repeat(np.arange(4), 25)
    a = stratified_split(labels, seed=3)
    b = stratified_split(labels, seed=3)
    c = stratified_split(labels, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("trial", range(12))
def test_split_parts_are_disjoint_sorted_cover_everything_and_are_stratified(trial):
    rng = np.random.default_rng(trial)
    labels = _random_labels(rng)
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25} if trial % 2 else DEFAULT_FRACTIONS
    parts = stratified_split(labels, fractions, seed=trial)
    assert list(parts) == list(fractions)
    merged = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(merged), np.arange(labels.size))  # disjoint and covering
    for name, idx in parts.items():
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
        for cls in np.unique(labels):
            n_cls = int((labels == cls).sum())
            got = int((labels[idx] == cls).sum())
            assert got >= 1, f"class {cls} missing from {name}"
            # brute-force bound: within one item of the exact share (plus the nudge that fills empty splits)
            assert abs(got - fractions[name] * n_cls) <= 1.0 + (1 if n_cls < 2 * len(fractions) else 0)


def test_split_with_two_parts_and_uneven_fractions():
    labels = np.repeat(np.arange(3), [10, 11, 50])
    parts = stratified_split(labels, {"train": 0.9, "test": 0.1}, seed=0)
    assert [int((labels[parts["test"]] == c).sum()) for c in range(3)] == [1, 1, 5]


def test_class_smaller_than_the_number_of_splits_is_named():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(InvalidArgument, match=r"class 'dog' has 2 item\(s\)"):
        stratified_split(labels, seed=0, class_names=["cat", "dog", "eel"])


def test_smallest_possible_class_lands_once_in_each_split():
    labels = np.array([0, 0, 0] + [1] * 30)
    parts = stratified_split(labels, seed=1)
    for idx in parts.values():
        assert int((labels[idx] == 0).sum()) == 1


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.5, "val": 0.2}, "sum to 1"),
        ({"train": 0.8, "holdout": 0.2}, "unknown split 'holdout'"),
        ({"train": 1.2, "test": -0.2}, r"splits.train: fraction must be in \(0, 1\]"),
        ({"train": "most", "test": 0.2}, "fraction must be a number"),
        ({}, "non-empty mapping"),
    ],
)
def test_bad_fractions_are_rejected_with_the_offending_entry(fractions, message):
    with pytest.raises(InvalidArgument, match=message):
        check_fractions(fractions)


def test_labels_must_be_one_dimensional():
    with pytest.raises(InvalidArgument, match="one-dimensional"):
        stratified_split(np.zeros((3, 3), dtype=int))
