"""Data roots: the local directories client-supplied paths may point into, and remote-code opt-ins.

Every local path a client names (an ImageFolder root, a manifest and the images its rows name,
WebDataset shards and `classes.txt`, a torchvision `root`, a backbone's weights or ONNX file, the
ONNX external-data files it loads) goes through `check_path(path, what)` before anything reads it:
the path is resolved (`Path.resolve()`: `..` collapsed, symlinks followed) and refused with
PermissionDenied naming the `data_roots` setting when it lies outside every allowed root. The check
comes before any existence test, so a refused path tells nothing about what exists there.

The policy is process-wide and set once at the process edge by `bobench.data.configure(settings,
service=...)`:

* `data_roots` set (env `BOBENCH_DATA_ROOTS`, `os.pathsep`-separated, or a YAML list): paths must lie
  under one of them or under `cache_dir` (where bundled and fetched datasets, blobs and weights live);
* services (`service=True`: the evaluator and the scheduler) without `data_roots`: only `cache_dir`.
  The working directory is deliberately not a default root: a daemon's working directory is whatever
  its supervisor chose, `/` in many containers, which would allow everything;
* the local CLI without `data_roots` (and a process that never called `configure`): unrestricted,
  since the user reads their own files on their own machine.

Named datasets (`toy`, `mnist`, the emoji sets, ...) are built from paths the server chooses and are
never checked. `torch.hub` runs the hub repository's `hubconf.py`, so a `torchhub` backbone is
refused (PermissionDenied) unless the setting `allow_torchhub` is true (`check_torchhub`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from bobench.errors import PermissionDenied


@dataclass(frozen=True)
class PathPolicy:
    """Where client paths may point: `roots` (resolved), or anywhere when `roots` is None."""

    roots: tuple[Path, ...] | None = None
    allow_torchhub: bool = False


_lock = threading.Lock()
_policy = PathPolicy()


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def policy_for(
    data_roots: tuple[str, ...], cache_dir: str, *, service: bool, allow_torchhub: bool
) -> PathPolicy:
    """The policy of the module docstring for these settings values."""
    if not data_roots and not service:
        return PathPolicy(None, allow_torchhub)
    roots = [_resolve(r) for r in data_roots if str(r).strip()]
    if cache_dir:
        roots.append(_resolve(cache_dir))
    return PathPolicy(tuple(dict.fromkeys(roots)), allow_torchhub)


def set_policy(policy: PathPolicy) -> None:
    global _policy
    with _lock:
        _policy = policy


def current_policy() -> PathPolicy:
    with _lock:
        return _policy


def reset() -> None:
    """Back to unrestricted, torch.hub refused (tests)."""
    set_policy(PathPolicy())


def is_restricted() -> bool:
    return current_policy().roots is not None


def check_path(path: str | os.PathLike, what: str) -> Path:
    """`path` resolved, when it lies under an allowed root (module docstring); else PermissionDenied
    naming `what` (e.g. "imagefolder", "manifest m.csv: row 3: field 'path'") and the setting.

    The message names the path only as `what` gives it: callers whose path came out of a file's
    contents say where it came from instead of quoting it.
    """
    roots = current_policy().roots
    resolved = _resolve(path)
    if roots is None:
        return resolved
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    raise PermissionDenied(
        f"{what}: the path is outside the data roots this service may read; an operator can add its "
        "folder to the data_roots setting (BOBENCH_DATA_ROOTS)"
    )


def check_torchhub(backbone: str) -> None:
    """PermissionDenied unless `allow_torchhub` is set: torch.hub executes the repository's code."""
    if not current_policy().allow_torchhub:
        raise PermissionDenied(
            f"backbone {backbone!r}: source 'torchhub' runs remote code (the hub repository's hubconf.py); "
            "refused unless the allow_torchhub setting is true"
        )
