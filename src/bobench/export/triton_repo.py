"""Triton model-repository generation, derived from the BackboneSpec (never hand-written).

Layout of one entry (`<repo>/<model>/`)::

    config.pbtxt      tritonclient's ModelConfig, written with protobuf text_format
    bobench.json      spec, file digest, export report: what was served and where it came from
    N/model.onnx      (local and cluster onnxruntime variants)
    N/model.py        (local variant: bobench's versioned python-backend template)
    N/model.plan      (cluster TensorRT variant)

`N` is 1 for a hand-built repository; `bob publish` writes a content-addressed version and pins it
with `version_policy { specific { versions: [N] } }` so Triton serves exactly that export.

The local variant targets the `tritonserver` shipped in nvidia-pytriton, which only has the python
backend: its `model.py` runs ONNX Runtime on the same ONNX file. The cluster variant targets NVIDIA's
Triton image with the onnxruntime / TensorRT backends. Both serve the same tensor contract.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bobench.backbones.spec import BackboneSpec
from bobench.errors import InvalidArgument, NotFound
from bobench.hashing import sha256_file
from bobench.tensors import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

VARIANTS = ("local", "cluster")
EMBEDDER_VARIANTS = ("onnx", "trt-fp16", "trt-fp32")  # what a battle's `embedder_variant` selects
INSTANCE_KINDS = ("cpu", "gpu")
PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
INPUT_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}
_ONNX_ELEM_TYPES = {"uint8": 2, "float32": 1}  # onnx.TensorProto.UINT8 / FLOAT
TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "serving" / "python_backend" / "model.py"
TEMPLATE_VERSION = "2"  # must equal TEMPLATE_VERSION inside the template file
METADATA_FILE = "bobench.json"
SPEC_PARAMETER = "bobench_spec"  # config parameter carrying the spec JSON, so clients can read it
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]")


def model_name_for(spec: BackboneSpec) -> str:
    """The Triton model name of a backbone: its spec name with characters Triton dislikes replaced."""
    return _NAME_OK.sub("_", spec.name)


def served_model_name(spec: BackboneSpec | str, embedder_variant: str = "onnx") -> str:
    """The Triton model an `embedder_variant` of a backbone (spec or name) is published and requested
    under.

    ONNX keeps `model_name_for(spec)`; TensorRT variants append the variant ("toy-trt-fp16"). The
    publisher and the Triton embedder both call this, so they can never disagree. Raises
    InvalidArgument for an unknown variant.
    """
    if embedder_variant not in EMBEDDER_VARIANTS:
        raise InvalidArgument(
            f"embedder_variant must be one of {list(EMBEDDER_VARIANTS)}, got {embedder_variant!r}"
        )
    base = _NAME_OK.sub("_", spec.name if isinstance(spec, BackboneSpec) else str(spec))
    return base if embedder_variant == "onnx" else f"{base}-{embedder_variant}"


def build_model_config(
    spec: BackboneSpec,
    *,
    model_name: str,
    variant: str = "local",
    platform: str = "onnxruntime_onnx",
    input_dtype: str = "uint8",
    max_batch_size: int = 64,
    preferred_batch_sizes: Sequence[int] = (8, 16, 32),
    max_queue_delay_us: int = 100,
    instances: int = 1,
    intra_op_threads: int = 0,
    version: int | None = None,
    instance_kind: str | None = None,
    dynamic_batching: bool = True,
):
    """The ModelConfig message for `spec`; raises InvalidArgument on an inconsistent request.

    `version` pins `version_policy { specific { versions: [version] } }`; `instance_kind` ("cpu" or
    "gpu") defaults to cpu for the local variant and gpu for the cluster one. `dynamic_batching`
    False leaves the scheduler out (each request runs as sent; preferred sizes and delay unused).
    """
    from tritonclient.grpc import model_config_pb2 as mc

    _check_options(
        spec,
        variant,
        platform,
        input_dtype,
        max_batch_size,
        preferred_batch_sizes,
        max_queue_delay_us,
        instances,
    )
    config = mc.ModelConfig(name=model_name, max_batch_size=max_batch_size)
    if variant == "local":
        config.backend = "python"
    else:
        config.platform = platform
    size = spec.input_size
    config.input.add(name=INPUT_NAME, data_type=getattr(mc, INPUT_DTYPES[input_dtype]), dims=[3, size, size])
    config.output.add(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[int(spec.embed_dim)])
    if not isinstance(dynamic_batching, bool):
        raise InvalidArgument(f"dynamic_batching must be true or false, got {dynamic_batching!r}")
    if dynamic_batching:
        config.dynamic_batching.preferred_batch_size.extend(sorted(set(preferred_batch_sizes)))
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    kind = instance_kind or ("cpu" if variant == "local" else "gpu")
    if kind not in INSTANCE_KINDS:
        raise InvalidArgument(f"instance_kind must be one of {INSTANCE_KINDS}, got {kind!r}")
    if variant == "local" and kind != "cpu":
        raise InvalidArgument(
            "the local variant (python backend running ORT on CPU) needs instance_kind 'cpu'"
        )
    config.instance_group.add(
        kind=mc.ModelInstanceGroup.KIND_CPU if kind == "cpu" else mc.ModelInstanceGroup.KIND_GPU,
        count=instances,
    )
    if version is not None:
        if version < 1:
            raise InvalidArgument(f"model version must be >= 1, got {version}")
        config.version_policy.specific.versions.append(version)
    params = {SPEC_PARAMETER: json.dumps(spec.to_dict(), sort_keys=True)}
    if variant == "local":
        params.update(
            onnx_file="model.onnx",
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            intra_op_threads=str(intra_op_threads),
            template_version=TEMPLATE_VERSION,
        )
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def write_model_repository(
    spec: BackboneSpec,
    onnx_path: str | os.PathLike,
    repo_dir: str | os.PathLike,
    *,
    variant: str = "local",
    platform: str = "onnxruntime_onnx",
    input_dtype: str = "uint8",
    max_batch_size: int = 64,
    preferred_batch_sizes: Sequence[int] = (8, 16, 32),
    max_queue_delay_us: int = 100,
    instances: int = 1,
    model_name: str | None = None,
    intra_op_threads: int = 0,
    plan_path: str | os.PathLike | None = None,
    export_report: dict[str, Any] | None = None,
    version: int = 1,
    pin_version: bool = False,
    instance_kind: str | None = None,
    trt_precision: str = "fp16",
    extra_metadata: dict[str, Any] | None = None,
    dynamic_batching: bool = True,
) -> Path:
    """Write (or replace) the repository entry of `spec` under `repo_dir`; return the model directory.

    `onnx_path` is checked against the spec (input dtype and [3, S, S] dims, output width) before
    anything is written. For `platform="tensorrt_plan"` the engine is `plan_path`, or is built from the
    ONNX file with `bobench.export.tensorrt.build_engine` at `trt_precision` (FailedPrecondition
    without TensorRT + GPU). The files go to version directory `version`; `pin_version` writes the
    version policy that makes Triton serve exactly it. `extra_metadata` is merged into bobench.json.
    Raises NotFound for a missing file and InvalidArgument for an inconsistent spec/option/ONNX file.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise NotFound(f"ONNX file {onnx_path} does not exist")
    name = model_name or model_name_for(spec)
    if _NAME_OK.search(name):
        raise InvalidArgument(f"model_name {name!r} may only contain letters, digits, '_', '.', '-'")
    config = build_model_config(
        spec,
        model_name=name,
        variant=variant,
        platform=platform,
        input_dtype=input_dtype,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        intra_op_threads=intra_op_threads,
        version=version if pin_version else None,
        instance_kind=instance_kind,
        dynamic_batching=dynamic_batching,
    )
    check_onnx_contract(onnx_path, spec, input_dtype)
    onnx_sha256 = sha256_file(onnx_path)

    model_dir = Path(repo_dir) / name
    staging = Path(repo_dir) / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    version_dir = staging / str(version)
    version_dir.mkdir(parents=True)
    try:
        model_file = _place_model_files(
            version_dir, onnx_path, variant, platform, plan_path, max_batch_size, trt_precision
        )
        _write_config(config, staging / "config.pbtxt")
        meta = {
            "model_name": name,
            "variant": variant,
            "platform": "python" if variant == "local" else platform,
            "input_dtype": input_dtype,
            "model_file": f"{version}/{model_file}",
            "version": version,
            "onnx_sha256": onnx_sha256,
            "template_version": TEMPLATE_VERSION if variant == "local" else None,
            "spec": spec.to_dict(),
            "export": export_report,
            **(extra_metadata or {}),
        }
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)
    log.info(
        "wrote Triton model %s (%s, %s, %s input) to %s",
        name,
        variant,
        meta["platform"],
        input_dtype,
        model_dir,
    )
    return model_dir


