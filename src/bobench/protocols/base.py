"""The protocol contract: one module per protocol with the same `evaluate`, described by a `Protocol`
registered by name in PROTOCOLS (the built-ins in the torch-free `bobench.protocols.builtin`, with
`evaluate` a lazy "module:function" reference, so metadata and config checks never import torch).

A protocol's `evaluate(ctx, config, seed)` returns a flat dict of metric name -> float (or None when a
figure cannot be computed; never a made-up 0). It reads features through `ctx` so that every protocol
shares the feature cache.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

import numpy as np

from bobench.errors import InvalidArgument
from bobench.registry import Registry

if TYPE_CHECKING:
    from bobench.backbones.spec import BackboneSpec
    from bobench.data.base import Dataset

Metrics = dict[str, float | None | list | dict]

TASKS = ("classification", "retrieval", "ood", "efficiency", "fewshot", "finetune", "serving", "detection")


class RunContext(TypingProtocol):
    """What a protocol may ask of the runner. Implemented by `bobench.battle.context.LocalContext`."""

    spec: BackboneSpec
    dataset: Dataset

    def features(
        self, split: str, dataset: Dataset | None = None, variant: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 [n, d], labels int64 [n]) of `split` of `dataset` (default: the run's).

        `variant` names a deterministic transform of the images before embedding, e.g.
        "corrupt:gaussian_noise:3" (ImageNet-C corruption, severity 3). Cached on disk.
        """

    def dataset_by_ref(self, ref: str | dict) -> Dataset:
        """Resolve another dataset (OOD target domains)."""

    def embedder(self):  # -> bobench.embed.base.Embedder
        """The run's embedder runtime (`bobench.embed`: in-process ORT/torch, or the Triton client)."""

    def backbone_module(self):  # -> torch.nn.Module taking uint8 NCHW, returning features
        """A trainable torch module (fine-tuning, efficiency); raises FailedPrecondition if not torch."""

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Report progress (drives progress bars and streaming RPC events)."""


@dataclass(frozen=True)
class Protocol:
    """A registered evaluation protocol.

    `primary_metric` ranks backbones within a setting; `higher_is_better` covers every metric the
    protocol may return (a metric not listed is descriptive and is not ranked). `seeded` says whether
    the run seed changes the result: an unseeded (deterministic) protocol runs once per split seed
    (dataset), not once per battle seed, and its records say `seeded: false` so analysis never counts
    its runs as seeds. The safe default is seeded. `job_checkpoint_dir` ("module:function(cache_dir,
    spec, dataset, config, seed) -> Path") marks a protocol that trains: its runs go to Kubernetes Jobs
    by default (`battle.k8s_jobs.JOB_PROTOCOLS`) and resume from that directory.
    """

    name: str
    version: str
    task: str
    evaluate: Callable[[RunContext, dict[str, Any], int], Metrics]  # built-ins: bobench.registry.lazy
    defaults: dict[str, Any] = field(default_factory=dict)
    primary_metric: str = "top1"
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    description: str = ""
    needs_features: bool = True
    seeded: bool = True
    job_checkpoint_dir: str | None = None

    def resolve_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with `config`, range-checked (`bobench.protocols.config_checks`) so a bad
        value is refused when the run is planned. An unknown key, a value that is not plain finite
        data or one out of range is an InvalidArgument naming it."""
        from bobench.protocols.config_checks import check_config
        from bobench.safe_parse import check_plain

        config = dict(config or {})
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            close = [m for k in unknown for m in difflib.get_close_matches(k, list(self.defaults), 1, 0.5)]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise InvalidArgument(
                f"protocol {self.name!r}: unknown config key(s) {str(unknown)[:200]}{hint}; known: {sorted(self.defaults)}"
            )
        check_plain(config, f"protocol {self.name!r} config")
        resolved = {**self.defaults, **config}
        check_config(self.name, resolved, config)
        return resolved


PROTOCOLS: Registry[Protocol] = Registry(
    "protocol", "bob protocols list", builtins=("bobench.protocols.builtin",)
)


def register_protocol(protocol: Protocol) -> Protocol:
    """Register a protocol (plugins, tests); AlreadyExists for a taken name."""
    return PROTOCOLS.add(protocol.name, protocol)


def get_protocol(name: str) -> Protocol:
    """The registered protocol (the built-ins load on first lookup); InvalidArgument with close matches."""
    return PROTOCOLS.get(name)
