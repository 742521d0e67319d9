"""What a record says about its backbone, the same whether its features came from the cache or not.

Parameter count, feature dimension and weights digest are measured when a backbone is loaded, but a
run whose features are all cached never loads it. So the measured fields are kept next to the
feature cache (`<cache_dir>/backbones/<name>-<digest>.json`, keyed by the spec digest that also keys
the features) the first time the backbone is loaded, and every record fills its spec from them. A
backbone whose facts were never kept (a cache filled by an older version or another host) is loaded
once to measure them. Files are written atomically; an unreadable one is measured again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from bobench.backbones.spec import BackboneSpec
from bobench.errors import BobenchError

log = logging.getLogger(__name__)

MEASURED = ("num_params", "embed_dim", "weights_sha256")  # filled in by loading the backbone


class BackboneFacts:
    """Measured backbone fields per spec digest, on disk under `cache_dir/backbones/` and in memory."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.root = Path(cache_dir) / "backbones"
        self._known: dict[str, dict] = {}

    def _path(self, spec: BackboneSpec) -> Path:
        return self.root / f"{spec.name}-{spec.digest()}.json"

    def keep(self, spec: BackboneSpec, loaded: BackboneSpec) -> None:
        """Remember what loading `spec` measured (`loaded` is the factory's filled-in spec)."""
        facts = {k: getattr(loaded, k) for k in MEASURED}
        if self._known.get(spec.digest()) == facts:
            return
        self._known[spec.digest()] = facts
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(facts, fh, sort_keys=True)
            os.replace(tmp, self._path(spec))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, spec: BackboneSpec) -> dict | None:
        if spec.digest() in self._known:
            return self._known[spec.digest()]
        try:
            facts = json.loads(self._path(spec).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(facts, dict):
            return None
        self._known[spec.digest()] = facts
        return facts

    def fill(self, spec: BackboneSpec, measure: Callable[[], BackboneSpec]) -> BackboneSpec:
        """`spec` with its measured fields as loading measured them (as the factory fills them in),
        measuring (and keeping) them with `measure()` when none are kept. A backbone that cannot be
        loaded here leaves the spec as it is (logged, once per process)."""
        facts = self._read(spec)
        if facts is None:
            try:
                loaded = measure()
            except (BobenchError, ImportError) as exc:
                log.warning("backbone %s: cannot measure params/digest for its records: %s", spec.name, exc)
                self._known[spec.digest()] = {}  # not retried by this process
                return spec
            self.keep(spec, loaded)
            facts = self._known[spec.digest()]
        filled = {k: facts[k] for k in MEASURED if facts.get(k) is not None}
        return spec.replace(**filled) if filled else spec
