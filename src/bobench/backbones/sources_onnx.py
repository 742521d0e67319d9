"""ONNX-source backbones: an existing ONNX network composed with the spec's preprocessing.

The composed graph takes the contract's input (`bobench.tensors.INPUT_NAME`: uint8 or float32
[N, 3, S, S], 0..255 RGB), applies the same cast / scale / mean-std / BGR / NHWC steps as
PreprocessingWrapper in ONNX ops, runs the original network cut at `spec.output_name`, and returns
the contract's output (OUTPUT_NAME, float32 [N, D]). Every tensor the composition adds is named with
RESERVED_PREFIX, and a user graph that already uses that prefix is refused, so no name of the user's
network can collide with ours.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from bobench.backbones.factory import LoadedBackbone
from bobench.backbones.spec import BackboneSpec
from bobench.backbones.weights import resolve_weights_file, verify_declared_digest, weights_file_digest
from bobench.errors import InvalidArgument
from bobench.tensors import CONTRACT_VERSION, INPUT_NAME, OUTPUT_NAME, RESERVED_PREFIX

log = logging.getLogger(__name__)

_DTYPES = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}
_PRE = RESERVED_PREFIX + "pre_"  # the preprocessing tensors and initialisers


def raw_onnx_file(spec: BackboneSpec) -> Path:
    """The unmodified network file: package/file/s3 weights, else model_id as a path."""
    if spec.weights in ("random", "hub"):
        raise InvalidArgument(f"backbone {spec.name!r}: an ONNX source needs a file, package or s3 weights")
    return resolve_weights_file(spec)


def manual_preprocess(images: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    """numpy reference of the composed preprocessing (used to verify the composed graph)."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(
        spec.std, np.float32
    ).reshape(1, 3, 1, 1)
    if spec.channel_order == "BGR":
        x = x[:, ::-1]
    if spec.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _preprocessing_graph(
    spec: BackboneSpec, input_dtype: str, opset: int, ir_version: int, out_name: str
) -> onnx.ModelProto:
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    inits = [
        numpy_helper.from_array((1.0 / (255.0 * std)).astype(np.float32), _PRE + "scale"),
        numpy_helper.from_array((mean / std).astype(np.float32), _PRE + "shift"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], [_PRE + "float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [_PRE + "float", _PRE + "scale"], [_PRE + "scaled"]),
        helper.make_node("Sub", [_PRE + "scaled", _PRE + "shift"], [_PRE + "norm"]),
    ]
    last = _PRE + "norm"
    if spec.channel_order == "BGR":
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), _PRE + "bgr"))
        nodes.append(helper.make_node("Gather", [last, _PRE + "bgr"], [_PRE + "bgr_out"], axis=1))
        last = _PRE + "bgr_out"
    nodes.append(
        helper.make_node(
            "Transpose" if spec.layout == "NHWC" else "Identity",
            [last],
            [out_name],
            **({"perm": [0, 2, 3, 1]} if spec.layout == "NHWC" else {}),
        )
    )
    size = spec.input_size
    out_shape = ["batch", size, size, 3] if spec.layout == "NHWC" else ["batch", 3, size, size]
    graph = helper.make_graph(
        nodes,
        RESERVED_PREFIX + "preprocess",
        [helper.make_tensor_value_info(INPUT_NAME, _DTYPES[input_dtype], ["batch", 3, size, size])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def _cut_at(raw: onnx.ModelProto, raw_input: str, feature: str, embed_dim: int | None) -> onnx.ModelProto:
    """Copy of `raw` keeping only the nodes `feature` depends on, renamed to the contract's output."""
    needed, kept = {feature}, []
    for node in reversed(raw.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    kept.append(helper.make_node("Identity", [feature], [OUTPUT_NAME]))
    graph = helper.make_graph(
        kept,
        raw.graph.name or "network",
        [i for i in raw.graph.input if i.name == raw_input],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", embed_dim])],
        initializer=[t for t in raw.graph.initializer if t.name in needed],
    )
    net = helper.make_model(graph, opset_imports=list(raw.opset_import))
    net.ir_version = raw.ir_version
    return net


def _refuse_reserved_names(raw: onnx.ModelProto, spec: BackboneSpec) -> None:
    """InvalidArgument when a tensor of the user's graph bears our prefix (it could collide with ours)."""
    graph = raw.graph
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    taken = sorted(n for n in names if n.startswith(RESERVED_PREFIX))
    if taken:
        raise InvalidArgument(
            f"backbone {spec.name!r}: the ONNX network names tensors {taken[:3]} with the prefix "
            f"{RESERVED_PREFIX!r}, which bobench reserves for its own tensors; rename them"
        )


def compose_with_preprocessing(
    raw: onnx.ModelProto, spec: BackboneSpec, input_dtype: str = "uint8"
) -> onnx.ModelProto:
    """One graph: preprocessing -> raw network cut at spec.output_name -> the contract's output."""
    if input_dtype not in _DTYPES:
        raise InvalidArgument(f"input_dtype must be one of {sorted(_DTYPES)}, got {input_dtype!r}")
    if (
        len(raw.graph.input)
        - len({i.name for i in raw.graph.initializer} & {i.name for i in raw.graph.input})
        != 1
    ):
        raise InvalidArgument(f"backbone {spec.name!r}: the ONNX network must have exactly one image input")
    raw_input = next(i.name for i in raw.graph.input if i.name not in {t.name for t in raw.graph.initializer})
    feature = spec.output_name or raw.graph.output[0].name
    known = {o for n in raw.graph.node for o in n.output}
    if feature not in known:
        raise InvalidArgument(
            f"backbone {spec.name!r}: output_name {feature!r} is not a tensor of the ONNX graph"
        )
    _refuse_reserved_names(raw, spec)
    net = _cut_at(raw, raw_input, feature, spec.embed_dim)
    pre = _preprocessing_graph(spec, input_dtype, _opset(raw), raw.ir_version, out_name=_PRE + "out")
    merged = compose.merge_models(pre, net, io_map=[(_PRE + "out", raw_input)])
    onnx.checker.check_model(merged)
    return merged


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write next to `path` then rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def composed_path(spec: BackboneSpec, raw_path: Path, cache_dir: Path, input_dtype: str = "uint8") -> Path:
    """Build (once) and return the composed file for `raw_path`, cached by the digest of every file it
    loads (external data included), the spec digest and the tensor contract's version."""
    raw_sha = weights_file_digest(raw_path)
    filled = spec.replace(weights_sha256=raw_sha)
    out = (
        Path(cache_dir)
        / "onnx-sources"
        / f"{spec.name}-{filled.digest()}-c{CONTRACT_VERSION}-{input_dtype}.onnx"
    )
    if not out.exists():
        save_atomic(compose_with_preprocessing(onnx.load(str(raw_path)), spec, input_dtype), out)
        log.info("composed %s with preprocessing -> %s", raw_path, out)
    return out


def load_onnx(spec: BackboneSpec, cache_dir: Path | None = None) -> LoadedBackbone:
    """LoadedBackbone with onnx_path (composed, uint8 input) and raw_onnx_path; params counted from initializers."""
    raw_path = raw_onnx_file(spec)
    raw_sha = weights_file_digest(raw_path)
    verify_declared_digest(spec, raw_sha)  # before it is composed or onnxruntime loads it
    path = composed_path(spec, raw_path, Path(cache_dir or tempfile.gettempdir()))
    model = onnx.load(str(path), load_external_data=False)
    num_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if not t.name.startswith(_PRE))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = np.zeros((1, 3, spec.input_size, spec.input_size), np.uint8)
    embed_dim = int(session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0].reshape(1, -1).shape[1])
    if spec.embed_dim is not None and spec.embed_dim != embed_dim:
        raise InvalidArgument(
            f"backbone {spec.name!r}: spec says embed_dim={spec.embed_dim}, graph gives {embed_dim}"
        )
    filled = spec.replace(weights_sha256=raw_sha, num_params=num_params, embed_dim=embed_dim)
    return LoadedBackbone(spec=filled, onnx_path=path, raw_onnx_path=raw_path)
