"""Reference fingerprints: a dataset's identity at plan time, from its reference, reading no image.

The scheduler plans a battle (run keys) without torch and without reading the data sets; the run
key needs a dataset identity with the guarantees of the content fingerprint (`bobench.data.
fingerprint`): it changes when the data, the labels, the split or the seed change. The planner
computes it from the reference, declared or listed, never from pixels or file bytes:

* a registered (named) dataset has a declared fingerprint: its ref with options and seed, the
  builder (`module:function` and its declared `version`) and its `source` text (with the pinned
  source version where there is one: the npm emoji release, the deepforest wheel). Nothing of the
  machine enters (no installed package version, no listing of a server-chosen folder): the scheduler
  image holds none of the data packages, and the evaluator must plan the same key
  (`expected_run_key`). A builder that would produce other data bumps its `version`;
* a local folder, manifest, WebDataset, COCO or VOC source is built as the evaluator builds it
  (listing, label files, annotations: so a missing folder, a path outside the data roots or a
  limit fail exactly as before) with `content_digest=stat_digest`: each file's size and mtime stand
  in for its bytes, so an edited, replaced or truncated image still changes the key;
* an `s3://` source is fingerprinted from its listing already (ETags and sizes): the same value;
* `max_per_class` and `split_seed` wrappers hash the inner reference with their own fields;
* any other source (torchvision, a plugin's) cannot be listed here: it is loaded with the caller's
  loader and its content fingerprint is used, as before.

Run keys therefore differ from those of the content fingerprint (a copy of a folder with new mtimes
plans new runs); the evaluator still keys its feature cache by the content fingerprint. Raises what
the sources raise: InvalidArgument (unknown name or option, missing or malformed data),
PermissionDenied (outside the data roots), ResourceExhausted (a limit).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from bobench.data.base import fingerprint_arrays
from bobench.data.fingerprint import stat_digest
from bobench.data.registry import SOURCES, check_seed, named_entry, normalize_ref

REFERENCE_VERSION = "bobench-dataset-ref-v1"


class _NotListable(Exception):
    """The ref names a source that takes no `content_digest`: it must be loaded to be fingerprinted."""


def reference_fingerprint(ref: str | dict, *, seed: int = 0, load: Callable[[Any], Any] | None = None) -> str:
    """The plan-time fingerprint of `ref` with split seed `seed` (see the module docstring).

    `load(ref)` builds a dataset of a source that cannot be listed (default `load_dataset`); its
    `.fingerprint` is used then."""
    norm = normalize_ref(ref)
    try:
        return _reference(norm, check_seed(seed))
    except _NotListable:
        if load is None:
            from bobench.data.registry import load_dataset

            return load_dataset(ref, seed=seed).fingerprint
        return load(ref).fingerprint


def _reference(norm: str | dict[str, Any], seed: int) -> str:
    if isinstance(norm, dict) and "split_seed" in norm:
        rest = {k: v for k, v in norm.items() if k != "split_seed"}
        inner = _reference(_unwrap(rest), check_seed(norm["split_seed"]))
        return fingerprint_arrays(REFERENCE_VERSION, inner, f"split_seed={norm['split_seed']}")
    if isinstance(norm, dict) and "max_per_class" in norm:
        from bobench.data.subset import SUBSET_VERSION

        rest = {k: v for k, v in norm.items() if k != "max_per_class"}
        inner = _reference(_unwrap(rest), seed)
        return fingerprint_arrays(
            REFERENCE_VERSION, inner, f"max_per_class={norm['max_per_class']}", f"seed={seed}", SUBSET_VERSION
        )
    if isinstance(norm, str) or "type" not in norm:
        return _declared({"name": norm} if isinstance(norm, str) else norm, seed)
    source = SOURCES.get(str(norm["type"]))
    if "content_digest" not in inspect.signature(source).parameters:
        raise _NotListable
    return source(norm, seed=seed, content_digest=stat_digest).fingerprint


def _unwrap(rest: dict[str, Any]) -> str | dict[str, Any]:
    return rest["name"] if set(rest) == {"name"} else rest


def _declared(norm: dict[str, Any], seed: int) -> str:
    """A named dataset's declared fingerprint (the module docstring says what enters)."""
    entry, options = named_entry(norm)
    factory = entry.factory
    return fingerprint_arrays(
        REFERENCE_VERSION,
        "named",
        entry.name,
        json.dumps(options, sort_keys=True, default=str),
        f"seed:{seed}",
        f"builder:{factory.__module__}:{factory.__qualname__}:{entry.version}",
        f"source:{entry.source}",
    )
