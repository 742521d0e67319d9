"""Feature cache: hits, misses, key sensitivity, atomic and corrupt entries."""

from __future__ import annotations

import numpy as np

from bobench.embed.cache import FeatureCache, FeatureKey


def test_put_get_roundtrip_and_counts(tmp_path):
    cache = FeatureCache(tmp_path)
    key = FeatureKey("abc", "fp1", "train")
    assert cache.get(key) is None and cache.misses == 1
    x, y = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32), np.arange(5)
    cache.put(key, x, y)
    got = cache.get(key)
    assert got is not None and cache.hits == 1
    np.testing.assert_array_equal(got[0], x)
    np.testing.assert_array_equal(got[1], y)
    assert not list(tmp_path.rglob("*.tmp.npz"))


def test_every_key_field_changes_the_entry(tmp_path):
    base = FeatureKey("abc", "fp1", "train")
    variants = [
        FeatureKey("abd", "fp1", "train"),
        FeatureKey("abc", "fp2", "train"),
        FeatureKey("abc", "fp1", "test"),
        FeatureKey("abc", "fp1", "train", "corrupt:fog:1"),
        FeatureKey("abc", "fp1", "train", precision="fp16"),
    ]
    assert len({k.hexdigest() for k in [base, *variants]}) == 6


def test_corrupt_entry_is_a_miss_not_a_crash(tmp_path):
    cache = FeatureCache(tmp_path)
    key = FeatureKey("abc", "fp1", "train")
    path = cache.put(key, np.zeros((2, 2), np.float32), np.zeros(2))
    path.write_bytes(b"not an npz")
    assert cache.get(key) is None
