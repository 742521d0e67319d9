"""Embedders (one interface: torch, ONNX Runtime, Triton) and the on-disk feature cache.

Runtimes register a factory in EMBEDDERS by name; `make_embedder` looks them up, so adding a runtime
never means editing a dispatch chain.

"Embedder" names three things in this project; the code keeps them apart like this:

- an **embedder runtime** (this package): the client-side object with `embed(batch) -> features`,
  run in process (`onnxruntime`, `torch`) or as a client of Triton (`triton`). The setting and flag
  `embedder` choose the runtime; `embedder_variant` chooses which exported model it runs (`onnx`,
  `trt-fp16`, ...).
- the **embedder service** (`bobench.serving.embedder_service`, `bob serve embedder`, image
  `bobench/embedder`): the Triton server process that serves the exported models; the `triton`
  runtime is its client.
- the **embedder factory methods** (`RunContext.embedder()`, `LocalExecutor.embedder(spec, variant)`):
  they hand a protocol the runtime of the run's backbone, built by `make_embedder` or kept warm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bobench.embed.base import Embedder
from bobench.registry import Registry, lazy

# factory(backbone_name_or_spec, **options) -> Embedder. The built-in runtimes are lazy "module:function"
# entries (bobench.registry.lazy): listing them (`runtime_names`) imports no runtime, and building one
# imports only its own module.
EMBEDDERS: Registry[Callable[..., Embedder]] = Registry("embedder runtime")
for _runtime, _factory in (
    ("onnxruntime", "bobench.embed.onnx_embedder:make_ort_embedder"),
    ("torch", "bobench.embed.torch_embedder:make_torch_embedder"),
    ("triton", "bobench.embed.triton_embedder:make_triton_embedder"),
):
    EMBEDDERS.add(_runtime, lazy(_factory))
BUILTIN_RUNTIMES = ("onnxruntime", "torch", "triton")


def runtime_names() -> tuple[str, ...]:
    """Every runtime `--embedder` / the `embedder` setting may name: the built-in ones and those a
    plugin registered in EMBEDDERS (call it after `bobench.plugins.load_plugins`)."""
    return tuple(EMBEDDERS)


def make_embedder(runtime: str, backbone: Any, **options: Any) -> Embedder:
    """Build an embedder of `runtime` (one of `runtime_names()`) for `backbone`."""
    return EMBEDDERS.get(runtime)(backbone, **options)


__all__ = ["BUILTIN_RUNTIMES", "EMBEDDERS", "Embedder", "make_embedder", "runtime_names"]
