"""The context recorded with every figure: library versions, device, runtime, threads, host.

It imports nothing of bobench: every layer that records a figure may ask it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from functools import lru_cache

_PACKAGES = (
    "bobench",
    "torch",
    "torchvision",
    "timm",
    "onnxruntime",
    "onnx",
    "numpy",
    "scikit-learn",
    "faiss-cpu",
    "tritonclient",
)


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(runtime: dict | None = None) -> dict:
    """Environment block of a run record; `runtime` is the embedder's describe() (runtime, device, ...)."""
    return {
        "versions": library_versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        **(runtime or {}),
    }
