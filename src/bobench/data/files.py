"""Datasets of image files: ImageFolder trees and CSV manifests, decoded lazily with PIL.

ImageFolder layouts (class names are directory names, sorted; items sorted by file name):
  * `root/<class>/<image>`: split by class with seeded fractions (default 60/20/20 train/val/test);
  * `root/<split>/<class>/<image>` with split in train/val/test/query/gallery: splits as on disk.
A manifest is a CSV with header `path,label[,split]`; relative paths are relative to the CSV.
A retrieval manifest may add per-query ground truth (`positives`, `junk` and optionally `id` columns,
revisited Oxford/Paris style): see `bobench.data.relevance` for the format.
Both may live in S3 (`s3://bucket/prefix`, same layouts): `bobench.data.s3_source` lists them. Either
way the rules that turn a tree or a manifest into items, labels and splits are `bobench.data.layouts`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bobench.data.base import Dataset
from bobench.data.fingerprint import ContentDigest, LazyFingerprintDataset, file_fingerprint_fn, files_digest
from bobench.data.images import IMAGE_EXTENSIONS, decode_image_file
from bobench.data.layouts import manifest_layout, tree_layout
from bobench.data.registry import check_ref_keys, register_source
from bobench.data.relevance import manifest_relevance
from bobench.data.roots import check_path, is_restricted
from bobench.data.splits import KNOWN_SPLITS, RETRIEVAL_SPLITS
from bobench.errors import InvalidArgument


class FileLoader:
    """`Dataset.load` for file datasets: item index -> decoded image (picklable for worker processes)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.paths):
            raise InvalidArgument(f"item {index} out of range (dataset of {len(self.paths)} files)")
        return decode_image_file(self.paths[index])


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_images(class_dir: Path) -> list[str]:
    images = sorted(str(p) for p in class_dir.iterdir() if _is_image(p))
    if not images:
        raise InvalidArgument(f"imagefolder: empty class {class_dir.name!r}: no images in {class_dir}")
    if is_restricted():  # a symlink (file or class folder) inside a data root may point out of it
        for image in images:
            check_path(image, f"imagefolder: file {image}")
    return images


def _tree_groups(root: Path) -> tuple[bool, dict[str | None, dict[str, list[str]]]]:
    """(pre-split?, split -> class -> sorted images) of an ImageFolder tree; an unreadable folder
    (`/proc`, no permission) is an InvalidArgument naming it."""
    try:
        top = _subdirs(root)
        pre_split = bool(top) and all(d.name in KNOWN_SPLITS for d in top)
        groups: dict[str | None, dict[str, list[str]]] = {}
        for split, base in [(d.name, d) for d in top] if pre_split else [(None, root)]:
            class_dirs = _subdirs(base)
            if not class_dirs:
                raise InvalidArgument(f"imagefolder: no class directories in {base}")
            groups[split] = {d.name: _class_images(d) for d in class_dirs}
    except OSError as exc:
        raise InvalidArgument(f"imagefolder {root}: cannot list a folder in it ({exc.strerror})") from None
    return pre_split, groups


def _file_dataset(
    *,
    name: str,
    paths: list[str],
    labels: np.ndarray,
    classes: list[str],
    splits: dict[str, np.ndarray],
    seed: int,
    cache_key: str,
    meta: dict,
    content_digest: ContentDigest = files_digest,
) -> Dataset:
    task = "retrieval" if set(splits) <= set(RETRIEVAL_SPLITS) else "classification"
    fingerprint_fn = file_fingerprint_fn(
        (cache_key, seed), paths, classes, labels, splits, seed, content_digest=content_digest
    )
    if meta.get("relevance") is not None:  # per-query ground truth is part of what the dataset is
        fingerprint_fn = _with_relevance(fingerprint_fn, meta["relevance"])
    return LazyFingerprintDataset(
        name=name,
        classes=classes,
        labels=labels,
        splits=splits,
        load=FileLoader(paths),
        sources=paths,
        meta={"task": task, "seed": seed, **meta},
        fingerprint_fn=fingerprint_fn,
    )


def _with_relevance(fingerprint_fn: Callable[[], str], relevance: dict) -> Callable[[], str]:
    blob = json.dumps(relevance, sort_keys=True).encode()

    def fingerprint() -> str:
        return hashlib.sha256(fingerprint_fn().encode() + blob).hexdigest()

    return fingerprint


