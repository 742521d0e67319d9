"""Reference fingerprints (plan-time dataset identity): change with data, labels, split and seed, read
no image, and fail planning the way loading did (missing folder -> failed runs, outside the data
roots -> the request refused)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bobench.data.files as files_module
import bobench.data.fingerprint as fp_module
from bobench.battle.plan import plan_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.data import DATASETS, configure
from bobench.data.context import reset
from bobench.data.reference import reference_fingerprint
from bobench.errors import InvalidArgument, PermissionDenied


@pytest.fixture(autouse=True)
def _unrestricted_after():
    yield
    reset()


@pytest.fixture
def no_image_reads(monkeypatch):
    """Fail the test if anything decodes an image or hashes a file's bytes."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("planning read an image")

    monkeypatch.setattr(fp_module, "file_digest", refuse)
    monkeypatch.setattr(files_module, "decode_image_file", refuse)


def make_folder(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def folder_ref(root: Path) -> dict:
    return {"type": "imagefolder", "path": str(root)}


def test_a_folder_reference_changes_with_a_file_a_label_or_the_seed(tmp_path, no_image_reads):
    root = make_folder(tmp_path / "photos")
    first = reference_fingerprint(folder_ref(root))
    assert reference_fingerprint(folder_ref(root)) == first  # stable
    assert reference_fingerprint(folder_ref(root), seed=1) != first  # split seed

    image = root / "a" / "0.png"
    st = image.stat()
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")  # same size, new bytes
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    edited = reference_fingerprint(folder_ref(root))
    assert edited != first

    (root / "a" / "1.png").rename(root / "b" / "9.png")  # relabelled
    assert reference_fingerprint(folder_ref(root)) not in (first, edited)


def test_a_named_reference_reads_no_data_and_covers_options_and_seed(monkeypatch):
    entry = DATASETS.get("toy")

    def refuse(*, seed: int = 0, per_class: int = 20, size_px: int = 32):
        raise AssertionError("planning built the named dataset")

    monkeypatch.setitem(DATASETS._items, "toy", dataclasses.replace(entry, factory=refuse))
    base = reference_fingerprint("toy")
    assert reference_fingerprint({"name": "toy"}) == base
    assert reference_fingerprint({"name": "toy", "per_class": 5}) != base
    assert reference_fingerprint("toy", seed=3) != base
    assert reference_fingerprint({"name": "toy", "max_per_class": 2}) != base
    with pytest.raises(InvalidArgument, match="unknown option"):
        reference_fingerprint({"name": "toy", "per_klass": 5})


def test_planning_a_missing_folder_fails_its_runs_and_outside_the_roots_refuses(tmp_path, no_image_reads):
    spec = parse_spec(
        {
            "name": "refs",
            "backbones": ["toy"],
            "datasets": [{"name": "gone", "ref": folder_ref(tmp_path / "gone")}, "toy"],
            "protocols": ["knn"],
            "seeds": [0],
        }
    )
    plans = {p.dataset: p for p in plan_battle(spec)}
    assert "does not exist" in plans["gone"].error and plans["gone"].dataset_fingerprint is None
    assert plans["toy"].error is None and plans["toy"].dataset_fingerprint

    outside = make_folder(tmp_path / "outside")
    (tmp_path / "cache").mkdir()
    configure(Settings(cache_dir=str(tmp_path / "cache")), service=True)
    spec = parse_spec(
        {"name": "x", "backbones": ["toy"], "datasets": [{"name": "o", "ref": folder_ref(outside)}],
         "protocols": ["knn"], "seeds": [0]}
    )  # fmt: skip
    with pytest.raises(PermissionDenied):
        plan_battle(spec)
