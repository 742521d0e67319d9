"""Detection datasets: COCO and VOC loaders on the bundled files, tree-crown tiling, bad annotations."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bobench.config import Settings
from bobench.data import load_dataset
from bobench.data.detection import DetectionDataset
from bobench.data.detection_bundled import (
    LABELME_DIR,
    TREE_SITES,
    Tile,
    clip_to_tile,
    deepforest_wheel,
    grid_edges,
)
from bobench.errors import InvalidArgument, Unavailable


@pytest.fixture(scope="module")
def wheel() -> Path:
    try:
        return deepforest_wheel(Path(Settings().cache_dir))
    except Unavailable as exc:
        pytest.skip(f"deepforest wheel not available offline: {exc}")


@pytest.fixture(scope="module")
def trees(wheel) -> DetectionDataset:
    return load_dataset("tree_crowns")


def needs_labelme():
    if not Path(LABELME_DIR, "annotations.json").exists():
        pytest.skip("Debian labelme-examples is not installed")


def test_tree_crowns_tiles_every_annotated_image_with_boxes_inside_their_tiles(trees):
    assert isinstance(trees, DetectionDataset) and trees.classes == ["tree"]
    assert len(trees) == 47 and set(trees.sites) == set(TREE_SITES)
    for i in range(len(trees)):
        h, w = trees.image_size(i)
        assert 340 <= h <= 420 and 340 <= w <= 420
        b = trees.targets[i].boxes
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 2] <= w) and np.all(b[:, 1] >= 0) and np.all(b[:, 3] <= h)
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    assert trees.load(5).shape == (*trees.image_size(5), 3)
    sites = np.array(trees.sites)
    # OSBS_029 and SOAP_061 are single 400 px tiles: every one of their boxes survives
    assert int(trees.labels[sites == "OSBS"].sum()) == 61 and int(trees.labels[sites == "SOAP"].sum()) == 37
    assert 800 < int(trees.labels[sites == "YELL"].sum()) <= 574 + 279  # slivers at tile borders dropped


def test_tree_crowns_splits_by_tile_are_disjoint_seeded_and_fingerprinted(trees):
    parts = [set(trees.split(s).tolist()) for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(trees) and set.union(*parts) == set(range(len(trees)))
    other = load_dataset("tree_crowns", seed=1)
    assert other.fingerprint != trees.fingerprint
    assert load_dataset("tree_crowns").fingerprint == trees.fingerprint
    yell = load_dataset({"name": "tree_crowns", "sites": ["YELL"]})
    assert set(yell.sites) == {"YELL"} and len(yell) == 45


def test_clip_to_tile_keeps_clipped_boxes_and_drops_slivers():
    tile = Tile("x", "YELL", y0=100, x0=100, y1=200, x1=200)
    boxes = np.array([[90, 120, 130, 140], [190, 120, 260, 140], [120, 120, 140, 140]], dtype=np.float64)
    out = clip_to_tile(boxes, tile, 0.5)
    # the first is 75 % inside (kept, clipped), the second 14 % (dropped), the third fully inside
    np.testing.assert_allclose(out, [[0, 20, 30, 40], [20, 20, 40, 40]])
    assert grid_edges(1035, 400) == [0, 345, 690, 1035] and grid_edges(300, 400) == [0, 300]


def test_tree_crowns_refuses_bad_options(wheel):
    with pytest.raises(InvalidArgument, match="sites"):
        load_dataset({"name": "tree_crowns", "sites": ["MARS"]})
    with pytest.raises(InvalidArgument, match="tile_size"):
        load_dataset({"name": "tree_crowns", "tile_size": 10})


def test_voc_loader_reads_the_bundled_xml_files(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        for stem in ("OSBS_029", "SOAP_061"):
            (tmp_path / f"{stem}.xml").write_bytes(zf.read(f"deepforest/data/{stem}.xml"))
            (tmp_path / f"{stem}.png").write_bytes(zf.read(f"deepforest/data/{stem}.png"))
        # OSBS_029.xml names the GeoTIFF the PNG was made from
        (tmp_path / "OSBS_029.tif").write_bytes(zf.read("deepforest/data/OSBS_029.tif"))
    ds = load_dataset({"type": "voc", "images": str(tmp_path), "annotations": str(tmp_path)})
    assert ds.classes == ["Alive", "Dead", "Tree"] and len(ds) == 2
    assert [len(t) for t in ds.targets] == [61, 37] and ds.load(0).shape == (400, 400, 3)
    soap = ds.targets[1]
    np.testing.assert_allclose(soap.boxes[0], [149, 105, 173, 129])
    assert ds.classes[soap.labels[0]] == "Dead"
    with pytest.raises(InvalidArgument, match=r"SOAP_061.xml: object 1: unknown category"):
        load_dataset(
            {"type": "voc", "images": str(tmp_path), "annotations": str(tmp_path), "classes": ["Tree"]}
        )


def test_coco_loader_reads_labelme_masks():
    needs_labelme()
    ds = load_dataset("labelme_coco")
    assert len(ds) == 3 and ds.has_masks and "_background_" not in ds.classes
    assert sum(len(t) for t in ds.targets) == 12
    first = ds.targets[0]
    masks = first.masks()
    assert masks.shape == (3, 338, 500) and masks.dtype == np.uint8
    for mask, box in zip(masks, first.boxes, strict=True):
        ys, xs = np.nonzero(mask)
        assert ys.size > 50  # a real polygon, not an empty mask
        assert (
            xs.min() >= box[0] - 1
            and xs.max() <= box[2] + 1
            and ys.min() >= box[1] - 1
            and ys.max() <= box[3] + 1
        )
    assert ds.classes[first.labels[0]] == "person"


def _coco_copy(tmp_path: Path, edit) -> Path:
    needs_labelme()
    shutil.copytree(Path(LABELME_DIR, "JPEGImages"), tmp_path / "JPEGImages")
    doc = json.loads(Path(LABELME_DIR, "annotations.json").read_text())
    edit(doc)
    out = tmp_path / "ann.json"
    out.write_text(json.dumps(doc))
    return out


def _ref(tmp_path: Path, ann: Path) -> dict:
    return {"type": "coco", "images": str(tmp_path), "annotations": str(ann)}


def test_coco_box_outside_the_image_names_file_and_annotation(tmp_path):
    def edit(doc):
        doc["annotations"][4]["bbox"] = [400.0, 96.0, 300.0, 188.0]  # image 1 is 500 px wide

    ann = _coco_copy(tmp_path, edit)
    with pytest.raises(InvalidArgument) as err:
        load_dataset(_ref(tmp_path, ann))
    assert str(ann) in str(err.value) and "annotation 4" in str(err.value) and "outside" in str(err.value)
    assert "400.0" not in str(err.value)  # the file's contents are not quoted


def test_coco_unknown_category_names_file_and_annotation(tmp_path):
    def edit(doc):
        doc["annotations"][7]["category_id"] = 99

    ann = _coco_copy(tmp_path, edit)
    with pytest.raises(InvalidArgument, match=r"ann.json: annotation 7: unknown category"):
        load_dataset(_ref(tmp_path, ann))


def test_empty_or_malformed_annotation_files_are_named(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(InvalidArgument, match=r"empty.json is empty"):
        load_dataset(_ref(tmp_path, empty))
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [\n{"secret": 1')
    with pytest.raises(InvalidArgument, match=r"broken.json is not valid JSON \(line 2\)") as err:
        load_dataset(_ref(tmp_path, broken))
    assert "secret" not in str(err.value)
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "a.xml").write_text("")
    with pytest.raises(InvalidArgument, match=r"a.xml: annotation file is empty"):
        load_dataset({"type": "voc", "images": str(tmp_path), "annotations": str(tmp_path / "voc")})


def test_voc_box_outside_the_image_names_the_object(tmp_path):
    xml = (
        "<annotation><filename>a.png</filename><size><width>50</width><height>40</height></size>"
        "<object><name>Tree</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>Tree</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>90</xmax><ymax>20</ymax></bndbox>"
        "</object></annotation>"
    )
    (tmp_path / "a.xml").write_text(xml)
    with pytest.raises(InvalidArgument, match=r"a.xml: object 2: box outside the 50x40 image"):
        load_dataset({"type": "voc", "images": str(tmp_path), "annotations": str(tmp_path)})
