"""Atomic checkpoints and random-number-generator state for resumable fine-tuning.

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed over
the old one, so a process killed at any instant leaves either the previous complete checkpoint or the
new complete one — never a truncated file that looks valid. Everything stored is a tensor or a plain
Python value, so checkpoints load with `torch.load(weights_only=True)` (no pickle code execution).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bobench.errors import FailedPrecondition

LAST = "last.pt"
BEST = "best.pt"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; status and metrics are read by other users/sidecars
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (tensors and plain values) to `path` atomically."""
    _atomic_write(Path(path), lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; FailedPrecondition naming the file if unreadable."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure means the file is not a checkpoint of ours
        raise FailedPrecondition(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a small text file atomically (status files, metrics.json)."""
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python's `random`, as plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only when CUDA is present)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block with the global RNGs free to reseed; their previous states come back afterwards."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def check_identity(saved: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Refuse to resume from a checkpoint of a different run (backbone, data, config or seed)."""
    for key in sorted(set(saved) | set(expected)):
        if saved.get(key) != expected.get(key):
            raise FailedPrecondition(
                f"checkpoint {path} belongs to a different run ({key}: {saved.get(key)!r} there, "
                f"{expected.get(key)!r} now); use another output directory or --no-resume"
            )
