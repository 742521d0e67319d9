"""In-process ONNX Runtime embedder: the default runtime, and the same graph Triton serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bobench.backbones import BackboneSpec, LoadedBackbone, create_backbone
from bobench.embed.base import Embedder
from bobench.errors import InvalidArgument
from bobench.stage_timer import add_count, stage
from bobench.tensors import INPUT_NAME, OUTPUT_NAME
from bobench.threads import session_threads


class OrtEmbedder(Embedder):
    """Embeds with an ONNX Runtime CPU session on a graph that satisfies the tensor contract.

    The graph is `onnx_path` when given, the composed file of an ONNX-source backbone, or a verified
    export of a torch backbone from `export_cached` (under `cache_dir`, default the settings' cache).
    Float batches are accepted for a uint8 graph only when they hold whole pixel values 0..255.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        backbone: str | BackboneSpec | LoadedBackbone,
        batch_size: int = 32,
        threads: int = 0,
        cache_dir: str | Path | None = None,
        onnx_path: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        from bobench.export.onnx_export import export_cached, ort_session

        if cache_dir is None:  # the default one; processes pass their resolved settings' cache_dir
            from bobench.config import Settings

            cache_dir = Settings().cache_dir
        with stage("backbone_load"):
            loaded = (
                backbone
                if isinstance(backbone, LoadedBackbone)
                else create_backbone(backbone, cache_dir=cache_dir)
            )
        super().__init__(loaded.spec, batch_size=batch_size)
        self.export_report = None
        if onnx_path is not None:
            path = Path(onnx_path)
        elif loaded.onnx_path is not None:
            path = loaded.onnx_path
        else:
            with stage("export_verify"):
                self.export_report = export_cached(loaded, cache_dir)
            path = self.export_report.path
        self.onnx_path = path
        self.threads = session_threads(threads)
        with stage("ort_session"):
            self.session = ort_session(path, self.threads)
        add_count(f"ort_sessions:{loaded.spec.name}", 1)
        self.input_dtype = "uint8" if self.session.get_inputs()[0].type == "tensor(uint8)" else "float32"
        self._ort_version = ort.__version__

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        if self.input_dtype == "uint8" and batch.dtype != np.uint8:
            if batch.size and (batch.min() < 0 or batch.max() > 255 or not np.all(batch == np.round(batch))):
                raise InvalidArgument(
                    f"{self.spec.name!r}: graph {self.onnx_path} takes uint8 pixels; got {batch.dtype} values "
                    "that are not whole numbers in 0..255 (export with input_dtype='float32')"
                )
            batch = batch.astype(np.uint8)
        elif self.input_dtype == "float32":
            batch = batch.astype(np.float32, copy=False)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch)})[0]

    def describe(self) -> dict:
        return {
            **super().describe(),
            "threads": self.threads,
            "onnxruntime": self._ort_version,
            "batch_size": self.batch_size,
            "input_dtype": self.input_dtype,
            "model": str(self.onnx_path),
        }

    def close(self) -> None:
        self.session = None


def make_ort_embedder(backbone: str | BackboneSpec | LoadedBackbone, **options) -> OrtEmbedder:
    return OrtEmbedder(backbone, **options)
