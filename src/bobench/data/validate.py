"""Decode a whole dataset up front, so a run fails before it starts instead of half-way through."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np

from bobench.data.base import Dataset
from bobench.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_NAMED_FAILURES = 5
Progress = Callable[[int, int, str], None]


def _check_image(image: object) -> str | None:
    """Why `image` breaks the HxWx3 uint8 contract, or None when it holds."""
    if not isinstance(image, np.ndarray):
        return f"load returned {type(image).__name__}, not a numpy array"
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        return f"expected HxWx3 uint8, got shape {list(image.shape)} dtype {image.dtype}"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return f"empty image of shape {list(image.shape)}"
    return None


def validate_dataset(
    ds: Dataset,
    progress: Progress | None = None,
    splits: Iterable[str] | None = None,
) -> None:
    """Decode every image of `ds` (or only those in `splits`) and check the HxWx3 uint8 contract.

    Collects all failures and raises one InvalidArgument that names the first few files and counts
    the rest. `progress(done, total, message)` is called every 64 images and at the end.
    """
    if splits is None:
        indices = np.arange(len(ds))
    else:
        chosen = [ds.split(s) for s in splits]
        indices = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    total = int(indices.size)
    failures: list[str] = []
    for done, i in enumerate(indices, start=1):
        try:
            problem = _check_image(ds.load(int(i)))
        except InvalidArgument as exc:
            problem = str(exc)
        if problem is not None:
            where = ds.describe(int(i))
            failures.append(problem if where in problem else f"{where}: {problem}")
        if progress is not None and (done % 64 == 0 or done == total):
            progress(done, total, f"validating {ds.name}")
    if failures:
        shown = "; ".join(failures[:MAX_NAMED_FAILURES])
        rest = len(failures) - MAX_NAMED_FAILURES
        more = f"; and {rest} more" if rest > 0 else ""
        raise InvalidArgument(
            f"dataset {ds.name!r}: {len(failures)} of {total} image(s) are unreadable: {shown}{more}"
        )
    log.debug("validated %d images of %s", total, ds.name)
