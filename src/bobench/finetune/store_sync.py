"""Keep a fine-tuning run's checkpoints in the artifact store, so a retried pod on another node resumes.

`CheckpointSync(store, prefix, local_dir)`: `restore()` downloads `<prefix>/last.pt` and `best.pt` into
`local_dir` before training (the loop then resumes from `last.pt`, bit-identically on CPU); `push()`
uploads them after each epoch (`best.pt` first, so a stored `last.pt` never refers to a newer best
than the stored one). Use `push` as (or inside) the loop's `progress` callback: it is called after the
epoch's checkpoints are on local disk. Store errors propagate (Unavailable for an unreachable store).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bobench.finetune.checkpoint import BEST, LAST
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)


class CheckpointSync:
    """Mirror of `local_dir/{best,last}.pt` at `store:<prefix>/`."""

    def __init__(self, store: ArtifactStore, prefix: str, local_dir: str | Path) -> None:
        self.store, self.prefix, self.local_dir = store, prefix.rstrip("/"), Path(local_dir)
        self._pushed: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, size) last uploaded

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def restore(self) -> int:
        """Download the stored checkpoints (if any) into `local_dir`; returns how many were fetched."""
        fetched = 0
        for name in (BEST, LAST):
            if self.store.exists(self.key(name)):
                path = self.local_dir / name
                tmp = path.with_name(f".{name}.download")
                self.store.get_file(self.key(name), tmp)
                os.replace(tmp, path)
                self._pushed[name] = _signature(path)
                fetched += 1
        if fetched:
            log.info("restored %d checkpoint(s) from %s", fetched, self.key(""))
        return fetched

    def push(self) -> int:
        """Upload the checkpoints that changed since the last push; returns how many were uploaded."""
        uploaded = 0
        for name in (BEST, LAST):
            path = self.local_dir / name
            if not path.exists() or self._pushed.get(name) == _signature(path):
                continue
            self.store.put_file(self.key(name), path)
            self._pushed[name] = _signature(path)
            uploaded += 1
        return uploaded


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size
