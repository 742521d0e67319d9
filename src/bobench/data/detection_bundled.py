"""Bundled real detection data: aerial tree crowns from the `deepforest` wheel, labelme's COCO sample.

* `tree_crowns`: the NEON aerial RGB tiles and their hand-drawn crown boxes (Pascal VOC XML) shipped
  in the `deepforest` 2.1.0 wheel (MIT). The wheel is fetched once with `pip download deepforest==2.1.0
  --no-deps` into `<cache_dir>/pypi` and read with `zipfile`: deepforest itself and its ~20 heavy
  dependencies are never installed or imported. Four annotated images are used (two YELL crops of
  2299x2472 and 1249x1035 px with 574 and 279 crowns, OSBS_029 and SOAP_061 of 400x400 px with 61 and
  37); SOAP_031 ships without annotations and is left out (unannotated is not the same as empty).
  Each image is cut into a non-overlapping grid of about `tile_size` px (round(side / tile_size)
  tiles per side, so tiles are 345-416 px at the default 400: 47 tiles); a box is clipped to its tile
  and kept when at least `min_visible` of its area lies inside, else dropped as a sliver. One class,
  "tree" (SOAP_061's Alive/Dead labels are both trees). Splits are by tile, seeded 60/20/20;
  `sites` keeps the tiles of some NEON sites only. `site` of each tile (YELL: Yellowstone; OSBS:
  Ordway-Swisher, Florida; SOAP: Soaproot Saddle, California) drives `ood_detection`'s domain shift.
* `labelme_coco`: labelme's instance-segmentation example in COCO format (Debian `labelme-examples`,
  GPL-3): 3 VOC photos, 12 polygon instances of 6 classes: COCO loading and mask AP smoke checks only.

Errors: Unavailable when the wheel cannot be fetched (offline, no pip) or the Debian package is missing,
saying how to get it; InvalidArgument for bad options.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bobench.config import Settings
from bobench.data.context import data_settings
from bobench.data.detection import (
    DetectionDataset,
    DetectionTarget,
    check_boxes,
    detection_dataset,
    detection_fingerprint,
    split_images,
)
from bobench.data.fingerprint import file_digest
from bobench.data.registry import register_dataset
from bobench.data.voc import parse_voc_xml
from bobench.errors import FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

DEEPFOREST_VERSION = "2.1.0"
DEEPFOREST_WHEEL = f"deepforest-{DEEPFOREST_VERSION}-py3-none-any.whl"
TREE_IMAGES = (  # (stem in deepforest/data/, NEON site)
    ("2019_YELL_2_528000_4978000_image_crop2", "YELL"),
    ("2019_YELL_2_541000_4977000_image_crop", "YELL"),
    ("OSBS_029", "OSBS"),
    ("SOAP_061", "SOAP"),
)
TREE_SITES = ("YELL", "OSBS", "SOAP")
PIP = (sys.executable, "-m", "pip")  # the pip client that fetches the wheel (tests may swap it)
# A read-only folder of wheels baked into an image (the evaluator and finetune-gpu Dockerfiles put the
# deepforest wheel there), so a Job pod with an empty cache and no package index reads tree_crowns: the
# setting `image_wheels` (env BOBENCH_IMAGE_WHEELS), whose default is this folder.
IMAGE_WHEELS_DEFAULT = Settings.image_wheels
PIP_TIMEOUT_S = 600
LABELME_DIR = "/usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco"


def _settings() -> Settings:
    try:
        return data_settings("tree_crowns")
    except FailedPrecondition:  # a library caller that never configured the data context
        return Settings()


def deepforest_wheel(cache_dir: Path | None = None) -> Path:
    """Path of the deepforest wheel: in `<cache>/pypi`, else in the image's wheel folder (setting
    `image_wheels`, default /opt/bobench/wheels), else fetched once with `pip download --no-deps` into
    `<cache>/pypi`. Both folders come from the configured settings (`bobench.data.configure`).

    Raises Unavailable when it is in neither place and pip fails (offline, no index)."""
    settings = _settings()
    target = (cache_dir or Path(settings.cache_dir)) / "pypi" / DEEPFOREST_WHEEL
    if target.exists():
        return target
    baked = Path(settings.image_wheels or IMAGE_WHEELS_DEFAULT) / DEEPFOREST_WHEEL
    if baked.is_file():
        return baked
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info(
        "fetching deepforest==%s (wheel only, no dependencies) into %s", DEEPFOREST_VERSION, target.parent
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [
            *PIP,
            "download",
            f"deepforest=={DEEPFOREST_VERSION}",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            tmp,
        ]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = (getattr(exc, "stderr", "") or "").strip()[-300:] or type(exc).__name__
            raise Unavailable(
                f"tree_crowns: 'pip download deepforest=={DEEPFOREST_VERSION} --no-deps' failed ({detail}); "
                f"put {DEEPFOREST_WHEEL} into {target.parent} by hand on a machine without a package index"
            ) from exc
        fetched = Path(tmp) / DEEPFOREST_WHEEL
        if not fetched.exists():
            raise Unavailable(f"tree_crowns: pip did not produce {DEEPFOREST_WHEEL}")
        fetched.replace(target)
    return target


@functools.lru_cache(maxsize=len(TREE_IMAGES))
def _wheel_image(wheel: str, stem: str) -> np.ndarray:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(f"deepforest/data/{stem}.png")
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@functools.cache
def _wheel_annotations(wheel: str) -> tuple:
    with zipfile.ZipFile(wheel) as zf:
        return tuple(
            parse_voc_xml(zf.read(f"deepforest/data/{stem}.xml"), f"{DEEPFOREST_WHEEL}:{stem}.xml")
            for stem, _ in TREE_IMAGES
        )


@dataclass(frozen=True)
class Tile:
    stem: str
    site: str
    y0: int
    x0: int
    y1: int
    x1: int


class TileLoader:
    """`load(i)`: tile i cut from its wheel image (the decoded images are cached per process)."""

    def __init__(self, wheel: str, tiles: list[Tile]) -> None:
        self.wheel, self.tiles = wheel, tiles

    def __call__(self, index: int) -> np.ndarray:
        t = self.tiles[index]
        return np.ascontiguousarray(_wheel_image(self.wheel, t.stem)[t.y0 : t.y1, t.x0 : t.x1])


def grid_edges(side: int, tile_size: int) -> list[int]:
    """Edges of a non-overlapping grid of round(side / tile_size) (>= 1) near-equal tiles."""
    n = max(1, round(side / tile_size))
    return [round(k * side / n) for k in range(n + 1)]


def clip_to_tile(boxes: np.ndarray, tile: Tile, min_visible: float) -> np.ndarray:
    """Boxes (xyxy, image pixels) clipped to `tile`, in tile pixels; those with less than `min_visible`
    of their area inside are dropped. Returns float32 [K, 4]."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(tile.x0, tile.x1) - tile.x0
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(tile.y0, tile.y1) - tile.y0
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    keep = (inside > 0) & (inside >= min_visible * area)
    return clipped[keep].astype(np.float32)


