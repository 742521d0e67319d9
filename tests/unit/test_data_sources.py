"""ImageFolder and CSV-manifest sources, lazy decoding, up-front validation and ref handling."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bobench.data import dataset_ref_key, load_dataset, validate_dataset
from bobench.errors import InvalidArgument, Unavailable

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}


def write_image(path: Path, colour=(10, 20, 30), size=(12, 9), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def make_folder(root: Path, per_class: int = 5, classes=("cat", "dog", "eel")) -> Path:
    for name in classes:
        for i in range(per_class):
            write_image(root / name / f"{i:02d}.png", COLOURS[name])
    return root


def write_manifest(path: Path, rows: list[list[str]], header=("path", "label")) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- ImageFolder


def test_imagefolder_class_folders_get_sorted_classes_and_default_stratified_splits(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    ds = load_dataset({"type": "imagefolder", "path": str(root)})
    assert ds.name == "pets" and ds.classes == ["cat", "dog", "eel"] and len(ds) == 15
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 9, "val": 3, "test": 3}
    for idx in ds.splits.values():
        assert sorted(set(ds.labels[idx].tolist())) == [0, 1, 2]
    assert ds.meta["task"] == "classification" and ds.meta["layout"] == "class-folders"


def test_imagefolder_loads_lazily_decoded_rgb_with_the_right_pixels(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=3)
    write_image(root / "dog" / "gray.png", (90, 90, 90), mode="L")
    write_image(root / "eel" / "alpha.png", (5, 6, 7), mode="RGBA")
    ds = load_dataset(str(root))  # a directory path string is an ImageFolder
    for i in range(len(ds)):
        image = ds.load(i)
        assert image.dtype == np.uint8 and image.shape == (9, 12, 3)
        src = ds.describe(i)
        if src.endswith("gray.png"):
            assert (image == 90).all()
        elif src.endswith("alpha.png"):
            assert tuple(image[0, 0]) == (5, 6, 7)
        else:
            assert tuple(image[0, 0]) == COLOURS[ds.classes[ds.labels[i]]]


def test_imagefolder_pre_split_layout_keeps_the_splits_on_disk(tmp_path):
    root = tmp_path / "ds"
    make_folder(root / "train", per_class=3)
    make_folder(root / "val", per_class=1, classes=("cat", "dog"))
    make_folder(root / "test", per_class=2)
    ds = load_dataset({"type": "imagefolder", "path": str(root)})
    assert ds.classes == ["cat", "dog", "eel"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"test": 6, "train": 9, "val": 2}
    assert all("/val/" in ds.describe(int(i)) for i in ds.splits["val"])
    assert ds.meta["layout"] == "pre-split"


def test_imagefolder_custom_fractions(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=10)
    ds = load_dataset({"type": "imagefolder", "path": str(root), "splits": {"train": 0.8, "test": 0.2}})
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 24, "test": 6}


@pytest.mark.parametrize(
    "build, ref_extra, message",
    [
        (lambda root: None, {}, "directory .*missing does not exist"),
        (lambda root: root.mkdir(), {}, "no class directories in .*missing"),
        (lambda root: (make_folder(root), (root / "fox").mkdir()), {}, "empty class 'fox'.*missing/fox"),
        (
            lambda root: (make_folder(root / "train"), make_folder(root / "test")),
            {"splits": {"train": 0.5, "test": 0.5}},
            "already split on disk",
        ),
        (lambda root: make_folder(root), {"split": {"train": 1.0}}, r"unknown key\(s\) \['split'\]"),
        (lambda root: make_folder(root, per_class=2), {}, "class 'cat' has 2 item"),
    ],
)
def test_imagefolder_bad_input_names_the_path(tmp_path, build, ref_extra, message):
    root = tmp_path / "missing"
    build(root)
    with pytest.raises(InvalidArgument, match=message):
        load_dataset({"type": "imagefolder", "path": str(root), **ref_extra})


# ---------------------------------------------------------------- manifest


def test_manifest_with_split_column_relative_paths_and_given_class_order(tmp_path):
    for i, name in enumerate(["a", "b", "c", "d"]):
        write_image(tmp_path / "img" / f"{name}.png", (i * 40, 0, 0))
    csv_path = write_manifest(
        tmp_path / "list.csv",
        [["img/a.png", "dog", "train"], ["img/b.png", "cat", "train"], ["img/c.png", "dog", "test"],
         [str(tmp_path / "img" / "d.png"), "cat", "query"]],
        header=("path", "label", "split"),
    )  # fmt: skip
    ds = load_dataset({"type": "manifest", "path": str(csv_path), "classes": ["dog", "cat", "bird"]})
    assert ds.name == "list" and ds.classes == ["dog", "cat", "bird"]
    assert ds.labels.tolist() == [0, 1, 0, 1]
    assert {k: v.tolist() for k, v in ds.splits.items()} == {"train": [0, 1], "test": [2], "query": [3]}
    assert tuple(ds.load(2)[0, 0]) == (80, 0, 0)


def test_manifest_without_split_column_is_split_by_class(tmp_path):
    rows = []
    for cls in ("x", "y"):
        for i in range(5):
            rows.append([str(write_image(tmp_path / cls / f"{i}.png").relative_to(tmp_path)), cls])
    ds = load_dataset(str(write_manifest(tmp_path / "m.csv", rows)))  # a .csv path string is a manifest
    assert ds.classes == ["x", "y"] and {k: len(v) for k, v in ds.splits.items()} == {
        "train": 6,
        "val": 2,
        "test": 2,
    }


@pytest.mark.parametrize(
    "header, rows, ref_extra, message",
    [
        (("path", "class"), [["a.png", "x"]], {}, r"row 1 \(header\): missing column 'label'"),
        (("path", "label"), [["a.png", "x"], ["nope.png", "x"]], {}, r"row 3: field 'path': the file it names does not exist"),
        (("path", "label"), [["a.png", "x"], ["a.png", "zebra"]], {"classes": ["x"]}, r"row 3: field 'label': not one of the ref's classes"),
        (("path", "label", "split"), [["a.png", "x", "train"], ["a.png", "x", "tset"]], {}, r"row 3: field 'split': not a known split"),
        (("path", "label", "split"), [["a.png", "x", "train"], ["a.png", "x", ""]], {}, r"row 3: field 'split' is empty"),
        (("path", "label"), [["a.png", ""]], {}, r"row 2: field 'label' is empty"),
        (("path", "label"), [], {}, "no data rows"),
        (("path", "label"), [["a.png", "x"]], {"classes": ["x", "x"]}, "more than once"),
    ],
)  # fmt: skip
def test_manifest_bad_input_names_row_and_field(tmp_path, header, rows, ref_extra, message):
    write_image(tmp_path / "a.png")
    csv_path = write_manifest(tmp_path / "bad.csv", rows, header=header)
    with pytest.raises(InvalidArgument, match=message) as info:
        load_dataset({"type": "manifest", "path": str(csv_path), **ref_extra})
    assert "bad.csv" in str(info.value)


def test_manifest_file_missing(tmp_path):
    with pytest.raises(InvalidArgument, match="manifest: file .*none.csv does not exist"):
        load_dataset({"type": "manifest", "path": str(tmp_path / "none.csv")})


# ---------------------------------------------------------------- decoding and validation


def test_corrupt_and_truncated_files_raise_naming_the_file(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=3)
    (root / "cat" / "00.png").write_bytes(b"this is not a png")
    big = write_image(root / "dog" / "00.png", size=(64, 64))
    big.write_bytes(big.read_bytes()[:-40])  # truncated
    ds = load_dataset(str(root))
    bad = {ds.describe(i): i for i in range(len(ds)) if ds.describe(i).endswith("00.png")}
    with pytest.raises(InvalidArgument, match="cannot decode image .*cat/00.png"):
        ds.load(bad[str(root / "cat" / "00.png")])
    with pytest.raises(InvalidArgument, match="dog/00.png"):
        ds.load(bad[str(root / "dog" / "00.png")])
    with pytest.raises(InvalidArgument, match=r"2 of 9 image\(s\) are unreadable: .*cat/00.png.*dog/00.png"):
        validate_dataset(ds)


def test_validate_reports_all_bad_files_naming_the_first_few_and_counting_the_rest(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=4)
    for cls in ("cat", "dog"):
        for i in range(4):
            (root / cls / f"{i:02d}.png").write_bytes(b"junk")
    ds = load_dataset(str(root))
    calls: list[tuple[int, int]] = []
    with pytest.raises(InvalidArgument) as info:
        validate_dataset(ds, progress=lambda done, total, msg: calls.append((done, total)))
    text = str(info.value)
    assert "8 of 12 image(s)" in text and "and 3 more" in text and text.count("cannot decode") == 5
    assert calls[-1] == (12, 12)


def test_validate_passes_on_good_data_and_can_limit_to_splits(tmp_path):
    ds = load_dataset(str(make_folder(tmp_path / "pets", per_class=3)))
    validate_dataset(ds)
    (Path(ds.describe(int(ds.splits["train"][0])))).write_bytes(b"junk")
    validate_dataset(ds, splits=["test"])
    with pytest.raises(InvalidArgument, match="1 of"):
        validate_dataset(ds, splits=["train"])


# ---------------------------------------------------------------- refs and lookup


def test_unknown_dataset_name_suggests_close_matches():
    with pytest.raises(InvalidArgument, match=r"unknown dataset 'mnsit'; did you mean 'mnist'"):
        load_dataset("mnsit")


def test_unknown_source_type_option_and_bad_refs():
    with pytest.raises(
        InvalidArgument, match="unknown dataset source 'imagefoldr'; did you mean 'imagefolder'"
    ):
        load_dataset({"type": "imagefoldr", "path": "x"})
    with pytest.raises(InvalidArgument, match=r"dataset 'toy': unknown option\(s\) \['per_klass'\]"):
        load_dataset({"name": "toy", "per_klass": 3})
    with pytest.raises(InvalidArgument, match="needs a 'name'"):
        load_dataset({"path": "x"})
    with pytest.raises(InvalidArgument, match="non-negative integer"):
        load_dataset("toy", seed=-1)
    with pytest.raises(InvalidArgument, match="must be a name or a mapping"):
        load_dataset(3)  # type: ignore[arg-type]


def test_dataset_ref_key_is_canonical():
    assert dataset_ref_key("toy") == dataset_ref_key({"name": "toy"}) == "toy"
    a = dataset_ref_key({"type": "imagefolder", "path": "/d", "splits": {"train": 0.5, "test": 0.5}})
    b = dataset_ref_key({"splits": {"test": 0.5, "train": 0.5}, "path": "/d", "type": "imagefolder"})
    assert a == b and a != dataset_ref_key({"type": "imagefolder", "path": "/e"})
    assert dataset_ref_key("data/x.csv") == dataset_ref_key({"type": "manifest", "path": "data/x.csv"})


def test_torchvision_source_offline_is_unavailable_with_a_clear_message(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(Unavailable, match=r"torchvision dataset CIFAR10 .* is unavailable.*network"):
        load_dataset({"type": "torchvision", "name": "CIFAR10", "root": str(tmp_path), "download": False})
    with pytest.raises(InvalidArgument, match="no dataset class 'CIFAR11'"):
        load_dataset({"type": "torchvision", "name": "CIFAR11", "root": str(tmp_path)})
