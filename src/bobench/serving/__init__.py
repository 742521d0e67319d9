"""Serving: everything that runs or talks to a Triton server (export builds the files it serves).

The embedder *service* is the server; the embedder *runtimes* that call it (or embed in process)
live in `bobench.embed` (its docstring settles the three meanings of "embedder").

`bobench.serving.triton.TritonServer` starts and stops the real `tritonserver`; `embedder_service`
holds `serve_embedder` (the blocking service entry point) and `build_repository_for`; `publish` puts a
backbone into an artifact-store model repository and loads it on Triton; `triton_access` is how
clients and servers agree on keys, headers and S3 repository paths; `loadgen` drives a served model.
"""
