"""Triton python-backend model that serves one ONNX file with ONNX Runtime (bobench template).

This file is copied verbatim into `<repo>/<model>/1/model.py` by
`bobench.export.triton_repo.write_model_repository(variant="local")`; it is never edited per model.
Everything model-specific comes from the `parameters` of the generated config.pbtxt:

- `onnx_file`: file name of the ONNX model inside the version directory,
- `input_name` / `output_name`: the tensor contract names (`bobench.tensors`; this file runs inside
  Triton's python stub, where bobench may not be importable, so the defaults restate them),
- `intra_op_threads`: ONNX Runtime intra-op threads (0 = library default),
- `template_version`: must match TEMPLATE_VERSION below (a stale copy fails at load time).

Dynamic batching hands `execute` several requests at once; they are concatenated into one ONNX
Runtime call and split again, so one execution serves many requests.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

TEMPLATE_VERSION = "2"  # 2: the contract's tensors are "bobench_images" / "bobench_features"


class TritonPythonModel:
    """Loads the ONNX file at initialisation; runs every batch of requests in one session call."""

    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        wanted = params.get("template_version", TEMPLATE_VERSION)
        if wanted != TEMPLATE_VERSION:
            raise pb_utils.TritonModelException(
                f"model.py template version {TEMPLATE_VERSION} does not match config's {wanted}; "
                "regenerate the model repository"
            )
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0") or 0)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.input_name = params.get("input_name", "bobench_images")
        self.output_name = params.get("output_name", "bobench_features")
        self.onnx_input = self.session.get_inputs()[0].name
        self.onnx_output = params.get("onnx_output") or self.session.get_outputs()[0].name

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        try:
            (features,) = self.session.run([self.onnx_output], {self.onnx_input: batch})
        except Exception as exc:  # report to every caller instead of crashing the stub
            error = pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        features = np.ascontiguousarray(features, dtype=np.float32)
        responses = []
        start = 0
        for size in sizes:
            out = pb_utils.Tensor(self.output_name, features[start : start + size])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += size
        return responses

    def finalize(self):
        self.session = None
