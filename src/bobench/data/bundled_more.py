"""Larger real data sets from system and npm packages: Fashion-MNIST and the emoji style shift.

Neither is copied into this repository; both are read from the packages at run time.

* `fashion_mnist`: the Debian package `dataset-fashion-mnist` (MIT; `scripts/install-system-deps.sh`
  installs it when run as root), idx gz files read with gzip + numpy. The official 60,000 training
  images are split (seeded, stratified, 5:1) into "train" and "val"; the official 10,000 test images
  are "test". `train_per_class` / `val_per_class` / `test_per_class` keep a seeded, stratified
  subsample of each split, so a demo can use a few hundred items while "test" stays the official set.
* The emoji sets: npm `emoji-datasource-google` (images Apache-2.0) and `emoji-datasource-twitter`
  (images CC-BY-4.0), version 16.0.0, fetched once with `npm pack` into `<cache_dir>/npm` and read
  straight from the tarballs with `tarfile`; RGBA 64x64 PNGs are composited onto white. The 1,911
  base emoji present in both styles are used (category "Component" left out).
  - `emoji_google` / `emoji_twitter`: classification by `subcategory` (only subcategories with at
    least `min_per_class` emoji). Both share labels, classes and splits for the same seed, so a
    probe trained on Google's "train" and scored on Twitter's "test" sees the held-out emoji in
    another artist's style: a natural shift for the `ood` protocol's `target`.
  - `emoji_styles`: cross-style instance retrieval, one class per emoji (`unified` code point),
    Twitter images as "query" and Google images as "gallery"; `size` keeps a seeded subset.

Errors: Unavailable when a package or the `npm` client is missing (the message says how to get it),
InvalidArgument for bad options.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bobench.config import Settings
from bobench.data.arrays import array_dataset
from bobench.data.base import Dataset
from bobench.data.context import data_settings
from bobench.data.registry import register_dataset
from bobench.data.splits import stratified_split
from bobench.errors import FailedPrecondition, InvalidArgument, Unavailable
from bobench.stage_timer import timed

log = logging.getLogger(__name__)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
EMOJI_VERSION = "16.0.0"
EMOJI_STYLES = ("google", "twitter")
NPM = "npm"  # the npm client used to fetch the emoji tarballs (a module attribute so tests can swap it)
NPM_TIMEOUT_S = 600


def _read_idx(path: Path, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except OSError as exc:
        raise Unavailable(
            f"fashion_mnist: cannot read {path}: {exc}. Install the Debian package with "
            "'apt-get install dataset-fashion-mnist' (or 'apt-get download dataset-fashion-mnist && "
            "dpkg -x dataset-fashion-mnist_*.deb DIR' without root and pass path: DIR/usr/share/datasets/fashion-mnist)"
        ) from exc
    values = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    return values.reshape(shape) if shape[0] == -1 else values


@functools.cache
@timed("decode")
def _fashion_arrays(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "t10k": (...)} as read from the idx gz files under `root`."""
    out = {}
    for part in ("train", "t10k"):
        images = _read_idx(Path(root) / f"{part}-images-idx3-ubyte.gz", 16, (-1, 28, 28))
        labels = _read_idx(Path(root) / f"{part}-labels-idx1-ubyte.gz", 8, (0,)).astype(np.int64)
        if images.shape[0] != labels.shape[0] or labels.max(initial=0) >= len(FASHION_CLASSES):
            raise Unavailable(
                f"fashion_mnist: {root}/{part}-*: {images.shape[0]} images, {labels.shape[0]} labels"
            )
        out[part] = (images, labels)
    return out


