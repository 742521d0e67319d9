"""Dynamic batching per model: the config the publisher writes, and its place in the publish key."""

from __future__ import annotations

import pytest

pytest.importorskip("tritonclient.grpc")

from bobench.backbones.spec import BackboneSpec  # noqa: E402
from bobench.errors import InvalidArgument  # noqa: E402
from bobench.export.triton_repo import build_model_config  # noqa: E402
from bobench.serving.publish import publish_key  # noqa: E402

SPEC = BackboneSpec(name="tiny", source="toy", model_id="tiny", family="cnn", pretraining_method="random",
                    pretraining_data="none", input_size=16, embed_dim=8)  # fmt: skip


def test_dynamic_batching_on_writes_preferred_sizes_and_delay():
    cfg = build_model_config(
        SPEC, model_name="tiny", preferred_batch_sizes=(16, 4, 4), max_queue_delay_us=750
    )
    assert cfg.HasField("dynamic_batching")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 750


def test_dynamic_batching_off_leaves_the_scheduler_out():
    cfg = build_model_config(SPEC, model_name="tiny", dynamic_batching=False)
    assert not cfg.HasField("dynamic_batching")
    assert cfg.max_batch_size == 64  # requests still carry a batch dimension


def test_dynamic_batching_must_be_a_bool():
    with pytest.raises(InvalidArgument, match="dynamic_batching"):
        build_model_config(SPEC, model_name="tiny", dynamic_batching="no")


def test_batching_options_join_the_publish_key_only_when_given():
    plain = publish_key(SPEC, "onnx", "uint8", "local")
    assert publish_key(SPEC, "onnx", "uint8", "local", {}) == plain  # defaults keep their old key
    off = publish_key(SPEC, "onnx", "uint8", "local", {"dynamic_batching": False})
    sizes = publish_key(SPEC, "onnx", "uint8", "local", {"preferred_batch_sizes": (8, 4)})
    assert len({plain, off, sizes}) == 3
    assert sizes == publish_key(SPEC, "onnx", "uint8", "local", {"preferred_batch_sizes": [4, 8, 8]})
