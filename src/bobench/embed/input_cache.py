"""Model inputs decoded and resized once per input resolution, shared by the runs that read them.

An image's uint8 model input depends only on the image and the backbone's preprocessing
(`preprocess_key`: input size, crop fraction, interpolation), so backbones that share it (in the demo
EfficientNet-Lite0, its random twin, ResNet-18 and ConvNeXt-Atto all take 224 px bicubic at crop
0.875) can share the input too, and a corruption sweep, which corrupts the same input once per
corruption and severity, needs it prepared once. A battle's executor says which backbones are still
to come (`expect`); an input is kept while a later backbone with the same preprocessing will read it,
or for the rest of its run when the run asks (`reuse_in_run`: the ood protocol's variants), and
dropped when neither holds (`end_run`). At most `max_bytes` are held: beyond that a new input is not
kept (it is prepared again when needed, as without the cache). Kept arrays are read-only, so no
reader can change what another one reads. Without `expect` (an evaluator serving single runs) only
the run-scoped inputs are kept, until their run ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import numpy as np

from bobench.backbones.spec import BackboneSpec
from bobench.stage_timer import add_count

log = logging.getLogger(__name__)

PreprocessKey = tuple[int, float, str]


def preprocess_key(spec: BackboneSpec) -> PreprocessKey:
    """What `embed.preprocess.resize_crop` reads of a backbone spec: equal keys, equal inputs."""
    return (int(spec.input_size), float(spec.crop_pct), str(spec.interpolation))


class PreparedInputs:
    """Prepared model inputs by (preprocessing, dataset fingerprint, item), bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._entries: dict[tuple[PreprocessKey, str, int], np.ndarray] = {}
        self._bytes = 0
        self._waiting: dict[PreprocessKey, set[str]] = {}  # preprocessing -> backbones still to run
        self._full_warned = False

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def expect(self, backbones: Mapping[str, PreprocessKey]) -> None:
        """The backbones still to run, with their preprocessing (replaces what was expected before);
        inputs of a preprocessing none of them uses are dropped."""
        with self._lock:
            self._waiting = {}
            for name, key in backbones.items():
                self._waiting.setdefault(key, set()).add(name)
            self._drop_unused()

    def end_run(self, backbone: str, last: bool) -> None:
        """A run of `backbone` ended (`last`: its last one in this battle): inputs no backbone still
        to run shares are dropped, run-scoped ones included."""
        with self._lock:
            if last:
                for names in self._waiting.values():
                    names.discard(backbone)
            self._drop_unused()

    def clear(self) -> None:
        with self._lock:
            self._waiting, self._entries, self._bytes = {}, {}, 0

    def get(
        self,
        backbone: str,
        key: PreprocessKey,
        dataset: str,
        item: int,
        prepare: Callable[[], np.ndarray],
        reuse_in_run: bool = False,
    ) -> np.ndarray:
        """Item `item` of the dataset with fingerprint `dataset` as `backbone`'s input: the kept array,
        else `prepare()`, kept (read-only) when it fits and another backbone still to run shares `key`
        or the run will read it again (`reuse_in_run`)."""
        entry = (key, dataset, item)
        with self._lock:
            found = self._entries.get(entry)
        if found is not None:
            add_count("inputs_reused", 1)
            return found
        image = prepare()
        add_count("inputs_prepared", 1)
        with self._lock:
            if not reuse_in_run and not self._waiting.get(key, set()) - {backbone}:
                return image
            if self._bytes + image.nbytes > self.max_bytes:
                if not self._full_warned:
                    log.info(
                        "input cache full (%d MiB, setting input_cache_mb): further inputs are prepared "
                        "again for each backbone",
                        self.max_bytes >> 20,
                    )
                    self._full_warned = True
                return image
            image.setflags(write=False)
            self._entries[entry] = image
            self._bytes += image.nbytes
        return image

    def _drop_unused(self) -> None:
        """(Lock held.) Forget inputs whose preprocessing no waiting backbone uses."""
        live = {key for key, names in self._waiting.items() if names}
        for entry in [e for e in self._entries if e[0] not in live]:
            self._bytes -= self._entries.pop(entry).nbytes
