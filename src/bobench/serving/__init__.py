"""Serving: the Triton embedder service (launcher for the real `tritonserver`, model control, CLI).

`bobench.serving.triton.TritonServer` starts and stops the server; `bobench.serving.embedder` holds
`serve_embedder` (the blocking service entry point) and `build_repository_for`.
"""
