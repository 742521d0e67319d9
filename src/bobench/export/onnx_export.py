"""ONNX export of a LoadedBackbone with verification against torch, and a content-keyed export cache.

The exported graph satisfies the tensor contract of `bobench.tensors`: input INPUT_NAME (uint8 or
float32 [N, 3, S, S], dynamic batch), output OUTPUT_NAME float32 [N, D]. Verification runs ONNX Runtime and the reference
(torch, or for ONNX sources the numpy preprocessing + the unmodified network) on a fresh seeded batch
of a different size than the export example, and fails loudly when they disagree.

Exporter choice: the legacy TorchScript exporter (`dynamo=False`). On torch 2.14 both work; the
legacy one is faster to run, needs no onnxscript optimisation pass, and its ConvNeXt graph ran about
1.6x faster in ORT (see environment notes). The choice is recorded in every export.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bobench.backbones.factory import LoadedBackbone
from bobench.backbones.spec import BackboneSpec
from bobench.errors import BobenchError, InvalidArgument
from bobench.hashing import sha256_file
from bobench.stage_timer import add_count
from bobench.tensors import CONTRACT_VERSION, INPUT_NAME, OUTPUT_NAME
from bobench.threads import session_threads

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTER = "torch.onnx.export(dynamo=False)"
EXAMPLE_BATCH = 2  # batch 1 breaks the dynamic batch dim for some models
VERIFY_BATCH = 3
ATOL = 1e-4  # pass when max_abs_err <= ATOL + RTOL * max|reference|
RTOL = 1e-4
INPUT_DTYPES = ("uint8", "float32")


class ExportVerificationError(BobenchError):
    """The exported graph's outputs differ from the reference beyond tolerance."""


@dataclass
class ExportReport:
    """What an export produced and how well it matched the reference."""

    path: Path
    sha256: str
    opset: int
    exporter: str
    input_dtype: str
    max_abs_err: float | None
    max_rel_err: float | None
    verified: bool
    spec: BackboneSpec

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"], d["spec"] = str(self.path), self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> ExportReport:
        d = {**d, "path": Path(path), "spec": BackboneSpec.from_dict(d["spec"])}
        return cls(**d)


def verification_input(
    spec: BackboneSpec, input_dtype: str, batch: int = VERIFY_BATCH, seed: int = 1234
) -> np.ndarray:
    """Fresh seeded random pixels [batch, 3, S, S] (integers 0..255 in the requested dtype)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(batch, 3, spec.input_size, spec.input_size), dtype=np.uint8)
    return pixels if input_dtype == "uint8" else pixels.astype(np.float32)


def ort_session(path: Path, threads: int = 0):
    """A CPU ONNX Runtime session on `threads` intra-op threads; 0 takes the process's thread budget
    (`bobench.threads`), or ORT's default where none was applied."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = session_threads(threads)
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if got.shape != ref.shape:
        raise ExportVerificationError(
            f"exported output shape {list(got.shape)} != reference {list(ref.shape)}"
        )
    if not np.all(np.isfinite(got)):
        return float("inf"), float("inf")
    abs_err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if got.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return abs_err, abs_err / max(scale, 1e-12)


def _reference(loaded: LoadedBackbone, images: np.ndarray) -> np.ndarray:
    if loaded.module is not None:
        import torch

        with torch.no_grad():
            return loaded.module(torch.from_numpy(images)).numpy()
    from bobench.backbones.sources_onnx import manual_preprocess

    spec = loaded.spec
    raw = ort_session(loaded.raw_onnx_path)
    raw_input = raw.get_inputs()[0].name
    feature = _raw_with_feature_output(loaded)
    out = feature.run(
        [spec.output_name or raw.get_outputs()[0].name], {raw_input: manual_preprocess(images, spec)}
    )[0]
    return out.reshape(out.shape[0], -1)


def _raw_with_feature_output(loaded: LoadedBackbone):
    """The unmodified network with spec.output_name exposed as an extra graph output."""
    import onnx

    model = onnx.load(str(loaded.raw_onnx_path))
    name = loaded.spec.output_name
    if name and name not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.onnx"
        onnx.save(model, str(path))
        return ort_session(path)


def verify_onnx(loaded: LoadedBackbone, path: Path, input_dtype: str) -> tuple[float, float]:
    """(max_abs_err, max_rel_err) of ORT on `path` vs the reference; raises ExportVerificationError."""
    add_count(f"onnx_verifications:{loaded.spec.name}", 1)
    images = verification_input(loaded.spec, input_dtype)
    got = ort_session(path).run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    ref = _reference(loaded, images)
    abs_err, rel_err = _errors(got, ref)
    bound = ATOL + RTOL * float(np.max(np.abs(ref)))
    if not abs_err <= bound:
        raise ExportVerificationError(
            f"ONNX export of {loaded.spec.name!r} ({path}) disagrees with the reference: "
            f"max abs err {abs_err:.3g} > {bound:.3g} (max rel err {rel_err:.3g})"
        )
    return abs_err, rel_err