def _cap_per_class(
    labels: np.ndarray, members: np.ndarray, cap: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Sorted subset of `members` keeping at most `cap` items of each class (all when cap is None)."""
    if cap is None:
        return np.sort(members)
    keep = []
    for cls in np.unique(labels[members]):
        of_class = members[labels[members] == cls]
        keep.append(rng.choice(of_class, size=min(cap, of_class.size), replace=False))
    return np.sort(np.concatenate(keep))


def _check_cap(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgument(f"fashion_mnist: {name} must be a positive integer or null, got {value!r}")


@register_dataset(
    "fashion_mnist", task="classification", classes=10, size=70000, source="Debian dataset-fashion-mnist",
    license="MIT", description="Fashion-MNIST 28x28 gray: official test set as 'test', train split 5:1 into train/val",
)  # fmt: skip
def fashion_mnist(
    *,
    seed: int = 0,
    path: str = FASHION_DIR,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    test_per_class: int | None = None,
) -> Dataset:
    """Fashion-MNIST with seeded, stratified per-split caps; Unavailable when the files are missing."""
    caps = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    for key, value in caps.items():
        _check_cap(f"{key}_per_class", value)
    arrays = _fashion_arrays(str(path))
    (tr_x, tr_y), (te_x, te_y) = arrays["train"], arrays["t10k"]
    official = stratified_split(tr_y, {"train": 5 / 6, "val": 1 / 6}, seed, class_names=FASHION_CLASSES)
    rng = np.random.default_rng(seed)
    picked = {split: _cap_per_class(tr_y, official[split], caps[split], rng) for split in ("train", "val")}
    test = _cap_per_class(te_y, np.arange(te_y.size), caps["test"], rng)
    images = np.concatenate([tr_x[picked["train"]], tr_x[picked["val"]], te_x[test]])
    labels = np.concatenate([tr_y[picked["train"]], tr_y[picked["val"]], te_y[test]])
    sizes = np.cumsum([0, picked["train"].size, picked["val"].size, test.size])
    splits = {
        s: np.arange(sizes[i], sizes[i + 1], dtype=np.int64) for i, s in enumerate(("train", "val", "test"))
    }
    options = ",".join(f"{k}={v}" for k, v in caps.items())
    return array_dataset(
        name="fashion_mnist", images=images, labels=labels, classes=FASHION_CLASSES, splits=splits, seed=seed,
        cache_key=f"fashion_mnist[{options}]",
        meta={"task": "classification", "source": "Debian dataset-fashion-mnist", "license": "MIT"},
    )  # fmt: skip


def _cache_dir() -> Path:
    try:
        return Path(data_settings("emoji datasets").cache_dir)
    except FailedPrecondition:  # a library caller that never configured the data context
        return Path(Settings().cache_dir)


def emoji_tarball(style: str, cache_dir: Path | None = None) -> Path:
    """Path of the `emoji-datasource-<style>` npm tarball, fetched once with `npm pack` into the cache.

    Raises Unavailable when it is not cached and npm is missing or fails (offline, no registry).
    """
    package = f"emoji-datasource-{style}@{EMOJI_VERSION}"
    target = (cache_dir or _cache_dir()) / "npm" / f"emoji-datasource-{style}-{EMOJI_VERSION}.tgz"
    if target.exists():
        return target
    npm = shutil.which(NPM)
    if npm is None:
        raise Unavailable(
            f"emoji datasets need the npm package {package}: not in {target.parent} and no npm client"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s with npm pack into %s", package, target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            subprocess.run(
                [npm, "pack", package, "--pack-destination", tmp, "--silent"],
                check=True, capture_output=True, text=True, timeout=NPM_TIMEOUT_S,
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise Unavailable(
                f"emoji datasets: 'npm pack {package}' failed: {detail.strip()[-500:]}"
            ) from exc
        Path(tmp, target.name).replace(target)
    return target


@functools.cache
def _emoji_index(tarball: Path) -> tuple[tuple[str, str, str], ...]:
    """(image file name, unified, subcategory) of the base emoji drawn in both styles, sorted by unified."""
    with tarfile.open(tarball) as tar:
        meta = json.load(tar.extractfile("package/emoji.json"))
    rows = [
        (e["image"], e["unified"], e["subcategory"])
        for e in meta
        if all(e.get(f"has_img_{style}") for style in EMOJI_STYLES) and e["category"] != "Component"
    ]
    return tuple(sorted(rows, key=lambda row: row[1]))


@functools.cache
@timed("decode")
def _emoji_images(tarball: Path, style: str, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """The 64x64 PNGs `names` of `style` from the tarball, composited on white, as HxWx3 uint8."""
    wanted = {f"package/img/{style}/64/{name}": name for name in names}
    found: dict[str, np.ndarray] = {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.name in wanted:
                rgba = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                found[wanted[member.name]] = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    missing = [n for n in names if n not in found]
    if missing:
        raise Unavailable(
            f"emoji {style}: {len(missing)} image(s) missing from {tarball}, e.g. {missing[:3]}"
        )
    return tuple(found[n] for n in names)


def _emoji_rows(min_per_class: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, int) or min_per_class < 3:
        raise InvalidArgument(f"emoji: min_per_class must be an integer >= 3, got {min_per_class!r}")
    rows = _emoji_index(emoji_tarball("google"))
    counts: dict[str, int] = {}
    for _, _, sub in rows:
        counts[sub] = counts.get(sub, 0) + 1
    classes = sorted(sub for sub, n in counts.items() if n >= min_per_class)
    kept = set(classes)
    return [row for row in rows if row[2] in kept], classes


def _emoji_classification(style: str, seed: int, min_per_class: int) -> Dataset:
    rows, classes = _emoji_rows(min_per_class)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[sub] for _, _, sub in rows], dtype=np.int64)
    images = _emoji_images(emoji_tarball(style), style, tuple(name for name, _, _ in rows))
    name = f"emoji_{style}"
    return array_dataset(
        name=name, images=images, labels=labels, classes=classes,
        splits=stratified_split(labels, None, seed, class_names=classes), seed=seed,
        cache_key=f"{name}[min={min_per_class}]",
        meta={"task": "classification", "source": f"npm emoji-datasource-{style}@{EMOJI_VERSION}", "style": style},
    )  # fmt: skip


@register_dataset(
    "emoji_google", task="classification", classes=55, size=1624, source=f"npm emoji-datasource-google@{EMOJI_VERSION}",
    license="Apache-2.0 (images)", description="Google emoji 64x64 by subcategory (>= 12 per class: 55), 60/20/20 splits",
)  # fmt: skip
def emoji_google(*, seed: int = 0, min_per_class: int = 12) -> Dataset:
    """Google-style emoji labelled by subcategory; same items, classes and splits as `emoji_twitter`."""
    return _emoji_classification("google", seed, min_per_class)


@register_dataset(
    "emoji_twitter", task="classification", classes=55, size=1624, source=f"npm emoji-datasource-twitter@{EMOJI_VERSION}",
    license="CC-BY-4.0 (images)", description="Twitter emoji 64x64 by subcategory: the style-shift target of emoji_google",
)  # fmt: skip
def emoji_twitter(*, seed: int = 0, min_per_class: int = 12) -> Dataset:
    """Twitter-style emoji; item i is the same emoji as `emoji_google`'s item i (same seed, same splits)."""
    return _emoji_classification("twitter", seed, min_per_class)


@register_dataset(
    "emoji_styles", task="retrieval", classes=1906, size=3812, source=f"npm emoji-datasource-*@{EMOJI_VERSION}",
    license="Apache-2.0 / CC-BY-4.0 (images)", description="cross-style instance retrieval: Twitter query -> Google gallery",
)  # fmt: skip
def emoji_styles(*, seed: int = 0, size: int | None = None) -> Dataset:
    """One class per emoji: Twitter rendering in "query", Google rendering in "gallery".

    `size` keeps a seeded random subset of that many emoji (all when None). Items are emoji-major:
    item 2k is emoji k's query, item 2k+1 its gallery image.
    """
    rows = list(_emoji_index(emoji_tarball("google")))
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= len(rows):
            raise InvalidArgument(
                f"emoji_styles: size must be an integer in [2, {len(rows)}] or null, got {size!r}"
            )
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=size, replace=False))
        rows = [rows[int(i)] for i in keep]
    names = tuple(name for name, _, _ in rows)
    queries = _emoji_images(emoji_tarball("twitter"), "twitter", names)
    gallery = _emoji_images(emoji_tarball("google"), "google", names)
    images = [image for pair in zip(queries, gallery, strict=True) for image in pair]
    n = len(rows)
    return array_dataset(
        name="emoji_styles", images=images, labels=np.repeat(np.arange(n, dtype=np.int64), 2),
        classes=[unified for _, unified, _ in rows],
        splits={"query": np.arange(0, 2 * n, 2, dtype=np.int64), "gallery": np.arange(1, 2 * n, 2, dtype=np.int64)},
        seed=seed, cache_key=f"emoji_styles[size={size}]",
        meta={"task": "retrieval", "source": f"npm emoji-datasource-google/-twitter@{EMOJI_VERSION}"},
    )  # fmt: skip
