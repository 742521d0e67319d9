"""ONNX export: verification vs torch / raw ONNX, broken exports caught, the export cache."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import bobench.export.onnx_export as onnx_export
from bobench.backbones import create_backbone
from bobench.export import ExportVerificationError, export_cached, export_onnx
from bobench.export.onnx_export import ort_session, verify_onnx
from bobench.tensors import INPUT_NAME, OUTPUT_NAME

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    return create_backbone("toy")


@pytest.mark.parametrize(
    "name",
    [
        "resnet18-random",
        "vit_tiny_patch16_224-random",
        "convnext_atto-random",
        "efficientnet_lite0",
        "open_nsfw",
    ],
)
def test_export_matches_reference(tmp_path, name):
    loaded = create_backbone(name, cache_dir=tmp_path)
    report = export_onnx(loaded, tmp_path / "m" / "model.onnx")
    assert report.verified and report.max_abs_err is not None
    assert report.max_abs_err < 1e-4 and report.max_rel_err < 1e-5
    meta = json.loads((tmp_path / "m" / "export.json").read_text())
    assert meta["sha256"] == report.sha256 and meta["spec"]["name"] == name and meta["opset"] == report.opset
    assert meta["exporter"] == report.exporter and meta["max_abs_err"] == report.max_abs_err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_export_matches_reference_larger_lites(tmp_path, name):
    report = export_onnx(create_backbone(name, cache_dir=tmp_path), tmp_path / "model.onnx")
    assert report.max_abs_err < 1e-4


def test_exported_graph_has_dynamic_batch_and_contract_names(tmp_path, toy):
    report = export_onnx(toy, tmp_path / "model.onnx")
    session = ort_session(report.path)
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for n in (1, 5):
        x = np.random.default_rng(n).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.no_grad():
            ref = toy.module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_float32_input_export(tmp_path, toy):
    report = export_onnx(toy, tmp_path / "model.onnx", input_dtype="float32")
    assert report.input_dtype == "float32"
    assert ort_session(report.path).get_inputs()[0].type == "tensor(float)"


def test_bad_input_dtype_is_rejected(tmp_path, toy):
    with pytest.raises(onnx_export.InvalidArgument, match="input_dtype"):
        export_onnx(toy, tmp_path / "model.onnx", input_dtype="int8")


@pytest.mark.parametrize("name", ["toy", "open_nsfw"])
def test_corrupted_initializer_is_caught_by_verification(tmp_path, name):
    loaded = create_backbone(name, cache_dir=tmp_path)
    report = export_onnx(loaded, tmp_path / "model.onnx")
    model = onnx.load(str(report.path))
    weights = max(
        (t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4),
        key=lambda t: int(np.prod(t.dims)),
    )
    array = numpy_helper.to_array(weights).copy()
    array.reshape(-1)[: array.size // 2] += 0.5
    weights.CopyFrom(numpy_helper.from_array(array, weights.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ExportVerificationError, match="disagrees with the reference"):
        verify_onnx(loaded, broken, "uint8")


def test_export_cache_reuses_and_rebuilds_corrupt_entries(tmp_path, toy, monkeypatch):
    first = export_cached(toy, tmp_path)
    assert first.verified and first.path.name == "model.onnx" and toy.spec.digest() in str(first.path)

    def fail(*args, **kwargs):
        raise AssertionError("export should have been reused")

    with monkeypatch.context() as m:
        m.setattr(onnx_export, "export_onnx", fail)
        again = export_cached(toy, tmp_path)
    assert again.path == first.path and again.sha256 == first.sha256
    first.path.write_bytes(first.path.read_bytes() + b"\0")  # corrupt: sha256 no longer matches
    rebuilt = export_cached(toy, tmp_path)
    assert rebuilt.sha256 == first.sha256
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [first.path.parent.name]  # no temp leftovers
    other_seed = export_cached(create_backbone("toy", seed=9), tmp_path)
    assert other_seed.path != first.path