def _export_torch(loaded: LoadedBackbone, path: Path, input_dtype: str, opset: int) -> None:
    import torch

    dtype = torch.uint8 if input_dtype == "uint8" else torch.float32
    size = loaded.spec.input_size
    example = torch.zeros(EXAMPLE_BATCH, 3, size, size, dtype=dtype)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter deprecation notice
        torch.onnx.export(
            loaded.module.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def export_onnx(
    loaded: LoadedBackbone,
    out_path: str | Path,
    *,
    input_dtype: str = "uint8",
    opset: int | None = None,
    verify: bool = True,
) -> ExportReport:
    """Export `loaded` to `out_path` and write `export.json` next to it.

    Torch backbones go through torch.onnx.export; ONNX sources are composed with their preprocessing.
    Returns the ExportReport; raises InvalidArgument for a bad dtype and ExportVerificationError when
    ORT and the reference disagree.
    """
    if input_dtype not in INPUT_DTYPES:
        raise InvalidArgument(f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    add_count(f"onnx_exports:{loaded.spec.name}", 1)
    if loaded.module is not None:
        opset = opset or DEFAULT_OPSET
        _export_torch(loaded, out_path, input_dtype, opset)
        exporter = EXPORTER
    elif loaded.raw_onnx_path is not None:
        import onnx

        from bobench.backbones.sources_onnx import _opset, compose_with_preprocessing

        raw = onnx.load(str(loaded.raw_onnx_path))
        if opset not in (None, _opset(raw)):
            raise InvalidArgument(
                f"{loaded.spec.name!r} is an ONNX source at opset {_opset(raw)}; cannot export at {opset}"
            )
        opset = _opset(raw)
        onnx.save(compose_with_preprocessing(raw, loaded.spec, input_dtype), str(out_path))
        exporter = "onnx.compose(preprocessing, source graph)"
    else:
        raise InvalidArgument(f"backbone {loaded.spec.name!r} has neither a torch module nor an ONNX file")
    abs_err = rel_err = None
    if verify:
        abs_err, rel_err = verify_onnx(loaded, out_path, input_dtype)
    report = ExportReport(
        path=out_path,
        sha256=sha256_file(out_path),
        opset=opset,
        exporter=exporter,
        input_dtype=input_dtype,
        max_abs_err=abs_err,
        max_rel_err=rel_err,
        verified=verify,
        spec=loaded.spec,
    )
    (out_path.parent / "export.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    log.debug("exported %s -> %s (max abs err %s)", loaded.spec.name, out_path, abs_err)
    return report


def cache_key(spec: BackboneSpec, input_dtype: str) -> str:
    """The export cache entry of (spec, dtype) under the current tensor contract (an export made for an
    older contract has other tensor names and is never reused)."""
    return f"{spec.name}-{spec.digest()}-c{CONTRACT_VERSION}-{input_dtype}"


def load_cached_report(folder: Path) -> ExportReport | None:
    """The cached export in `folder`, or None when absent, unverified or its file's sha256 changed."""
    meta, model = folder / "export.json", folder / "model.onnx"
    if not (meta.is_file() and model.is_file()):
        return None
    report = ExportReport.from_dict(json.loads(meta.read_text()), model)
    if not report.verified or sha256_file(model) != report.sha256:
        log.warning("export cache entry %s is unverified or corrupt; rebuilding", folder)
        return None
    return report


def export_cached(loaded: LoadedBackbone, cache_dir: str | Path, input_dtype: str = "uint8") -> ExportReport:
    """A verified export keyed by spec.digest() (weights included), dtype and tensor contract version;
    built once, then reused.

    Built in a temporary folder and renamed into place, so a concurrent reader never sees a partial
    export and a crash leaves no half-written entry.
    """
    root = Path(cache_dir) / "onnx"
    final = root / cache_key(loaded.spec, input_dtype)
    cached = load_cached_report(final)
    if cached is not None:  # verified when it was built (the entry says so): not verified again
        add_count(f"onnx_export_cache_hits:{loaded.spec.name}", 1)
        return cached
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        built = export_onnx(loaded, tmp / "model.onnx", input_dtype=input_dtype)
        meta = json.loads((tmp / "export.json").read_text())
        meta["path"] = str(final / "model.onnx")  # where it will live, not the temporary folder
        (tmp / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report = load_cached_report(final)
    if report is None:
        raise ExportVerificationError(f"export cache entry {final} could not be read back")
    log.info(
        "cached verified export of %s at %s (max abs err %.3g)", loaded.spec.name, final, built.max_abs_err
    )
    return report


def export_backbone(name: str, out_dir: str | Path, input_dtype: str = "uint8") -> ExportReport:
    """CLI convenience: create the named backbone and export it to `out_dir/model.onnx` (verified)."""
    from bobench.backbones import create_backbone

    loaded = create_backbone(name)
    return export_onnx(loaded, Path(out_dir) / "model.onnx", input_dtype=input_dtype)
