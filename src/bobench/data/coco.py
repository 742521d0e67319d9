"""COCO-format detection datasets: `{type: coco, images: DIR, annotations: FILE}`.

The annotation file is COCO's instances JSON (`images`, `annotations`, `categories`). Categories map
to contiguous class indices in order of their ids; a category named `_background_` (labelme's export
writes one) is not a class. Each annotation's `bbox` [x, y, w, h] becomes an xyxy box checked against
its image (`bobench.data.detection.check_boxes`); `iscrowd: 1` marks a crowd region; `segmentation`
(polygons or RLE) gives the instance mask, decoded on demand with pycocotools.

Ref keys: `images` (folder the `file_name`s are relative to), `annotations` (the JSON file), `name`,
`splits` (fractions of images, seeded; default 60/20/20 train/val/test) or `split` (every image in
that one split, e.g. "test" for an official val file).

Errors: InvalidArgument naming the file, and the annotation or image id, for an empty or malformed
file, an unknown category or image, a box outside its image; never quoting the file's contents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bobench.data.detection import (
    DetectionDataset,
    DetectionTarget,
    check_boxes,
    detection_dataset,
    detection_fingerprint,
    split_images,
)
from bobench.data.fingerprint import ContentDigest, files_digest
from bobench.data.images import decode_image_file
from bobench.data.registry import check_ref_keys, register_source
from bobench.data.roots import check_path
from bobench.errors import InvalidArgument

BACKGROUND_NAMES = frozenset({"_background_", "__background__", "background"})


def read_annotation_json(path: Path) -> dict[str, Any]:
    """The parsed COCO JSON; InvalidArgument naming the file when it is missing, empty or not a JSON object."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"coco: annotation file {path} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"coco: cannot read annotation file {path} ({exc.strerror})") from None
    if not raw.strip():
        raise InvalidArgument(f"coco: annotation file {path} is empty")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", "?")
        raise InvalidArgument(f"coco: annotation file {path} is not valid JSON (line {line})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InvalidArgument(f"coco: annotation file {path} has no 'images' list")
    for key in ("annotations", "categories"):
        if not isinstance(doc.get(key, []), list):
            raise InvalidArgument(f"coco: annotation file {path}: '{key}' is not a list")
    return doc


class MaskDecoder:
    """Decodes the segmentations of one image's annotations to uint8 [K, H, W] (picklable)."""

    def __init__(self, segmentations: list[Any], height: int, width: int, where: str) -> None:
        self.segmentations, self.height, self.width, self.where = segmentations, height, width, where

    def __call__(self) -> np.ndarray:
        from pycocotools import mask as mask_utils

        out = np.zeros((len(self.segmentations), self.height, self.width), dtype=np.uint8)
        for k, (ann_id, seg) in enumerate(self.segmentations):
            try:
                if isinstance(seg, list):  # polygons
                    rles = mask_utils.frPyObjects(seg, self.height, self.width)
                    rle = mask_utils.merge(rles)
                elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(seg, self.height, self.width)
                else:
                    rle = seg
                out[k] = mask_utils.decode(rle)
            except (TypeError, ValueError, AttributeError, IndexError):
                raise InvalidArgument(f"{self.where}: annotation {ann_id}: unreadable segmentation") from None
        return out


class SizedImageLoader:
    """Loads image i and checks it has the size its annotation file declares (picklable)."""

    def __init__(self, paths: list[str], sizes: list[tuple[int, int]], where: str) -> None:
        self.paths, self.sizes, self.where = paths, sizes, where

    def __call__(self, index: int) -> np.ndarray:
        image = decode_image_file(self.paths[index])
        if tuple(image.shape[:2]) != tuple(self.sizes[index]):
            h, w = self.sizes[index]
            raise InvalidArgument(
                f"{self.paths[index]}: image is {image.shape[1]}x{image.shape[0]} but {self.where} says {w}x{h}"
            )
        return image


def _categories(doc: dict, where: str) -> tuple[list[str], dict[int, int]]:
    cats = sorted(
        (c for c in doc.get("categories", []) if isinstance(c, dict) and "id" in c), key=lambda c: c["id"]
    )
    kept = [c for c in cats if str(c.get("name", "")) not in BACKGROUND_NAMES]
    if not kept:
        raise InvalidArgument(f"{where}: no categories")
    return [str(c.get("name", c["id"])) for c in kept], {int(c["id"]): i for i, c in enumerate(kept)}


def _image_rows(doc: dict, where: str) -> list[dict]:
    rows = []
    for pos, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or not {"id", "file_name", "height", "width"} <= set(img):
            raise InvalidArgument(f"{where}: images[{pos}] needs id, file_name, height and width")
        rows.append(img)
    if not rows:
        raise InvalidArgument(f"{where}: no images")
    return rows


def _group_annotations(doc: dict, image_ids: dict[Any, int], where: str) -> list[list[dict]]:
    per_image: list[list[dict]] = [[] for _ in image_ids]
    for pos, ann in enumerate(doc.get("annotations", [])):
        ann_id = ann.get("id", f"#{pos}") if isinstance(ann, dict) else f"#{pos}"
        if not isinstance(ann, dict) or "bbox" not in ann or "category_id" not in ann:
            raise InvalidArgument(f"{where}: annotation {ann_id}: needs bbox and category_id")
        if ann.get("image_id") not in image_ids:
            raise InvalidArgument(f"{where}: annotation {ann_id}: unknown image_id")
        per_image[image_ids[ann["image_id"]]].append(ann)
    return per_image


def _target(
    anns: list[dict], cat_index: dict[int, int], height: int, width: int, where: str, num_classes: int
) -> tuple[DetectionTarget, bool]:
    ids = [a.get("id", "?") for a in anns]
    labels = []
    for ann, ann_id in zip(anns, ids, strict=True):
        cat = ann["category_id"]
        if not isinstance(cat, int) or cat not in cat_index:
            raise InvalidArgument(f"{where}: annotation {ann_id}: unknown category")
        labels.append(cat_index[cat])
    try:
        xywh = np.array([[float(v) for v in a["bbox"]] for a in anns], dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        bad = next(i for a, i in zip(anns, ids, strict=True) if not _is_box(a["bbox"]))
        raise InvalidArgument(f"{where}: annotation {bad}: bbox must be 4 numbers [x, y, w, h]") from None
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    boxes = check_boxes(
        xyxy, np.array(labels), height=height, width=width, num_classes=num_classes, ann_ids=ids, where=where
    )
    segs = [(i, a["segmentation"]) for a, i in zip(anns, ids, strict=True) if a.get("segmentation")]
    has_masks = bool(anns) and len(segs) == len(anns)
    target = DetectionTarget(
        boxes=boxes,
        labels=np.array(labels, dtype=np.int64),
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        ann_ids=ids,
        masks=MaskDecoder(segs, height, width, where) if has_masks else None,
    )
    return target, has_masks


def _is_box(value: Any) -> bool:
    try:
        return len(value) == 4 and all(isinstance(float(v), float) for v in value)
    except (TypeError, ValueError):
        return False


def load_coco(
    images: str | os.PathLike,
    annotations: str | os.PathLike,
    *,
    seed: int = 0,
    name: str | None = None,
    fractions: dict[str, float] | None = None,
    split: str | None = None,
    content_digest: ContentDigest = files_digest,
) -> DetectionDataset:
    """A DetectionDataset from a COCO instances file (see the module docstring for the rules)."""
    image_dir, ann_path = Path(images).expanduser(), Path(annotations).expanduser()
    check_path(image_dir, f"coco images {image_dir}")
    check_path(ann_path, f"coco annotations {ann_path}")
    where = f"coco annotations {ann_path}"
    doc = read_annotation_json(ann_path)
    classes, cat_index = _categories(doc, where)
    rows = _image_rows(doc, where)
    image_ids = {row["id"]: i for i, row in enumerate(rows)}
    if len(image_ids) != len(rows):
        raise InvalidArgument(f"{where}: duplicate image ids")
    per_image = _group_annotations(doc, image_ids, where)
    sizes = [(int(r["height"]), int(r["width"])) for r in rows]
    targets, all_masks = [], True
    for anns, (h, w) in zip(per_image, sizes, strict=True):
        target, has_masks = _target(anns, cat_index, h, w, where, len(classes))
        targets.append(target)
        all_masks = all_masks and (has_masks or not anns)
    paths = [str(image_dir / str(r["file_name"])) for r in rows]
    for path, row in zip(paths, rows, strict=True):
        check_path(path, f"{where}: image {row['id']}")
    n = len(rows)
    splits = {split: np.arange(n)} if split else split_images(n, seed, fractions)
    content = content_digest([str(ann_path), *paths])
    return detection_dataset(
        name=name or ann_path.stem,
        classes=classes,
        targets=targets,
        sizes=sizes,
        splits=splits,
        load=SizedImageLoader(paths, sizes, where),
        fingerprint=detection_fingerprint("coco", content, targets, splits, seed),
        sources=paths,
        has_masks=all_masks and any(len(t) for t in targets),
        meta={"source": "coco", "annotations": str(ann_path), "seed": seed},
    )


@register_source("coco")
def coco(ref: dict, *, seed: int = 0, content_digest: ContentDigest = files_digest) -> DetectionDataset:
    """`{type: coco, images: DIR, annotations: FILE, name?, splits?: {train: .6, ...}, split?: NAME}`."""
    check_ref_keys(
        ref, {"images", "annotations", "name", "splits", "split"}, "coco", required=("images", "annotations")
    )
    if ref.get("splits") is not None and ref.get("split") is not None:
        raise InvalidArgument("coco: give 'splits' (fractions) or 'split' (one name), not both")
    return load_coco(
        ref["images"], ref["annotations"], seed=seed, name=ref.get("name"),
        fractions=ref.get("splits"), split=ref.get("split"), content_digest=content_digest,
    )  # fmt: skip
