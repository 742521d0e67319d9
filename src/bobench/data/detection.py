"""The detection dataset type: images with per-image boxes, labels, optional masks and crowd flags.

A `DetectionDataset` is a `Dataset` (name, classes, splits, lazy `load(i)` of HxWx3 uint8 RGB,
content fingerprint) whose `targets[i]` describes image i's objects:

* `boxes`: float32 [K, 4], xyxy in pixels of the image as `load(i)` returns it;
* `labels`: int64 [K], indices into `classes` (the background is not a class here; detectors add it);
* `iscrowd`: bool [K]: COCO crowd regions (and VOC "difficult" objects): a detection matching one is
  neither a true nor a false positive, and missing one costs nothing;
* `masks`: an optional callable returning uint8 [K, H, W] instance masks (decoded on demand, so
  listing a dataset never rasterises polygons);
* `ann_ids`: the source's annotation ids, for error messages.

`labels` (one int per image, the Dataset contract) holds the number of objects in each image, so the
generic tooling (subsets, validation) keeps working; `meta["task"]` is "detection". `sites[i]` names
where image i comes from (the tree crowns' NEON site) when the source knows it, for domain shifts.

`check_boxes` is the one place annotation geometry is validated: a box outside the image, inverted or
degenerate, or a label outside the classes, is an InvalidArgument naming the file and the annotation
id, never quoting the file's contents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bobench.data.base import Dataset, fingerprint_arrays
from bobench.errors import InvalidArgument

BOX_TOLERANCE_PX = 1.0  # annotation tools round outward; a box this far past the border is clipped


@dataclass
class DetectionTarget:
    """The objects of one image (see the module docstring for the fields)."""

    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    ann_ids: Sequence[int | str] = ()
    masks: Callable[[], np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class DetectionDataset(Dataset):
    """A Dataset with `targets` (one DetectionTarget per image) and optional per-image `sites`."""

    targets: Sequence[DetectionTarget] = ()
    sites: Sequence[str] = ()
    has_masks: bool = False

    def image_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image i as `load(i)` returns it."""
        return tuple(self.meta["sizes"][i])  # type: ignore[return-value]

    def site(self, i: int) -> str:
        return self.sites[i] if i < len(self.sites) else ""


def check_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    height: int,
    width: int,
    num_classes: int,
    ann_ids: Sequence[int | str],
    where: str,
    what: str = "annotation",
) -> np.ndarray:
    """Validated float32 [K, 4] xyxy boxes, clipped to the image when within BOX_TOLERANCE_PX of it.

    Raises InvalidArgument naming `where` (the annotation file) and the annotation id for a box that
    is not finite, lies outside the image, has no area, or a label outside [0, num_classes).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    for k, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        ann = f"{what} {ann_ids[k] if k < len(ann_ids) else k}"
        if not 0 <= label < num_classes:
            raise InvalidArgument(f"{where}: {ann}: unknown category")
        x0, y0, x1, y1 = box
        if not np.all(np.isfinite(box)):
            raise InvalidArgument(f"{where}: {ann}: box coordinates are not finite numbers")
        tol = BOX_TOLERANCE_PX
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise InvalidArgument(f"{where}: {ann}: box outside the {width}x{height} image")
        if x1 <= x0 or y1 <= y0:
            raise InvalidArgument(f"{where}: {ann}: box has no area (need x0 < x1 and y0 < y1)")
    if boxes.size:
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.float32)


def empty_target() -> DetectionTarget:
    return DetectionTarget(
        boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64), iscrowd=np.zeros(0, bool)
    )


def detection_dataset(
    *,
    name: str,
    classes: list[str],
    targets: Sequence[DetectionTarget],
    sizes: Sequence[tuple[int, int]],
    splits: dict[str, np.ndarray],
    load: Callable[[int], np.ndarray],
    fingerprint: str,
    sources: Sequence[str] = (),
    sites: Sequence[str] = (),
    has_masks: bool = False,
    meta: dict | None = None,
) -> DetectionDataset:
    """Assemble a DetectionDataset; `labels` becomes the per-image object count (see module doc)."""
    if len(targets) != len(sizes):
        raise InvalidArgument(f"dataset {name!r}: {len(targets)} targets but {len(sizes)} images")
    counts = np.array([len(t) for t in targets], dtype=np.int64)
    return DetectionDataset(
        name=name,
        classes=list(classes),
        labels=counts,
        splits={k: np.asarray(v, dtype=np.int64) for k, v in splits.items()},
        load=load,
        fingerprint=fingerprint,
        sources=list(sources),
        meta={"task": "detection", **(meta or {}), "sizes": [tuple(map(int, s)) for s in sizes]},
        targets=list(targets),
        sites=list(sites),
        has_masks=has_masks,
    )


def split_images(n: int, seed: int, fractions: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Seeded random split of n images (default 60/20/20 train/val/test); each split gets at least one
    image when n allows. Returns sorted index arrays."""
    fractions = fractions or {"train": 0.6, "val": 0.2, "test": 0.2}
    order = np.random.default_rng(seed).permutation(n)
    names = list(fractions)
    counts = [int(round(n * fractions[s])) for s in names]
    for i in range(len(counts)):  # every split non-empty when there are enough images
        if counts[i] == 0 and n >= len(names):
            counts[i] = 1
    counts[0] = n - sum(counts[1:])
    out, start = {}, 0
    for split, count in zip(names, counts, strict=True):
        out[split] = np.sort(order[start : start + count]).astype(np.int64)
        start += count
    return out


def is_detection(ds: Dataset) -> bool:
    return isinstance(ds, DetectionDataset)


def require_detection(ds: Dataset, protocol: str) -> DetectionDataset:
    """`ds` as a DetectionDataset, or InvalidArgument saying the protocol needs boxes."""
    if not isinstance(ds, DetectionDataset):
        raise InvalidArgument(
            f"protocol {protocol!r} needs a detection dataset (boxes per image: type coco or voc, or "
            f"tree_crowns / labelme_coco), but {ds.name!r} is a {ds.meta.get('task', 'classification')} dataset"
        )
    return ds


def detection_fingerprint(
    kind: str, content: str, targets: Sequence[DetectionTarget], splits: dict[str, np.ndarray], seed: int
) -> str:
    """Content hash of a detection dataset: the source's bytes digest, every box, label and crowd
    flag, and the split assignment (any change to the data or the split changes it)."""
    parts: list = [kind, content, str(seed)]
    for t in targets:
        parts += [t.boxes.astype(np.float32), t.labels, t.iscrowd.astype(np.uint8)]
    for name in sorted(splits):
        parts += [name, np.asarray(splits[name], dtype=np.int64)]
    return fingerprint_arrays(*parts)