def _cache_key(ref: dict, path: Path) -> str:
    return json.dumps({**ref, "path": str(path.resolve())}, sort_keys=True, default=str)


@register_source("imagefolder")
def imagefolder(ref: dict, *, seed: int = 0, content_digest: ContentDigest = files_digest) -> Dataset:
    """ImageFolder dataset from `ref = {"type": "imagefolder", "path": DIR, "splits"?: {...}, "name"?: str}`.

    `path` may be an `s3://bucket/prefix` (see `bobench.data.s3_source`). Raises InvalidArgument naming
    the path for a missing directory, zero classes, or an empty class, and when `splits` fractions are
    given for a tree that is already split on disk. `content_digest` hashes the local files for the
    fingerprint (`bobench.data.fingerprint`).
    """
    check_ref_keys(ref, {"path", "splits", "name"}, "imagefolder")
    if "path" not in ref:
        raise InvalidArgument("imagefolder: missing 'path'")
    if str(ref["path"]).startswith("s3://"):
        from bobench.data.s3_source import s3_imagefolder

        return s3_imagefolder(ref, seed=seed)
    root = Path(os.path.expanduser(str(ref["path"])))
    check_path(root, f"imagefolder {root}")
    if not root.is_dir():
        raise InvalidArgument(f"imagefolder: directory {root} does not exist")
    pre_split, groups = _tree_groups(root)
    paths, label_arr, classes, splits = tree_layout(groups, ref, seed, where=f"imagefolder {root}")
    return _file_dataset(
        name=str(ref.get("name") or root.resolve().name),
        paths=paths,
        labels=label_arr,
        classes=classes,
        splits=splits,
        seed=seed,
        cache_key=_cache_key(ref, root),
        content_digest=content_digest,
        meta={
            "source": "imagefolder",
            "path": str(root),
            "layout": "pre-split" if pre_split else "class-folders",
        },
    )


@register_source("manifest")
def manifest(ref: dict, *, seed: int = 0, content_digest: ContentDigest = files_digest) -> Dataset:
    """Dataset from a CSV manifest `ref = {"type": "manifest", "path": X.csv, "classes"?: [...],
    "splits"?: {...}, "name"?: str}`.

    `path` may be an `s3://bucket/key.csv` (see `bobench.data.s3_source`). Without a `split` column
    the rows are split by class with seeded fractions. Raises InvalidArgument naming the row (CSV line
    number) and field for a missing column, an empty field, a missing image file, a label not in
    `classes`, an unknown split or a split given on some rows only.
    """
    check_ref_keys(ref, {"path", "classes", "splits", "name"}, "manifest")
    if "path" not in ref:
        raise InvalidArgument("manifest: missing 'path'")
    if str(ref["path"]).startswith("s3://"):
        from bobench.data.s3_source import s3_manifest

        return s3_manifest(ref, seed=seed)
    csv_path = Path(os.path.expanduser(str(ref["path"])))
    check_path(csv_path, f"manifest {csv_path}")
    if not csv_path.is_file():
        raise InvalidArgument(f"manifest: file {csv_path} does not exist")

    def resolve(value: str, line: int) -> str:  # messages never quote the row: it is file content
        path = Path(value)
        if not path.is_absolute():
            path = csv_path.parent / path
        check_path(path, f"manifest {csv_path}: row {line}: field 'path'")
        if not path.is_file():
            raise InvalidArgument(
                f"manifest {csv_path}: row {line}: field 'path': the file it names does not exist"
            )
        return str(path)

    paths, label_arr, classes, splits = manifest_layout(
        csv_path, ref, seed, resolve, where=f"manifest {csv_path}"
    )
    relevance = manifest_relevance(csv_path, splits, paths, where=f"manifest {csv_path}")
    return _file_dataset(
        name=str(ref.get("name") or csv_path.stem),
        paths=paths,
        labels=label_arr,
        classes=classes,
        splits=splits,
        seed=seed,
        cache_key=_cache_key(ref, csv_path),
        content_digest=content_digest,
        meta={"source": "manifest", "path": str(csv_path), "relevance": relevance},
    )
