"""The project's tensor names are namespaced, so a user's ONNX network can use any names of its own.

Issue 11: an ONNX backbone whose output was named `features` failed inside onnx's checker ("not in
SSA form") because the composed graph's own output had that name. Exports made for the old names
must not be served again: the export caches are keyed by the contract version, and a model
repository refuses an ONNX file whose tensors are not the contract's.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bobench.backbones import create_backbone
from bobench.backbones.sources_onnx import manual_preprocess
from bobench.backbones.spec import BackboneSpec
from bobench.errors import InvalidArgument
from bobench.export.onnx_export import cache_key, export_cached, ort_session
from bobench.export.triton_repo import read_model_config, write_model_repository
from bobench.tensors import CONTRACT_VERSION, INPUT_NAME, OUTPUT_NAME, RESERVED_PREFIX

SIZE, DIM = 8, 4
WEIGHT = np.random.default_rng(0).standard_normal((3 * SIZE * SIZE, DIM)).astype(np.float32)


def _user_onnx(path, input_name: str = "x", output_name: str = "y", hidden: str = "flat"):
    """A user's network (flatten -> matmul) with tensor names of the user's choosing."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [input_name], [hidden], axis=1),
            helper.make_node("MatMul", [hidden, "w"], [output_name]),
        ],
        "user",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(WEIGHT, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _spec(path) -> BackboneSpec:
    return BackboneSpec(
        name="users-net",
        source="onnx",
        model_id=str(path),
        family="cnn",
        pretraining_method="other",
        pretraining_data="none",
        input_size=SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights=str(path),
    )


def test_the_contract_names_carry_the_reserved_prefix():
    assert INPUT_NAME.startswith(RESERVED_PREFIX) and OUTPUT_NAME.startswith(RESERVED_PREFIX)
    assert INPUT_NAME != OUTPUT_NAME


@pytest.mark.parametrize(
    "names",
    [
        {"output_name": "features"},  # the reported bug: our old output name
        {"input_name": "images"},  # our old input name
        {"input_name": "images", "output_name": "features"},
        {"hidden": "pre_float"},  # a name our preprocessing used to add
    ],
    ids=["output-features", "input-images", "both", "hidden-pre_float"],
)
def test_a_user_network_named_like_the_old_contract_loads_and_embeds_correctly(tmp_path, names):
    loaded = create_backbone(_spec(_user_onnx(tmp_path / "m.onnx", **names)), cache_dir=tmp_path)
    assert loaded.spec.embed_dim == DIM
    session = ort_session(loaded.onnx_path)
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    images = np.random.default_rng(1).integers(0, 256, (3, 3, SIZE, SIZE), dtype=np.uint8)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    expected = manual_preprocess(images, loaded.spec).reshape(3, -1) @ WEIGHT
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert loaded.spec.num_params == WEIGHT.size  # our preprocessing constants are not counted


def test_a_user_network_named_features_exports_and_gets_a_triton_entry(tmp_path):
    loaded = create_backbone(
        _spec(_user_onnx(tmp_path / "m.onnx", output_name="features")), cache_dir=tmp_path
    )
    report = export_cached(loaded, tmp_path / "cache")
    assert report.verified
    model_dir = write_model_repository(loaded.spec, report.path, tmp_path / "repo")
    config = read_model_config(model_dir)
    assert [t.name for t in config.input] == [INPUT_NAME]
    assert [t.name for t in config.output] == [OUTPUT_NAME]


def test_a_user_network_using_the_reserved_prefix_is_refused_by_name(tmp_path):
    path = _user_onnx(tmp_path / "m.onnx", hidden=RESERVED_PREFIX + "mine")
    with pytest.raises(InvalidArgument, match="reserves"):
        create_backbone(_spec(path), cache_dir=tmp_path)


def test_export_cache_keys_name_the_contract_version(tmp_path):
    spec = _spec(tmp_path / "m.onnx")
    assert f"-c{CONTRACT_VERSION}-" in cache_key(spec, "uint8")


def test_a_model_repository_refuses_an_onnx_file_with_other_tensor_names(tmp_path):
    loaded = create_backbone(_spec(_user_onnx(tmp_path / "m.onnx")), cache_dir=tmp_path)
    old = _user_onnx(tmp_path / "old.onnx", input_name="images", output_name="features")
    with pytest.raises(InvalidArgument, match="re-export"):
        write_model_repository(
            loaded.spec.replace(embed_dim=DIM), old, tmp_path / "repo", input_dtype="float32"
        )
