"""Evaluation protocols, one module each, registered by name in PROTOCOLS."""

from __future__ import annotations

import importlib

from bobench.protocols.base import PROTOCOLS, Protocol, RunContext, get_protocol, register_protocol

BUILTIN = (
    "linear_probe",
    "knn",
    "fewshot",
    "retrieval",
    "ood",
    "efficiency",
    "finetune",
    "serving_latency",
    "detection",
    "instance_segmentation",
    "ood_detection",
)

for _name in BUILTIN:
    try:
        importlib.import_module(f"bobench.protocols.{_name}")
    except ModuleNotFoundError as _exc:  # not written yet / optional
        if _exc.name != f"bobench.protocols.{_name}":
            raise

__all__ = ["PROTOCOLS", "Protocol", "RunContext", "get_protocol", "register_protocol"]
