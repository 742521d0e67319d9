"""Publish a backbone to an S3 (or any artifact-store) Triton model repository and load it on Triton.

`publish(backbone, store, variant, ...)` is the product; `bob publish` and the scheduler's publish
step are thin adapters. What it guarantees:

- **Content-addressed version.** The publish key hashes the backbone's weights digest
  (`BackboneSpec.digest()`), the embedder variant, the input dtype, the target and the python-backend
  template version. Triton versions are integers, so the version is the key's first 60 bits (+1 when
  zero); it is the version directory and is pinned with `version_policy { specific { versions: [N] } }`
  so Triton serves exactly that export.
- **Batching is part of the version.** Dynamic-batching options given per model (`dynamic_batching`,
  `preferred_batch_sizes`, `max_queue_delay_us` in `repo_options`) join the key, so a model published
  again with other batching gets a new version instead of "already published".
- **Idempotent.** When the store's `<model>/config.pbtxt` already pins N and its `bobench.json` carries
  the same key, nothing is exported or uploaded (`PublishedModel.uploaded` is False).
- **Never half-visible.** Version files are uploaded first, then `bobench.json`, then `config.pbtxt`
  (the file that makes Triton pick version N), each an atomic S3 PUT.
- **Loaded.** With a `triton_url`, Triton is asked to load the model (explicit model control) and the
  call returns once version N is ready. A load failure raises FailedPrecondition naming the model and
  Triton's message; an unreachable Triton raises Unavailable (callers may retry).

TensorRT variants are built on the machine that runs `publish` (it must have the target GPU) by
`bobench.export.tensorrt` and checked against ONNX Runtime before upload (ExportVerificationError when
they disagree); without TensorRT and a GPU they raise FailedPrecondition.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bobench.backbones.spec import BackboneSpec
from bobench.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from bobench.export.triton_repo import (
    EMBEDDER_VARIANTS,
    METADATA_FILE,
    TEMPLATE_VERSION,
    served_model_name,
)
from bobench.hashing import json_digest
from bobench.store.base import ArtifactStore

log = logging.getLogger(__name__)

TARGETS = ("local", "cluster-gpu", "cluster-cpu")
_VERSION_BITS_HEX = 15  # 60 bits: fits Triton's int64 versions with room to spare
_POLL_S = 0.2


@dataclass(frozen=True)
class PublishedModel:
    """What was published: the Triton model name and version evaluators ask for, and what happened."""

    backbone: str
    model_name: str
    version: int
    embedder_variant: str
    target: str
    input_dtype: str
    publish_key: str
    store_url: str
    uploaded: bool  # False: the store already held this exact version (nothing was uploaded)
    loaded: bool  # True: Triton was asked to load it and reported it ready

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BATCHING_OPTIONS = ("dynamic_batching", "preferred_batch_sizes", "max_queue_delay_us")


def publish_key(
    spec: BackboneSpec,
    embedder_variant: str,
    input_dtype: str,
    target: str,
    batching: dict[str, Any] | None = None,
) -> str:
    """The content key of one published entry (hex sha256); equal keys mean the same served model.
    `batching` (the BATCHING_OPTIONS given) joins the key only when not empty, so keys of models
    published with the default batching stay what they were."""
    fields: dict[str, Any] = {
        "digest": spec.digest(),
        "embedder_variant": embedder_variant,
        "input_dtype": input_dtype,
        "target": target,
        "template_version": TEMPLATE_VERSION if target == "local" else None,
    }
    if batching:
        fields["batching"] = {
            k: sorted(set(v)) if k == "preferred_batch_sizes" else v for k, v in batching.items()
        }
    return json_digest(fields)


def version_for(key: str) -> int:
    """The Triton model version (a positive int < 2**60) derived from a publish key."""
    try:
        value = int(key[:_VERSION_BITS_HEX], 16)
    except ValueError:
        raise InvalidArgument(f"publish key {key!r} is not a hex digest") from None
    return value or 1


def repository_layout(embedder_variant: str, target: str) -> dict[str, Any]:
    """`write_model_repository` options for a (variant, target); InvalidArgument for a bad pair."""
    if embedder_variant not in EMBEDDER_VARIANTS:
        raise InvalidArgument(
            f"embedder_variant must be one of {list(EMBEDDER_VARIANTS)}, got {embedder_variant!r}"
        )
    if target not in TARGETS:
        raise InvalidArgument(f"target must be one of {list(TARGETS)}, got {target!r}")
    trt = embedder_variant.startswith("trt-")
    if trt and target != "cluster-gpu":
        raise InvalidArgument(
            f"embedder_variant {embedder_variant!r} is a TensorRT plan: only target 'cluster-gpu' serves it "
            f"(target {target!r} serves onnx)"
        )
    if target == "local":
        return {"variant": "local", "platform": "onnxruntime_onnx", "instance_kind": "cpu"}
    layout = {
        "variant": "cluster",
        "platform": "tensorrt_plan" if trt else "onnxruntime_onnx",
        "instance_kind": "cpu" if target == "cluster-cpu" else "gpu",
    }
    if trt:
        layout["trt_precision"] = embedder_variant.removeprefix("trt-")
    return layout


def publish(
    backbone: str | BackboneSpec,
    store: ArtifactStore,
    embedder_variant: str = "onnx",
    *,
    target: str = "local",
    input_dtype: str = "uint8",
    cache_dir: str | Path,
    triton_url: str | None = None,
    admin_key: str = "",
    load_timeout_s: float = 180.0,
    **repo_options: Any,
) -> PublishedModel:
    """Export (verified, cached), upload and load one backbone; returns the PublishedModel.

    `store` is the model repository root (e.g. an S3Store on `s3://bobench/triton-models`).
    `repo_options` go to `write_model_repository` (max_batch_size, instances, intra_op_threads, ...).
    Raises InvalidArgument (unknown backbone, bad variant/target), FailedPrecondition (TensorRT without
    a GPU, refused store credentials, Triton could not load the model), Unavailable (store or Triton
    unreachable) and the export's verification error.
    """
    from bobench.backbones import get_spec
    from bobench.backbones.weights import with_weights_digest

    # the weights file's digest is part of the key: a re-exported user model is a new version
    spec = with_weights_digest(backbone if isinstance(backbone, BackboneSpec) else get_spec(backbone))
    layout = repository_layout(embedder_variant, target)
    batching = {k: repo_options[k] for k in BATCHING_OPTIONS if k in repo_options}
    key = publish_key(spec, embedder_variant, input_dtype, target, batching)
    version = version_for(key)
    name = served_model_name(spec, embedder_variant)
    uploaded = not is_published(store, name, key, version)
    if uploaded:
        meta = {"publish_key": key, "embedder_variant": embedder_variant, "target": target}
        options = {**layout, **repo_options, "version": version, "extra_metadata": meta}
        _export_and_upload(spec, store, name, input_dtype, cache_dir, options)
        log.info("published %s version %d to %s", name, version, store.url)
    else:
        log.info("%s version %d is already in %s; nothing uploaded", name, version, store.url)
    loaded = False
    if triton_url:
        load_on_triton(triton_url, name, version, admin_key=admin_key, timeout_s=load_timeout_s)
        loaded = True
    return PublishedModel(
        backbone=spec.name,
        model_name=name,
        version=version,
        embedder_variant=embedder_variant,
        target=target,
        input_dtype=input_dtype,
        publish_key=key,
        store_url=store.url,
        uploaded=uploaded,
        loaded=loaded,
    )


def is_published(store: ArtifactStore, model_name: str, key: str, version: int) -> bool:
    """Whether the store's entry pins `version` and was written for `key` (config.pbtxt comes last)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        meta = json.loads(store.get_bytes(f"{model_name}/{METADATA_FILE}"))
        config = text_format.Parse(store.get_bytes(f"{model_name}/config.pbtxt").decode(), mc.ModelConfig())
    except NotFound:
        return False
    except (ValueError, text_format.ParseError):
        log.warning("store entry %s/%s is unreadable; republishing it", store.url, model_name)
        return False
    return meta.get("publish_key") == key and list(config.version_policy.specific.versions) == [version]


