"""TensorRT engines for the cluster Triton (tensorrt_plan platform), built from the exported ONNX file.

Needs the `tensorrt` Python package and a CUDA GPU; without them every entry point raises
FailedPrecondition("TensorRT unavailable: <reason>") so callers (and `gpu` tests) can skip cleanly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from bobench.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
_TRT_VARIANT_PREFIX = "trt-"


def precision_of_variant(embedder_variant: str) -> str:
    """The precision features of an `embedder_variant` are computed in: "fp32" for "onnx" (ONNX
    Runtime, torch and Triton's ONNX model all run fp32), the engine's for "trt-fp16"/"trt-fp32"
    (`bob publish` builds the engine at that precision). Recorded with the run and part of the
    feature-cache key. Raises InvalidArgument for any other variant.
    """
    if embedder_variant == "onnx":
        return "fp32"
    precision = embedder_variant.removeprefix(_TRT_VARIANT_PREFIX)
    if embedder_variant.startswith(_TRT_VARIANT_PREFIX) and precision in PRECISIONS:
        return precision
    raise InvalidArgument(
        f"embedder_variant {embedder_variant!r} has no known precision (onnx, "
        f"{', '.join(_TRT_VARIANT_PREFIX + p for p in PRECISIONS)})"
    )


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when TensorRT and a CUDA device are usable, else (False, why not)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return False, f"the tensorrt package is not installed ({exc})"
    try:
        import torch
    except ImportError:
        return False, "torch (used for CUDA buffers) is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device is visible"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"


def _require_tensorrt():
    ok, reason = tensorrt_available()
    if not ok:
        raise FailedPrecondition(f"TensorRT unavailable: {reason}")
    import tensorrt as trt

    return trt


def build_engine(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int = 16,
    max_batch: int = 64,
    workspace_mib: int = 2048,
) -> Path:
    """Build a serialized TensorRT engine for the ONNX file; return `out_path`.

    The batch dimension gets one optimisation profile (min/opt/max); the image dims are taken from the
    ONNX input. Raises FailedPrecondition without TensorRT/GPU, NotFound for a missing file and
    InvalidArgument when TensorRT cannot parse the graph or the batch bounds are inconsistent.
    """
    if precision not in PRECISIONS:
        raise InvalidArgument(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise InvalidArgument(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}/{opt_batch}/{max_batch}"
        )
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise NotFound(f"ONNX file {onnx_path} does not exist")
    trt = _require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InvalidArgument(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    image_input = network.get_input(0)
    _, *chw = tuple(image_input.shape)
    profile = builder.create_optimization_profile()
    profile.set_shape(image_input.name, (min_batch, *chw), (opt_batch, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InvalidArgument(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(bytes(serialized))
    log.info(
        "built TensorRT %s engine %s (batch %d/%d/%d)", precision, out_path, min_batch, opt_batch, max_batch
    )
    return out_path


def run_engine(plan_path: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Run one batch through a serialized engine on the GPU; returns float32 [N, D]."""
    trt = _require_tensorrt()
    import torch

    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise NotFound(f"TensorRT plan {plan_path} does not exist")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise InvalidArgument(f"{plan_path}: not a TensorRT engine for this TensorRT version/GPU")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    in_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    x = torch.from_numpy(np.ascontiguousarray(images)).cuda()
    context.set_input_shape(in_name, tuple(x.shape))
    out_shape = tuple(context.get_tensor_shape(out_name))
    out_dtype = torch.float16 if engine.get_tensor_dtype(out_name) == trt.DataType.HALF else torch.float32
    y = torch.empty(out_shape, dtype=out_dtype, device="cuda")
    context.set_tensor_address(in_name, x.data_ptr())
    context.set_tensor_address(out_name, y.data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise InvalidArgument(f"{plan_path}: TensorRT execution failed for input shape {list(x.shape)}")
    stream.synchronize()
    return y.float().cpu().numpy()


def verify_engine(
    plan_path: str | os.PathLike,
    onnx_path: str | os.PathLike,
    images: np.ndarray,
    *,
    atol: float = 1e-2,
) -> dict[str, Any]:
    """Compare engine outputs with ONNX Runtime on the same images.

    Returns {"max_abs_diff", "mean_abs_diff", "cosine_min", "atol", "ok"}; fp16 engines need a looser
    `atol` than fp32 ones. Raises FailedPrecondition without TensorRT/GPU.
    """
    import onnxruntime as ort

    trt_out = run_engine(plan_path, images)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ref,) = session.run(None, {session.get_inputs()[0].name: images})
    ref = np.asarray(ref, dtype=np.float32)
    diff = np.abs(trt_out - ref)
    cos = np.sum(trt_out * ref, axis=1) / (
        np.linalg.norm(trt_out, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12
    )
    max_abs = float(diff.max()) if diff.size else 0.0
    return {
        "max_abs_diff": max_abs,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "cosine_min": float(cos.min()) if cos.size else 1.0,
        "atol": atol,
        "ok": max_abs <= atol,
    }
