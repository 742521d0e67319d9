"""The layer order of bobench: every package and top-level module, its layer and what it owns.

This table is the one statement of the layer order. `tests/unit/test_layers.py` holds the code to it
(a module imports only from its own package, its own layer or a lower one, and packages import each
other in no circle, counting imports inside functions and "module:function" registration strings),
and `docs/architecture.md` carries the same table (`python -m bobench._layers` prints it).

A new package or top-level module needs a row here before the layer test passes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    """One package (or top-level module) of bobench: its layer and, in one sentence, what it owns."""

    name: str  # "backbones" for bobench/backbones/, "config" for bobench/config.py
    layer: int
    owns: str


# fmt: off
PACKAGES: tuple[Package, ...] = (
    Package("_layers", 1, "this table: the layer of every package"),
    Package("v1", 1, "the generated protobuf and gRPC modules of protos/bobench/v1 (only `make protos` writes them)"),
    Package("errors", 1, "the domain error classes every layer raises and the RPC layer maps to status codes"),
    Package("registry", 1, "the one name -> object registry with decorator registration and did-you-mean errors"),
    Package("stage_timer", 1, "per-stage wall-clock timing and counters of a run"),
    Package("tensors", 1, "the tensor contract's names (bobench_images -> bobench_features) and its version"),
    Package("environment", 1, "the context recorded with every figure (versions, device, host, threads)"),
    Package("hashing", 1, "the one sha256 helper: canonical-JSON and file digests, cut to named lengths"),
    Package("logs", 1, "the one logging setup (line format, library loggers) of every front end"),
    Package("exit_codes", 1, "the one table of process exit codes (0 ok, 1 failed, 2 usage, 3 unavailable) of every front end"),
    Package("status_codes", 1, "the one table between gRPC status codes and bobench.errors, and what may be retried"),
    Package("triton_errors", 1, "translating tritonclient's errors into bobench.errors, for every Triton client"),
    Package("bootstrap_ci", 1, "seeded bootstrap confidence intervals and their record field names"),
    Package("threads", 1, "the process's one thread budget for torch, OpenMP/BLAS and ONNX Runtime sessions"),
    Package("config", 2, "the typed Settings of a process and their one precedence rule"),
    Package("auth_client", 2, "client credentials (bearer token, TLS) and the gRPC channel built from them"),
    Package("plugins", 2, "loading the user's plugin modules (BOBENCH_PLUGINS)"),
    Package("safe_parse", 2, "bounded, plain YAML/JSON parsing of untrusted input"),
    Package("store", 3, "the artifact store interface (local directory, S3) and preparing MinIO"),
    Package("data", 4, "datasets: sources, splits, fingerprints, corruptions, S3 and WebDataset streaming"),
    Package("backbones", 5, "BackboneSpec, the backbone registry and catalog, sources and weights"),
    Package("export", 6, "files a server serves: ONNX export and verification, TensorRT plans, Triton repositories"),
    Package("serving", 7, "running and reaching Triton: the server, publishing to it, access keys, load generation"),
    Package("embed", 7, "embedders behind one interface (torch, ONNX Runtime, a Triton client) and the feature cache"),
    Package("finetune", 8, "fine-tuning a backbone: recipe, training loop, checkpoints"),
    Package("detection", 8, "detection and instance-segmentation heads, their training and COCO metrics"),
    Package("protocols", 9, "the evaluation protocols, one `evaluate` each, registered by name"),
    Package("results", 10, "the run record (schema version, status, error type) and results.jsonl"),
    Package("battle", 11, "a battle: spec, run keys, plan, runner, scheduler and its executors"),
    Package("rpc", 12, "the gRPC services: server bootstrap, servicers, conversion, auth, limits"),
    Package("analysis", 12, "aggregation of run records: rankings, correlations, costs and reports"),
    Package("client", 13, "Python clients of the Scheduler and Evaluator services"),
    Package("stack", 13, "the local stack: starting and stopping every service on one machine"),
    Package("cli", 14, "the `bob` command, a thin adapter over the library"),
)
# fmt: on

LAYERS: dict[str, int] = {package.name: package.layer for package in PACKAGES}


def markdown_table() -> str:
    """The table of docs/architecture.md: layer, package, what it owns, what it may import."""
    lines = ["| layer | package | owns | may import layers |", "|---:|---|---|---|"]
    for package in sorted(PACKAGES, key=lambda p: p.layer):  # stable: table order within a layer
        below = "1" if package.layer == 1 else f"1-{package.layer}"
        lines.append(f"| {package.layer} | `{package.name}` | {package.owns} | {below} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
