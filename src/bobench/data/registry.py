"""Dataset registries: named datasets (DATASETS) and dataset sources (SOURCES), and ref lookup.

A dataset ref is either
  * a registered name (`"toy"`, `"mnist"`, ... see `list_datasets()`), optionally as a dict with
    options: `{"name": "photo_crops", "gallery_per_photo": 3}`;
  * a source spec, a dict with `"type"`: `{"type": "imagefolder", "path": DIR}`,
    `{"type": "manifest", "path": "x.csv"}`, `{"type": "webdataset", "path": DIR or shards}`
    (`bobench.data.webdataset`), `{"type": "torchvision", "name": "CIFAR10", ...}`; the path of an
    imagefolder, manifest or webdataset may be `s3://bucket/prefix` (`bobench.data.s3_source`;
    the process calls `bobench.data.configure(settings)` once for the store settings);
  * a path string: a directory (or `s3://bucket/prefix/`) is an ImageFolder, a `.csv` file a
    manifest, a `.tar` file or a brace pattern (`shard-{000..009}.tar`) WebDataset shards.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bobench.data.base import Dataset
from bobench.errors import InvalidArgument
from bobench.registry import Registry

SourceFactory = Callable[..., Dataset]  # source(ref: dict, *, seed: int) -> Dataset


@dataclass(frozen=True)
class RegisteredDataset:
    """A named dataset: its factory `factory(*, seed, **options)` and what `bob datasets list` shows.

    `version` (of the builder) and `source` make its declared plan-time fingerprint
    (`bobench.data.reference`): bump `version` whenever the builder would produce other images,
    labels or splits (a new source release included, unless `source` names its version).
    """

    name: str
    factory: Callable[..., Dataset]
    task: str  # "classification" | "retrieval"
    classes: int
    size: int  # items with default options
    source: str
    license: str
    description: str = ""
    version: str = "1"

    def options(self) -> list[str]:
        """Keyword options the factory accepts besides `seed`."""
        params = inspect.signature(self.factory).parameters
        return [p for p in params if p != "seed"]


BUILTIN_MODULES = (  # importing them registers the built-in datasets and sources (on first lookup)
    "bobench.data.files",
    "bobench.data.webdataset",
    "bobench.data.bundled",
    "bobench.data.synthetic",
    "bobench.data.online",
    "bobench.data.coco",
    "bobench.data.voc",
    "bobench.data.detection_bundled",
)
DATASETS: Registry[RegisteredDataset] = Registry("dataset", "bob datasets list", builtins=BUILTIN_MODULES)
SOURCES: Registry[SourceFactory] = Registry("dataset source", builtins=BUILTIN_MODULES)


def register_dataset(
    name: str,
    *,
    task: str,
    classes: int,
    size: int,
    source: str,
    license: str,
    description: str = "",
    version: str = "1",
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator registering a named-dataset factory `factory(*, seed, **options) -> Dataset`."""

    def decorator(factory: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS.add(
            name, RegisteredDataset(name, factory, task, classes, size, source, license, description, version)
        )
        return factory

    return decorator


def register_source(type_name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator registering a dataset source `source(ref: dict, *, seed) -> Dataset` by its `type`."""
    return SOURCES.register(type_name)


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.lower().endswith((".csv", ".tar")) or os.path.isdir(ref)


def normalize_ref(ref: str | dict) -> str | dict[str, Any]:
    """The canonical form of a ref: a plain name string, or a dict with a `type` or `name` key.

    Raises InvalidArgument for anything that is neither a string nor a mapping, or an empty one.
    """
    if isinstance(ref, str):
        name = ref.strip()
        if not name:
            raise InvalidArgument("dataset ref is empty")
        if name in DATASETS or not _looks_like_path(name):
            return name
        kind = "manifest" if name.lower().endswith(".csv") else "imagefolder"
        if name.lower().endswith(".tar") or "{" in name:
            kind = "webdataset"
        return {"type": kind, "path": name}
    if isinstance(ref, dict):
        if "type" not in ref and "name" not in ref:
            raise InvalidArgument(
                f"dataset ref {ref!r} needs a 'name' (registered dataset) or a 'type' (source)"
            )
        if "type" not in ref and set(ref) == {"name"}:
            return str(ref["name"])
        return dict(ref)
    raise InvalidArgument(f"dataset ref must be a name or a mapping, got {type(ref).__name__}")


def dataset_ref_key(ref: str | dict) -> str:
    """A canonical string for a ref: the name for plain named datasets, else compact sorted JSON.

    Equal refs written differently (key order, `{"name": "toy"}` vs `"toy"`) give the same key.
    """
    norm = normalize_ref(ref)
    if isinstance(norm, str):
        return norm
    try:
        return json.dumps(norm, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise InvalidArgument(f"dataset ref {ref!r} is not JSON-serialisable: {exc}") from None


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgument(f"dataset seed must be a non-negative integer, got {seed!r}")
    return seed


def load_dataset(ref: str | dict, *, seed: int = 0) -> Dataset:
    """Build the dataset a ref names, with splits drawn from `seed` (part of the fingerprint).

    Images decode lazily; call `validate_dataset` to decode everything up front. Raises InvalidArgument
    for an unknown name/type (with close matches), unknown options or bad data, and Unavailable when
    an online source cannot be reached.
    """
    seed = check_seed(seed)
    norm = normalize_ref(ref)
    if isinstance(norm, dict) and "split_seed" in norm:  # any ref may pin its own split seed
        rest = {k: v for k, v in norm.items() if k != "split_seed"}
        return load_dataset(
            rest["name"] if set(rest) == {"name"} else rest, seed=check_seed(norm["split_seed"])
        )
    if isinstance(norm, dict) and "max_per_class" in norm:
        from bobench.data.subset import subsample_per_class

        rest = {k: v for k, v in norm.items() if k != "max_per_class"}
        if set(rest) == {"name"}:
            rest = rest["name"]
        return subsample_per_class(load_dataset(rest, seed=seed), norm["max_per_class"], seed)
    if isinstance(norm, str):
        return DATASETS.get(norm).factory(seed=seed)
    if "type" in norm:
        return SOURCES.get(str(norm["type"]))(norm, seed=seed)
    entry, options = named_entry(norm)
    return entry.factory(seed=seed, **options)


def named_entry(norm: dict[str, Any]) -> tuple[RegisteredDataset, dict[str, Any]]:
    """(registered dataset, options) of a normalized `{"name": ..., **options}` ref; InvalidArgument
    for an unknown name (close matches) or option."""
    entry = DATASETS.get(str(norm["name"]))
    options = {k: v for k, v in norm.items() if k != "name"}
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        raise InvalidArgument(
            f"dataset {entry.name!r}: unknown option(s) {unknown}; accepted: {entry.options() or 'none'}"
        )
    return entry, options


def list_datasets() -> list[dict[str, Any]]:
    """One row per named dataset (name, task, classes, size, source, license, description, options),
    for `bob datasets list`. Loads no data."""
    return [
        {
            "name": e.name,
            "task": e.task,
            "classes": e.classes,
            "size": e.size,
            "source": e.source,
            "license": e.license,
            "description": e.description,
            "options": e.options(),
        }
        for _, e in DATASETS.items()
    ]


def check_ref_keys(ref: dict, allowed: set[str], where: str, required: tuple[str, ...] = ()) -> None:
    """Reject unknown keys in a source ref, naming them (a typo must not be silently ignored), and
    the first of `required` that is missing."""
    unknown = sorted(set(ref) - allowed - {"type"})
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {unknown}; accepted: {sorted(allowed)}")
    for key in required:
        if key not in ref:
            raise InvalidArgument(f"{where}: missing '{key}'")
