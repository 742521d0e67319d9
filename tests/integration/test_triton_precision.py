"""The Triton embedder records the precision of the model variant it embeds with, against the real
tritonserver: a TensorRT fp16 model used to be recorded as fp32 (the class default).

No TensorRT engine can be built on a CPU machine, so the served model is the toy ONNX one asked for
under each variant's label (`model_name` given); what is checked is the metadata the embedder
records and the feature key a run of that variant uses.
"""

from __future__ import annotations

import pytest

from bobench.embed.triton_embedder import TritonEmbedder

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("variant", "precision"), [("trt-fp16", "fp16"), ("trt-fp32", "fp32"), ("onnx", "fp32")]
)
def test_triton_embedder_records_the_variant_precision(triton_toy, variant, precision):
    emb = TritonEmbedder("toy", url=triton_toy["server"].grpc_url, model_name="toy", embedder_variant=variant)
    try:
        described = emb.describe()
        assert (emb.precision, described["precision"], described["embedder_variant"]) == (
            precision,
            precision,
            variant,
        )
    finally:
        emb.close()