def read_model_config(path: str | os.PathLike):
    """Parse a config.pbtxt (or a model directory holding one) into a tritonclient ModelConfig.

    Raises NotFound when the file is missing and InvalidArgument (with the file and the parser's
    line:column message) when it does not parse.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    p = Path(path)
    if p.is_dir():
        p = p / "config.pbtxt"
    if not p.is_file():
        raise NotFound(f"Triton model config {p} does not exist")
    try:
        return text_format.Parse(p.read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise InvalidArgument(f"{p}: not a valid Triton ModelConfig: {exc}") from None


def read_model_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The bobench.json of a repository entry (NotFound / InvalidArgument naming the file)."""
    p = Path(model_dir) / METADATA_FILE
    if not p.is_file():
        raise NotFound(f"{p} does not exist (not a bobench-generated model directory)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{p}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def list_models(repo_dir: str | os.PathLike) -> list[str]:
    """Names of the model directories (those holding a config.pbtxt) in a repository, sorted."""
    repo = Path(repo_dir)
    if not repo.is_dir():
        raise NotFound(f"model repository {repo} does not exist")
    return sorted(
        d.name for d in repo.iterdir() if (d / "config.pbtxt").is_file() and not d.name.startswith(".")
    )


def check_onnx_contract(onnx_path: Path, spec: BackboneSpec, input_dtype: str) -> None:
    """Raise InvalidArgument when the ONNX graph does not serve the spec's tensor contract."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / ValueError variants
        raise InvalidArgument(f"{onnx_path}: not a readable ONNX model: {exc}") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or not graph.output:
        raise InvalidArgument(
            f"{onnx_path}: expected one image input and a feature output, "
            f"got inputs {[i.name for i in inputs]}"
        )
    if inputs[0].name != INPUT_NAME or graph.output[0].name != OUTPUT_NAME:
        raise InvalidArgument(
            f"{onnx_path}: tensors are named {inputs[0].name!r} -> {graph.output[0].name!r}, the "
            f"contract needs {INPUT_NAME!r} -> {OUTPUT_NAME!r}; re-export it with this version of bobench"
        )
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != _ONNX_ELEM_TYPES[input_dtype]:
        raise InvalidArgument(
            f"{onnx_path}: input {inputs[0].name!r} has ONNX element type {tensor.elem_type}, "
            f"but input_dtype={input_dtype!r} needs {_ONNX_ELEM_TYPES[input_dtype]}"
        )
    want = [None, 3, spec.input_size, spec.input_size]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) != 4 or any(
        g is not None and w is not None and g != w for g, w in zip(dims, want, strict=True)
    ):
        raise InvalidArgument(
            f"{onnx_path}: input {inputs[0].name!r} has dims {dims}, spec {spec.name!r} "
            f"needs [N, 3, {spec.input_size}, {spec.input_size}]"
        )
    out_dims = [
        d.dim_value if d.HasField("dim_value") else None for d in graph.output[0].type.tensor_type.shape.dim
    ]
    if len(out_dims) != 2 or (out_dims[1] is not None and out_dims[1] != spec.embed_dim):
        raise InvalidArgument(
            f"{onnx_path}: output {graph.output[0].name!r} has dims {out_dims}, spec "
            f"{spec.name!r} needs [N, {spec.embed_dim}]"
        )
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise InvalidArgument(
                f"{onnx_path}: initializer {t.name!r} uses external data; export with "
                "external_data=False so the repository holds one self-contained file"
            )


def _check_options(
    spec, variant, platform, input_dtype, max_batch_size, preferred, delay_us, instances
) -> None:
    where = f"Triton model for {spec.name!r}"
    if variant not in VARIANTS:
        raise InvalidArgument(f"{where}: variant must be one of {VARIANTS}, got {variant!r}")
    if platform not in PLATFORMS:
        raise InvalidArgument(f"{where}: platform must be one of {PLATFORMS}, got {platform!r}")
    if variant == "local" and platform != "onnxruntime_onnx":
        raise InvalidArgument(
            f"{where}: the local variant (python backend) serves ONNX only, not {platform!r}"
        )
    if input_dtype not in INPUT_DTYPES:
        raise InvalidArgument(
            f"{where}: input_dtype must be one of {sorted(INPUT_DTYPES)}, got {input_dtype!r}"
        )
    if not spec.embed_dim or spec.embed_dim <= 0:
        raise InvalidArgument(
            f"{where}: spec field embed_dim is {spec.embed_dim!r}; it must be a positive int"
        )
    if spec.input_size <= 0:
        raise InvalidArgument(f"{where}: spec field input_size is {spec.input_size!r}; it must be positive")
    if max_batch_size < 1:
        raise InvalidArgument(f"{where}: max_batch_size must be >= 1, got {max_batch_size}")
    bad = [b for b in preferred if not 1 <= b <= max_batch_size]
    if bad:
        raise InvalidArgument(
            f"{where}: preferred_batch_sizes {bad} outside [1, max_batch_size={max_batch_size}]"
        )
    if delay_us < 0:
        raise InvalidArgument(f"{where}: max_queue_delay_us must be >= 0, got {delay_us}")
    if instances < 1:
        raise InvalidArgument(f"{where}: instances must be >= 1, got {instances}")


def _place_model_files(
    version_dir: Path,
    onnx_path: Path,
    variant: str,
    platform: str,
    plan_path: str | os.PathLike | None,
    max_batch_size: int,
    trt_precision: str = "fp16",
) -> str:
    """Put the served file (and the python-backend template) into `version_dir`; return its name."""
    if platform == "tensorrt_plan":
        target = version_dir / "model.plan"
        if plan_path is None:
            from bobench.export.tensorrt import build_engine

            build_engine(
                onnx_path,
                target,
                precision=trt_precision,
                opt_batch=min(16, max_batch_size),
                max_batch=max_batch_size,
            )
        elif not Path(plan_path).is_file():
            raise NotFound(f"TensorRT plan {plan_path} does not exist")
        else:
            shutil.copyfile(plan_path, target)
        return target.name
    _link_or_copy(onnx_path, version_dir / "model.onnx")
    if variant == "local":
        shutil.copyfile(TEMPLATE_PATH, version_dir / "model.py")
    return "model.onnx"


def _write_config(config, path: Path) -> None:
    from google.protobuf import text_format

    path.write_text(text_format.MessageToString(config))


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when on the same filesystem (models can be large), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
