"""Fingerprints change with any pixel, label, split or seed change, are stable otherwise, are lazy,
and are cached per ref in-process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bobench.data.fingerprint as fp_module
from bobench.data import clear_fingerprint_cache, load_dataset
from bobench.data.arrays import array_dataset
from bobench.data.fingerprint import file_digest


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_fingerprint_cache()
    yield
    clear_fingerprint_cache()


def make_folder(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def bump_mtime(path: Path) -> None:
    """Make the edit visible to the (size, mtime) check even on coarse-clock filesystems."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_file_fingerprint_is_stable_across_loads_and_cache_clears(tmp_path):
    root = make_folder(tmp_path / "d")
    first = load_dataset(str(root)).fingerprint
    assert load_dataset(str(root)).fingerprint == first
    clear_fingerprint_cache()
    assert load_dataset(str(root)).fingerprint == first
    assert len(first) == 16 and int(first, 16) >= 0


def test_file_fingerprint_changes_when_one_pixel_changes(tmp_path):
    root = make_folder(tmp_path / "d")
    before = load_dataset(str(root)).fingerprint
    target = root / "b" / "2.png"
    pixels = np.asarray(Image.open(target)).copy()
    pixels[3, 4, 1] ^= 1
    Image.fromarray(pixels).save(target)
    bump_mtime(target)
    assert load_dataset(str(root)).fingerprint != before  # the in-process cache noticed the edit


def test_file_fingerprint_changes_with_seed_fractions_and_labels(tmp_path):
    root = make_folder(tmp_path / "d")
    base = load_dataset(str(root), seed=0).fingerprint
    assert load_dataset(str(root), seed=1).fingerprint != base
    fractions = {"type": "imagefolder", "path": str(root), "splits": {"train": 0.75, "test": 0.25}}
    assert load_dataset(fractions).fingerprint != base
    shutil.move(root / "a" / "0.png", root / "b" / "9.png")  # same bytes, different label
    assert load_dataset(str(root), seed=0).fingerprint != base


def test_manifest_fingerprint_tracks_a_label_edit_in_the_csv(tmp_path):
    make_folder(tmp_path / "d")
    rows = [f"d/{c}/{i}.png,{c}" for c in "abc" for i in range(4)]
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label\n" + "\n".join(rows) + "\n")
    before = load_dataset(str(csv_path)).fingerprint
    rows[0] = "d/a/0.png,b"
    csv_path.write_text("path,label\n" + "\n".join(rows) + "\n")
    assert load_dataset(str(csv_path)).fingerprint != before


def test_file_fingerprint_depends_on_content_not_location(tmp_path):
    root = make_folder(tmp_path / "d")
    before = load_dataset(str(root)).fingerprint
    moved = tmp_path / "elsewhere" / "d"
    shutil.copytree(root, moved)
    assert load_dataset(str(moved)).fingerprint == before


def test_fingerprint_is_lazy_and_file_bytes_are_hashed_once_per_ref(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d")
    calls: list[str] = []
    monkeypatch.setattr(fp_module, "file_digest", lambda p: calls.append(p) or file_digest(p))
    ds = load_dataset(str(root))
    assert calls == []  # loading hashes nothing
    first = ds.fingerprint
    assert len(calls) == 12
    assert load_dataset(str(root)).fingerprint == first and ds.fingerprint == first
    assert len(calls) == 12  # second load: served from the per-ref cache
    assert "items=12" in repr(ds)


def _tiny(images, labels, seed=0, key="t"):
    labels = np.asarray(labels)
    splits = {"train": np.flatnonzero(labels >= 0)}
    return array_dataset(
        name="t",
        images=images,
        labels=labels,
        classes=["x", "y"],
        splits=splits,
        seed=seed,
        cache_key=key,
        meta={},
    )


def test_array_fingerprint_changes_with_one_pixel_label_or_seed():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(4)]
    base = _tiny(images, [0, 1, 0, 1], key="k1").fingerprint
    assert _tiny([im.copy() for im in images], [0, 1, 0, 1], key="k2").fingerprint == base
    edited = [im.copy() for im in images]
    edited[2][5, 5, 2] ^= 1
    assert _tiny(edited, [0, 1, 0, 1], key="k3").fingerprint != base
    assert _tiny(images, [0, 1, 1, 1], key="k4").fingerprint != base
    assert _tiny(images, [0, 1, 0, 1], seed=7, key="k5").fingerprint != base


def test_bundled_fingerprints_are_stable_and_seed_dependent():
    toy = load_dataset("toy").fingerprint
    assert load_dataset("toy").fingerprint == toy
    assert load_dataset("toy", seed=1).fingerprint != toy
    assert load_dataset({"name": "toy", "per_class": 5}).fingerprint != toy
    assert load_dataset("toy_retrieval").fingerprint != toy


def test_dataset_pickles_and_replaces_with_its_fingerprint(tmp_path):
    import dataclasses
    import pickle

    ds = load_dataset(str(make_folder(tmp_path / "d")))
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.fingerprint == ds.fingerprint and np.array_equal(clone.load(3), ds.load(3))
    renamed = dataclasses.replace(ds, name="other")
    assert renamed.name == "other" and renamed.fingerprint == ds.fingerprint
