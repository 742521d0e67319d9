"""Export: ONNX export with verification and a content-keyed cache (TensorRT and Triton repos build on it)."""

from bobench.export.onnx_export import (
    ExportReport,
    ExportVerificationError,
    export_backbone,
    export_cached,
    export_onnx,
)

__all__ = ["ExportReport", "ExportVerificationError", "export_backbone", "export_cached", "export_onnx"]
