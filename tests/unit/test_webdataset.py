"""The WebDataset shard reader on local shards: the convention, splits, fingerprints, bad shards."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bobench.data import load_dataset, validate_dataset
from bobench.data.shards import expand_braces, shard_split
from bobench.data.upload import pack_shards
from bobench.data.webdataset import sample_key, write_shard
from bobench.errors import InvalidArgument


def png_bytes(seed: int, size: int = 6) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, splits: tuple[str, ...] = (), per_class: int = 3) -> Path:
    """An ImageFolder tree of tiny random PNGs: cat/dog/owl, optionally under split folders."""
    seed = 0
    for split in splits or ("",):
        for cls in ("cat", "dog", "owl"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"img.{i}.png").write_bytes(png_bytes(seed))
                seed += 1
    return root


def tar_members(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_same_items(a, b) -> None:
    assert a.classes == b.classes
    assert np.array_equal(a.labels, b.labels)
    assert {k: v.tolist() for k, v in a.splits.items()} == {k: v.tolist() for k, v in b.splits.items()}
    for i in range(len(a)):
        assert np.array_equal(a.load(i), b.load(i))


@pytest.mark.parametrize("splits", [(), ("train", "val", "test")])
def test_packed_shards_load_like_the_imagefolder_they_came_from(tmp_path, splits):
    tree = make_tree(tmp_path / "tree", splits)
    pack_shards(tree, tmp_path / "shards", shards=2)
    local = load_dataset({"type": "imagefolder", "path": str(tree)}, seed=3)
    shards = load_dataset({"type": "webdataset", "path": str(tmp_path / "shards")}, seed=3)
    assert len(shards) == len(local) == 9 * max(1, len(splits))
    assert_same_items(shards, local)
    validate_dataset(shards)


def test_building_and_fingerprinting_reads_no_shard(tmp_path, monkeypatch):
    pack_shards(make_tree(tmp_path / "tree"), tmp_path / "shards", shards=3)
    import bobench.data.webdataset as wds

    reads = []
    real = wds._read_shard
    monkeypatch.setattr(wds, "_read_shard", lambda path, where: reads.append(path) or real(path, where))
    ds = load_dataset({"type": "webdataset", "path": str(tmp_path / "shards")})
    assert len(ds.fingerprint) == 16 and reads == []
    assert len(ds) == 9 and len(reads) == 3  # the index is built on first use, reading each shard once
    ds.load(0)
    assert len(reads) == 3


def test_fingerprint_is_stable_and_changes_with_a_shard_or_the_seed(tmp_path):
    pack_shards(make_tree(tmp_path / "tree"), tmp_path / "shards", shards=2)
    ref = {"type": "webdataset", "path": str(tmp_path / "shards")}
    first = load_dataset(ref).fingerprint
    assert load_dataset(ref).fingerprint == first
    assert load_dataset(ref, seed=1).fingerprint != first
    shard = tmp_path / "shards" / "shard-000001.tar"
    write_shard(shard, [("cat/new", "png", png_bytes(99), 0)])
    assert load_dataset(ref).fingerprint != first


def test_brace_pattern_and_split_by_shard_name(tmp_path):
    root = tmp_path / "wds"
    root.mkdir()
    for split, n in (("train", 2), ("test", 1)):
        for s in range(n):
            samples = [(f"{split}{s}_{i}", "png", png_bytes(10 * s + i), i % 2) for i in range(4)]
            write_shard(root / f"{split}-{s:03d}.tar", samples)
    ds = load_dataset(str(root / "train-{000..001}.tar"))
    assert len(ds) == 8 and set(ds.splits) == {"train"} and ds.classes == ["0", "1"]
    both = load_dataset({"type": "webdataset", "path": str(root)})
    assert {k: len(v) for k, v in both.splits.items()} == {"train": 8, "test": 4}
    assert both.describe(0).endswith("test-000.tar: member test0_0.png")


def test_txt_and_json_labels_and_classes_file(tmp_path):
    tar_members(
        tmp_path / "test-a.tar",
        {
            "x.jpg": _jpeg(),
            "x.txt": b"zebra\n",
            "y.png": png_bytes(1),
            "y.json": json.dumps({"label": "ant"}).encode(),
        },
    )
    ds = load_dataset({"type": "webdataset", "path": str(tmp_path / "test-a.tar")})
    assert ds.classes == ["ant", "zebra"] and ds.labels.tolist() == [1, 0]
    (tmp_path / "classes.txt").write_text("zebra\nant\n")
    ds = load_dataset({"type": "webdataset", "path": str(tmp_path / "test-a.tar")})
    assert ds.classes == ["zebra", "ant"] and ds.labels.tolist() == [0, 1]


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 5, 3), 128, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_pickled_dataset_loads_in_another_process_without_the_source(tmp_path):
    pack_shards(make_tree(tmp_path / "tree"), tmp_path / "shards")
    ds = load_dataset({"type": "webdataset", "path": str(tmp_path / "shards")})
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.fingerprint == ds.fingerprint
    assert_same_items(copy, ds)


def test_helpers_follow_the_webdataset_rules():
    assert sample_key("cat/0001.seg.png") == ("cat/0001", "seg.png")
    assert expand_braces("s-{08..10}.tar") == ["s-08.tar", "s-09.tar", "s-10.tar"]
    assert expand_braces("{a,b}/x-{0..1}.tar") == ["a/x-0.tar", "a/x-1.tar", "b/x-0.tar", "b/x-1.tar"]
    assert shard_split("val/shard-0.tar") == "val" and shard_split("test_0001.tar") == "test"
    assert shard_split("shard-0.tar") is None and shard_split("training-0.tar") is None
    with pytest.raises(InvalidArgument, match="bad range"):
        expand_braces("s-{9..1}.tar")


def test_corrupt_image_names_the_shard_and_the_member(tmp_path):
    tar_members(
        tmp_path / "test-s.tar", {"a.png": png_bytes(0), "a.cls": b"0", "b.png": b"not a png", "b.cls": b"1"}
    )
    ds = load_dataset({"type": "webdataset", "path": str(tmp_path / "test-s.tar")})
    with pytest.raises(InvalidArgument, match=r"s\.tar: member b\.png"):
        ds.load(1)
    with pytest.raises(InvalidArgument, match=r"1 of 2 image\(s\) are unreadable.*s\.tar: member b\.png"):
        validate_dataset(ds)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"a.png": b"x"}, r"sample 'a' \(member a.png\) has no .cls/.txt/.json label"),
        ({"a.cls": b"0"}, "sample 'a' has no image member"),
        ({"a.png": b"x", "a.cls": b"one"}, "sample 'a': bad .cls label"),
        ({"a.png": b"x", "a.json": b'{"other": 1}'}, "'label'"),
        ({"a.png": b"x", "a.cls": b"0", "a.jpg": b"y"}, "sample 'a' has two images"),
        ({"a.png": b"x", "a.cls": b"0", "b.png": b"y", "b.txt": b"dog"}, "mix class names and indices"),
    ],
)
def test_bad_samples_name_the_shard_and_sample(tmp_path, members, message):
    tar_members(tmp_path / "bad.tar", members)
    ds = load_dataset({"type": "webdataset", "path": str(tmp_path / "bad.tar")})
    with pytest.raises(InvalidArgument, match=message) as info:
        len(ds)
    assert "bad.tar" in str(info.value)


def test_bad_shard_sets_are_refused(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InvalidArgument, match=r"shard .*junk\.tar: not a readable tar"):
        len(load_dataset({"type": "webdataset", "path": str(tmp_path / "junk.tar")}))
    with pytest.raises(InvalidArgument, match=r"shard\(s\) .*x-2\.tar.* do not exist"):
        load_dataset(str(tmp_path / "x-{1..2}.tar"))
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_dataset({"type": "webdataset", "path": str(tmp_path / "nowhere")})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgument, match="no \\*.tar shards"):
        load_dataset({"type": "webdataset", "path": str(empty)})
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_shard(mixed / "train-0.tar", [("a", "png", png_bytes(0), 0)])
    write_shard(mixed / "other-0.tar", [("b", "png", png_bytes(1), 0)])
    with pytest.raises(InvalidArgument, match="carry no split while others do"):
        len(load_dataset({"type": "webdataset", "path": str(mixed)}))
    with pytest.raises(InvalidArgument, match="unknown key"):
        load_dataset({"type": "webdataset", "path": str(mixed), "shards": 3})


def test_shards_are_reproducible_bytes(tmp_path):
    tree = make_tree(tmp_path / "tree")
    first = [p.read_bytes() for p in pack_shards(tree, tmp_path / "a", shards=2)]
    second = [p.read_bytes() for p in pack_shards(tree, tmp_path / "b", shards=2)]
    assert first == second
    with pytest.raises(InvalidArgument, match="shards must be a positive integer"):
        pack_shards(tree, tmp_path / "c", shards=0)


def test_path_strings_pick_the_source_by_their_shape():
    from bobench.data import normalize_ref

    assert normalize_ref("s3://b/photos/") == {"type": "imagefolder", "path": "s3://b/photos/"}
    assert normalize_ref("s3://b/sets/m.csv") == {"type": "manifest", "path": "s3://b/sets/m.csv"}
    assert normalize_ref("data/shard-{0..3}.tar") == {"type": "webdataset", "path": "data/shard-{0..3}.tar"}
    assert normalize_ref("one.tar") == {"type": "webdataset", "path": "one.tar"}


def test_s3_refs_need_the_data_context():
    from bobench.data.context import reset
    from bobench.errors import FailedPrecondition

    reset()
    with pytest.raises(FailedPrecondition, match=r"webdataset s3://b/p: .*bobench.data.configure"):
        load_dataset({"type": "webdataset", "path": "s3://b/p"})