def find_published(
    store: ArtifactStore,
    backbone: str | BackboneSpec,
    embedder_variant: str,
    *,
    target: str,
    input_dtype: str = "uint8",
) -> PublishedModel | None:
    """The entry `publish` left in `store` for these arguments, or None when there is none (yet).

    Reads only the entry's `bobench.json` (its publish key) and checks that `config.pbtxt`, uploaded
    last, is there: no export, no Triton, no tritonclient, so the scheduler can call it. `loaded` is
    False (this says nothing about Triton). Raises InvalidArgument for an unknown backbone and
    Unavailable / FailedPrecondition when the store cannot be read.
    """
    from bobench.backbones import get_spec
    from bobench.backbones.weights import with_weights_digest

    # the weights file's digest is part of the key: a re-exported user model is a new version
    spec = with_weights_digest(backbone if isinstance(backbone, BackboneSpec) else get_spec(backbone))
    key = publish_key(spec, embedder_variant, input_dtype, target)
    name = served_model_name(spec, embedder_variant)
    try:
        meta = json.loads(store.get_bytes(f"{name}/{METADATA_FILE}"))
    except NotFound:
        return None
    except ValueError:
        return None  # unreadable: the next publish rewrites it
    if (
        not isinstance(meta, dict)
        or meta.get("publish_key") != key
        or not store.exists(f"{name}/config.pbtxt")
    ):
        return None
    return PublishedModel(
        backbone=spec.name,
        model_name=name,
        version=version_for(key),
        embedder_variant=embedder_variant,
        target=target,
        input_dtype=input_dtype,
        publish_key=key,
        store_url=store.url,
        uploaded=False,
        loaded=False,
    )