def _check_options(tile_size: int, min_visible: float, sites: list[str] | None) -> None:
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or not 64 <= tile_size <= 4096:
        raise InvalidArgument(f"tree_crowns: tile_size must be an integer in [64, 4096], got {tile_size!r}")
    if isinstance(min_visible, bool) or not isinstance(min_visible, (int, float)) or not 0 < min_visible <= 1:
        raise InvalidArgument(f"tree_crowns: min_visible must be in (0, 1], got {min_visible!r}")
    if sites is not None:
        unknown = sorted(set(map(str, sites)) - set(TREE_SITES)) if isinstance(sites, list) else [sites]
        if unknown or not sites:
            raise InvalidArgument(f"tree_crowns: sites must be a non-empty list of {list(TREE_SITES)}")


@register_dataset(
    "tree_crowns", task="detection", classes=1, size=47, source=f"PyPI deepforest=={DEEPFOREST_VERSION} (wheel data)",
    license="MIT", description="NEON aerial tree crowns (YELL/OSBS/SOAP), ~400 px tiles, boxes clipped to tiles",
)  # fmt: skip
def tree_crowns(
    *, seed: int = 0, tile_size: int = 400, min_visible: float = 0.5, sites: list[str] | None = None
) -> DetectionDataset:
    """The tree-crown tiles (see the module docstring); splits by tile from `seed`."""
    _check_options(tile_size, min_visible, sites)
    wheel = deepforest_wheel()
    records = _wheel_annotations(str(wheel))
    tiles: list[Tile] = []
    targets: list[DetectionTarget] = []
    for (stem, site), record in zip(TREE_IMAGES, records, strict=True):
        if sites is not None and site not in sites:
            continue
        height, width = record.size
        boxes = check_boxes(
            record.boxes, np.zeros(len(record.names), np.int64), height=height, width=width,
            num_classes=1, ann_ids=range(1, len(record.names) + 1),
            where=f"{DEEPFOREST_WHEEL}:{stem}.xml", what="object",
        )  # fmt: skip
        ys, xs = grid_edges(height, tile_size), grid_edges(width, tile_size)
        for y0, y1 in itertools.pairwise(ys):
            for x0, x1 in itertools.pairwise(xs):
                tile = Tile(stem, site, y0, x0, y1, x1)
                kept = clip_to_tile(boxes, tile, float(min_visible))
                tiles.append(tile)
                targets.append(
                    DetectionTarget(
                        boxes=kept,
                        labels=np.zeros(len(kept), np.int64),
                        iscrowd=np.zeros(len(kept), bool),
                        ann_ids=[f"{stem}@{y0},{x0}#{k}" for k in range(len(kept))],
                    )  # fmt: skip
                )
    splits = split_images(len(tiles), seed)
    content = f"{file_digest(str(wheel))}:{tile_size}:{min_visible}:{sorted(sites or TREE_SITES)}"
    return detection_dataset(
        name="tree_crowns", classes=["tree"], targets=targets,
        sizes=[(t.y1 - t.y0, t.x1 - t.x0) for t in tiles], splits=splits,
        load=TileLoader(str(wheel), tiles),
        fingerprint=detection_fingerprint("tree_crowns", content, targets, splits, seed),
        sources=[f"{DEEPFOREST_WHEEL}:{t.stem}.png[y={t.y0}:{t.y1},x={t.x0}:{t.x1}]" for t in tiles],
        sites=[t.site for t in tiles],
        meta={"source": f"PyPI deepforest=={DEEPFOREST_VERSION}", "license": "MIT", "seed": seed},
    )  # fmt: skip


@register_dataset(
    "labelme_coco", task="detection", classes=20, size=3, source="Debian labelme-examples",
    license="GPL-3", description="labelme's COCO export: 3 photos, 12 polygon instances (mask loading, mask AP smoke)",
)  # fmt: skip
def labelme_coco(*, seed: int = 0, path: str = LABELME_DIR) -> DetectionDataset:
    """labelme's COCO sample with its polygon masks; Unavailable when the Debian package is missing."""
    from bobench.data.coco import load_coco

    root = Path(path)
    if not (root / "annotations.json").exists():
        raise Unavailable(
            f"labelme_coco: {root}/annotations.json not found; install the Debian package with "
            "'apt-get install labelme-examples' (scripts/install-system-deps.sh does, as root)"
        )
    return load_coco(root, root / "annotations.json", seed=seed, name="labelme_coco")
