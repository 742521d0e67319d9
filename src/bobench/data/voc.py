"""Pascal VOC XML detection datasets: `{type: voc, images: DIR, annotations: DIR}`.

One XML file per image (`<filename>`, `<size>`, `<object><name>`, `<bndbox>`, `<difficult>`), as
written by LabelImg and the VOC devkit. VOC coordinates are 1-based inclusive pixels; they are used
as given (xmin, ymin, xmax, ymax), which is how the tree-crown and most LabelImg files mean them.
Objects marked `difficult` become ignore regions (`iscrowd`), as in VOC's own evaluation. Classes are
the ref's `classes` list (an object of another name is an error) or the sorted names found.

Errors: InvalidArgument naming the XML file and the object's position ("object 3") for a malformed
file, a missing field, a box outside the image or an unknown class; never quoting the file's contents.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bobench.data.coco import SizedImageLoader
from bobench.data.detection import (
    DetectionDataset,
    DetectionTarget,
    check_boxes,
    detection_dataset,
    detection_fingerprint,
    split_images,
)
from bobench.data.fingerprint import ContentDigest, files_digest
from bobench.data.registry import check_ref_keys, register_source
from bobench.data.roots import check_path
from bobench.errors import InvalidArgument


@dataclass(frozen=True)
class VocRecord:
    """One parsed VOC file: image file name, (height, width), object names, xyxy boxes, difficult flags."""

    filename: str
    size: tuple[int, int]
    names: tuple[str, ...]
    boxes: np.ndarray
    difficult: np.ndarray


def _number(node: ET.Element | None, tag: str, where: str) -> float:
    child = None if node is None else node.find(tag)
    try:
        return float((child.text or "").strip())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise InvalidArgument(f"{where}: missing or non-numeric <{tag}>") from None


def parse_voc_xml(data: bytes, where: str) -> VocRecord:
    """Parse one VOC annotation (bytes); `where` names the file in errors."""
    if not data.strip():
        raise InvalidArgument(f"{where}: annotation file is empty")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InvalidArgument(f"{where}: not well-formed XML (line {exc.position[0]})") from None
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise InvalidArgument(f"{where}: missing <filename>")
    size = root.find("size")
    height, width = int(_number(size, "height", where)), int(_number(size, "width", where))
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.findall("object"), start=1):
        at = f"{where}: object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise InvalidArgument(f"{at}: missing <name>")
        box = obj.find("bndbox")
        names.append(name)
        boxes.append([_number(box, t, at) for t in ("xmin", "ymin", "xmax", "ymax")])
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    return VocRecord(
        filename=filename,
        size=(height, width),
        names=tuple(names),
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        difficult=np.array(difficult, dtype=bool),
    )


def voc_target(record: VocRecord, classes: list[str], where: str) -> DetectionTarget:
    """The checked DetectionTarget of a parsed record; object ids are 1-based positions in the file."""
    index = {c: i for i, c in enumerate(classes)}
    ids = list(range(1, len(record.names) + 1))
    labels = np.array([index.get(n, -1) for n in record.names], dtype=np.int64)
    boxes = check_boxes(
        record.boxes, labels, height=record.size[0], width=record.size[1],
        num_classes=len(classes), ann_ids=ids, where=where, what="object",
    )  # fmt: skip
    return DetectionTarget(boxes=boxes, labels=labels, iscrowd=record.difficult.copy(), ann_ids=ids)


def load_voc(
    images: str | os.PathLike,
    annotations: str | os.PathLike,
    *,
    seed: int = 0,
    name: str | None = None,
    classes: list[str] | None = None,
    fractions: dict[str, float] | None = None,
    content_digest: ContentDigest = files_digest,
) -> DetectionDataset:
    """A DetectionDataset from a folder of VOC XML files (sorted by file name)."""
    image_dir, ann_dir = Path(images).expanduser(), Path(annotations).expanduser()
    check_path(image_dir, f"voc images {image_dir}")
    check_path(ann_dir, f"voc annotations {ann_dir}")
    if not ann_dir.is_dir():
        raise InvalidArgument(f"voc: annotation folder {ann_dir} does not exist")
    files = sorted(p for p in ann_dir.iterdir() if p.suffix.lower() == ".xml" and not p.name.startswith("."))
    if not files:
        raise InvalidArgument(f"voc: no .xml files in {ann_dir}")
    records = [parse_voc_xml(p.read_bytes(), f"voc annotation {p}") for p in files]
    names = list(classes) if classes else sorted({n for r in records for n in r.names})
    if not names:
        raise InvalidArgument(f"voc: no objects in {ann_dir} and no 'classes' given")
    targets = [voc_target(r, names, f"voc annotation {p}") for r, p in zip(records, files, strict=True)]
    paths = [str(image_dir / r.filename) for r in records]
    for path, xml in zip(paths, files, strict=True):
        check_path(path, f"voc annotation {xml}: <filename>")
    sizes = [r.size for r in records]
    splits = split_images(len(records), seed, fractions)
    content = content_digest([*map(str, files), *paths])
    return detection_dataset(
        name=name or ann_dir.resolve().name, classes=names, targets=targets, sizes=sizes, splits=splits,
        load=SizedImageLoader(paths, sizes, f"voc annotations {ann_dir}"),
        fingerprint=detection_fingerprint("voc", content, targets, splits, seed), sources=paths,
        meta={"source": "voc", "annotations": str(ann_dir), "seed": seed},
    )  # fmt: skip


@register_source("voc")
def voc(ref: dict, *, seed: int = 0, content_digest: ContentDigest = files_digest) -> DetectionDataset:
    """`{type: voc, images: DIR, annotations: DIR, classes?: [...], name?, splits?: {...}}`."""
    check_ref_keys(
        ref, {"images", "annotations", "classes", "name", "splits"}, "voc", required=("images", "annotations")
    )
    classes = ref.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise InvalidArgument("voc: 'classes' must be a list of names")
    return load_voc(
        ref["images"], ref["annotations"], seed=seed, name=ref.get("name"), classes=classes,
        fractions=ref.get("splits"), content_digest=content_digest,
    )  # fmt: skip