def _export_and_upload(
    spec: BackboneSpec,
    store: ArtifactStore,
    name: str,
    input_dtype: str,
    cache_dir: str | Path,
    options: dict[str, Any],
) -> None:
    from bobench.backbones import create_backbone
    from bobench.export.onnx_export import export_cached
    from bobench.export.triton_repo import write_model_repository

    loaded = create_backbone(spec, cache_dir=cache_dir)
    report = export_cached(loaded, cache_dir, input_dtype=input_dtype)
    with tempfile.TemporaryDirectory(prefix="bobench-publish-") as tmp:
        model_dir = write_model_repository(
            loaded.spec,
            report.path,
            tmp,
            input_dtype=input_dtype,
            model_name=name,
            pin_version=True,
            export_report=report.to_dict(),
            **options,
        )
        if options.get("platform") == "tensorrt_plan":
            _verify_plan(model_dir / str(options["version"]) / "model.plan", report.path, loaded.spec,
                         input_dtype, options["trt_precision"])  # fmt: skip
        upload_model_dir(store, model_dir, name)


def _verify_plan(plan: Path, onnx_path: Path, spec: BackboneSpec, input_dtype: str, precision: str) -> None:
    """Raise ExportVerificationError when the engine built here disagrees with ONNX Runtime."""
    import numpy as np

    from bobench.export.onnx_export import ExportVerificationError
    from bobench.export.tensorrt import verify_engine

    size = spec.input_size
    images = np.random.default_rng(0).integers(0, 256, (4, 3, size, size)).astype(input_dtype)
    check = verify_engine(plan, onnx_path, images, atol=5e-2 if precision == "fp16" else 1e-3)
    if not check["ok"]:
        raise ExportVerificationError(
            f"TensorRT {precision} engine of {spec.name!r} disagrees with ONNX Runtime: {check}"
        )


def upload_model_dir(store: ArtifactStore, model_dir: Path, name: str) -> list[str]:
    """Upload one repository entry: version files, then bobench.json, then config.pbtxt; returns keys."""
    last = [model_dir / METADATA_FILE, model_dir / "config.pbtxt"]
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p not in last)
    keys = []
    for path in [*files, *last]:
        key = f"{name}/{path.relative_to(model_dir).as_posix()}"
        store.put_file(key, path)
        keys.append(key)
    return keys


def load_on_triton(
    url: str, model: str, version: int, *, admin_key: str = "", timeout_s: float = 180.0
) -> None:
    """Ask Triton at `url` to load `model` and wait until `version` is ready (no-op when it is).

    Raises Unavailable when Triton cannot be reached, DeadlineExceeded when the version is not ready
    in time, FailedPrecondition (naming the model and carrying Triton's message) when the load fails.
    """
    import tritonclient.grpc as grpcclient

    from bobench.serving.triton_access import admin_headers
    from bobench.triton_errors import to_bobench_error

    headers = admin_headers(admin_key)
    where = f"Triton at {url}: model {model!r} version {version}"
    client = grpcclient.InferenceServerClient(url)
    try:
        if _version_ready(client, model, version):
            return
        try:
            client.load_model(model, headers=headers, client_timeout=timeout_s)
        except Exception as exc:
            error = to_bobench_error(exc, where)
            if isinstance(error, Unavailable | DeadlineExceeded):
                raise error from None
            raise FailedPrecondition(f"{where} failed to load: {error}") from None
        deadline = time.monotonic() + timeout_s
        while not _version_ready(client, model, version):
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"{where} not ready {timeout_s:.0f} s after the load request")
            time.sleep(_POLL_S)
        log.info("%s loaded", where)
    finally:
        client.close()


def _version_ready(client, model: str, version: int) -> bool:
    from bobench.triton_errors import to_bobench_error

    try:
        return bool(client.is_model_ready(model, str(version), client_timeout=10.0))
    except Exception as exc:
        error = to_bobench_error(exc, f"asking Triton whether {model!r} version {version} is ready")
        if isinstance(error, Unavailable | DeadlineExceeded):
            raise error from None
        return False
