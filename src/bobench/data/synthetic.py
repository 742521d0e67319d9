"""Tiny synthetic datasets for fast tests of every other module (the `toy` backbone's companions).

Pixels come from a fixed content seed, so they never change; the split seed only changes which items
land in which split. Both sets are small (32x32 RGB) and build in milliseconds.
"""

from __future__ import annotations

import numpy as np

from bobench.data.arrays import array_dataset
from bobench.data.base import Dataset
from bobench.data.registry import register_dataset
from bobench.data.splits import stratified_split
from bobench.errors import InvalidArgument

SHAPES = ("circle", "square", "triangle", "cross")
CONTENT_SEED = 20231030
NOISE_SIGMA = 12.0

# toy_retrieval instances: (shape, foreground RGB, background RGB)
INSTANCES = (
    ("circle", (230, 40, 40), (20, 20, 60)),
    ("square", (40, 220, 60), (60, 20, 20)),
    ("triangle", (50, 80, 240), (30, 50, 20)),
    ("cross", (240, 220, 40), (40, 40, 40)),
    ("circle", (40, 220, 220), (70, 30, 50)),
    ("square", (230, 60, 220), (20, 60, 60)),
)


def shape_mask(shape: str, size_px: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean HxW mask of a filled shape centred at (cx, cy) with half-extent `radius` (pixels)."""
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float64)
    dx, dy = np.abs(xx - cx), yy - cy
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return (dx <= 0.8 * radius) & (np.abs(dy) <= 0.8 * radius)
    if shape == "triangle":
        return (dy >= -radius) & (dy <= radius) & (dx <= (dy + radius) / 2)
    if shape == "cross":
        arm = radius / 3
        return ((dx <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (dx <= radius))
    raise InvalidArgument(f"unknown synthetic shape {shape!r} (known: {', '.join(SHAPES)})")


def draw(
    shape: str,
    size_px: int,
    rng: np.random.Generator,
    fg: np.ndarray,
    bg: np.ndarray,
    radius: float,
    jitter_px: float,
) -> np.ndarray:
    """A noisy uint8 HxWx3 image of one shape on a flat background, centre jittered by `jitter_px`."""
    centre = (size_px - 1) / 2
    cx, cy = centre + rng.uniform(-jitter_px, jitter_px, size=2)
    image = np.empty((size_px, size_px, 3), dtype=np.float64)
    image[:] = bg
    image[shape_mask(shape, size_px, cx, cy, radius)] = fg
    image += rng.normal(0.0, NOISE_SIGMA, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _check_option(dataset: str, key: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidArgument(f"{dataset}: {key} must be an integer >= {low}, got {value!r}")


@register_dataset(
    "toy", task="classification", classes=4, size=80, source="synthetic", license="CC0 (generated)",
    description="coloured shapes with noise (circle/square/triangle/cross), 20 per class, 32x32; for tests",
)  # fmt: skip
def toy(*, seed: int = 0, per_class: int = 20, size_px: int = 32) -> Dataset:
    """Four shape classes with random colours, positions and sizes; stratified 60/20/20 splits."""
    _check_option("toy", "per_class", per_class, 3)
    _check_option("toy", "size_px", size_px, 16)
    rng = np.random.default_rng(CONTENT_SEED)
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            fg = rng.uniform(110, 255, size=3)
            bg = rng.uniform(0, 70, size=3)
            radius = rng.uniform(0.22, 0.34) * size_px
            images.append(draw(shape, size_px, rng, fg, bg, radius, jitter_px=size_px / 2 - radius - 1))
            labels.append(label)
    label_arr = np.asarray(labels, dtype=np.int64)
    return array_dataset(
        name="toy", images=images, labels=label_arr, classes=list(SHAPES),
        splits=stratified_split(label_arr, None, seed, class_names=SHAPES), seed=seed,
        cache_key=f"toy[per_class={per_class},size={size_px}]",
        meta={"task": "classification", "source": "synthetic", "license": "CC0"},
    )  # fmt: skip


@register_dataset(
    "toy_retrieval", task="retrieval", classes=len(INSTANCES), size=len(INSTANCES) * 7, source="synthetic",
    license="CC0 (generated)",
    description="6 shape instances, jittered noisy views: 2 queries + 5 gallery each, 32x32; for tests",
)  # fmt: skip
def toy_retrieval(
    *, seed: int = 0, queries_per_instance: int = 2, gallery_per_instance: int = 5, size_px: int = 32
) -> Dataset:
    """Each class is one instance (fixed shape and colours); items are jittered noisy views of it.

    Items are instance-major; the seed picks which views of each instance are the queries.
    """
    _check_option("toy_retrieval", "queries_per_instance", queries_per_instance, 1)
    _check_option("toy_retrieval", "gallery_per_instance", gallery_per_instance, 1)
    _check_option("toy_retrieval", "size_px", size_px, 16)
    content_rng = np.random.default_rng(CONTENT_SEED + 1)
    split_rng = np.random.default_rng(seed)
    views = queries_per_instance + gallery_per_instance
    images, labels, query_idx = [], [], []
    for label, (shape, fg, bg) in enumerate(INSTANCES):
        for _ in range(views):
            radius = 0.3 * size_px * content_rng.uniform(0.9, 1.1)
            images.append(
                draw(shape, size_px, content_rng, np.asarray(fg), np.asarray(bg), radius, size_px / 10)
            )
            labels.append(label)
        chosen = split_rng.choice(views, size=queries_per_instance, replace=False)
        query_idx += [label * views + int(k) for k in chosen]
    is_query = np.zeros(len(images), dtype=bool)
    is_query[query_idx] = True
    names = [f"{shape}-{i}" for i, (shape, _, _) in enumerate(INSTANCES)]
    return array_dataset(
        name="toy_retrieval", images=images, labels=np.asarray(labels, dtype=np.int64), classes=names,
        splits={"query": np.flatnonzero(is_query).astype(np.int64), "gallery": np.flatnonzero(~is_query).astype(np.int64)},
        seed=seed, cache_key=f"toy_retrieval[q={queries_per_instance},g={gallery_per_instance},size={size_px}]",
        meta={"task": "retrieval", "source": "synthetic", "license": "CC0"},
    )  # fmt: skip
