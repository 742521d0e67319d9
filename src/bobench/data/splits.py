"""Deterministic stratified splits.

Every class is cut separately so that class proportions carry over to each split, and every class
appears in every split whenever it has at least one item per split. The permutation depends only on
`seed` (numpy's PCG64 generator, stable across numpy releases), so a split is reproducible anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bobench.errors import InvalidArgument

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
CLASSIFICATION_SPLITS = ("train", "val", "test")
RETRIEVAL_SPLITS = ("query", "gallery")
KNOWN_SPLITS = CLASSIFICATION_SPLITS + RETRIEVAL_SPLITS


def check_fractions(fractions: Mapping[str, float] | None, where: str = "splits") -> dict[str, float]:
    """Validate split fractions: known names, each in (0, 1], summing to 1 (±1e-6).

    Returns a plain dict in the caller's order; `None` gives DEFAULT_FRACTIONS. Raises InvalidArgument
    naming `where` and the offending entry.
    """
    if fractions is None:
        return dict(DEFAULT_FRACTIONS)
    if not isinstance(fractions, Mapping) or not fractions:
        raise InvalidArgument(f"{where}: expected a non-empty mapping split -> fraction, got {fractions!r}")
    out: dict[str, float] = {}
    for name, value in fractions.items():
        if name not in KNOWN_SPLITS:
            raise InvalidArgument(f"{where}: unknown split {name!r} (known: {', '.join(KNOWN_SPLITS)})")
        try:
            frac = float(value)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{where}.{name}: fraction must be a number, got {value!r}") from None
        if not 0.0 < frac <= 1.0:
            raise InvalidArgument(f"{where}.{name}: fraction must be in (0, 1], got {frac}")
        out[str(name)] = frac
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise InvalidArgument(f"{where}: fractions must sum to 1, got {total:.6g} ({out})")
    return out


def _allocate(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Item counts per split for a class of `n` items (n >= number of splits): largest remainder
    rounding, then each empty split takes one item from the currently largest split."""
    ideal = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(ideal).astype(np.int64)
    remainder_order = np.argsort(-(ideal - counts), kind="stable")
    for k in remainder_order[: n - int(counts.sum())]:
        counts[k] += 1
    for k in range(len(counts)):
        if counts[k] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[k] = 1
    return counts


def stratified_split(
    labels: np.ndarray | Sequence[int],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Split item indices by class into named parts.

    Returns split name -> sorted int64 indices, in the order of `fractions` (default 60/20/20
    train/val/test). The parts are disjoint and cover every index. Raises InvalidArgument when a class
    has fewer items than there are splits (the message names the class, using `class_names` if given),
    or when the fractions are invalid.
    """
    fracs = check_fractions(fractions)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InvalidArgument(f"labels must be one-dimensional, got shape {labels.shape}")
    names = list(fracs)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if members.size < len(names):
            label = class_names[int(cls)] if class_names is not None else str(cls)
            raise InvalidArgument(
                f"class {label!r} has {members.size} item(s); splits {', '.join(names)} need at least "
                f"{len(names)} per class"
            )
        shuffled = rng.permutation(members)
        counts = _allocate(members.size, [fracs[n] for n in names])
        start = 0
        for name, count in zip(names, counts, strict=True):
            parts[name].append(shuffled[start : start + count])
            start += int(count)
    return {
        name: np.sort(np.concatenate(chunks)).astype(np.int64) if chunks else np.zeros(0, np.int64)
        for name, chunks in parts.items()
    }
