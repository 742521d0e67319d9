"""Expand a battle spec into runs with deterministic run keys.

A run key hashes (backbone identity incl. the digest of every weights file it loads (an ONNX model's
external data too, `backbones.weights.with_weights_digest`) and preprocessing, dataset fingerprint incl.
split seed, protocol name + version + resolved config, seed): same key -> same result, so finished
keys are never run twice. Runs that embed (`embeds(protocol)`) under a non-default `embedder_variant`
(a TensorRT plan) also hash the variant: fp16 changes the numbers. The default "onnx" is left out of
the hash, so keys planned before the variant existed are unchanged.

The dataset fingerprint in the key is the reference fingerprint (`bobench.data.reference`): declared
for named datasets, from the file listing (sizes, mtimes) for folders, manifests and shards, from the
object listing for S3; planning reads no image and imports no torch. The evaluator keys its feature
cache by the content fingerprint of what it loads.

A protocol registered with `seeded=False` (deterministic: kNN, linear probe, retrieval, latency) is
planned once per split seed, i.e. once per dataset entry (the split seed is part of the dataset
fingerprint), with the battle's first seed; its key hashes `seeded: false`, so adding battle seeds
never re-runs it, and its record says `seeded: false`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bobench.battle.spec import BattleSpec, DatasetEntry
from bobench.errors import BobenchError, PermissionDenied, ResourceExhausted
from bobench.hashing import RUN_KEY_HEX, json_digest
from bobench.results import RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """One run to execute. `error` is set when the run cannot start (e.g. its dataset failed to load)."""

    run_key: str
    backbone: str
    dataset: str
    dataset_ref: str | dict[str, Any]
    protocol: str
    protocol_version: str
    task: str
    config: dict[str, Any]
    seed: int
    primary_metric: str
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    battle: str | None = None
    error: str | None = None
    embedder_variant: str = "onnx"  # the published Triton model this run embeds with
    seeded: bool = True  # False: a deterministic protocol, planned once per split seed

    def new_record(self) -> RunRecord:
        """A pending record of this run: every field the plan and the record share (by name), except
        `error` (a plan's error fails the run when it executes)."""
        values = {name: getattr(self, name) for name in _RECORD_FIELDS_OF_PLAN}
        values["higher_is_better"] = dict(self.higher_is_better)
        return RunRecord(**values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPlan:
        return cls(**d)


_RECORD_FIELDS_OF_PLAN = tuple(
    f.name
    for f in dataclasses.fields(RunPlan)
    if f.name in {r.name for r in dataclasses.fields(RunRecord)} and f.name != "error"
)

EMBEDDER_TIMING_PROTOCOLS = ("serving_latency", "efficiency")  # time the embedder without features


def embeds(protocol: Any) -> bool:
    """Whether a protocol's runs go through the embedder (features, or timing the served model)."""
    return bool(protocol.needs_features) or protocol.name in EMBEDDER_TIMING_PROTOCOLS


def run_key(
    backbone_identity: dict,
    dataset_id: str,
    protocol: str,
    version: str,
    config: dict,
    seed: int,
    embedder_variant: str = "onnx",
    seeded: bool = True,
) -> str:
    doc = {
        "backbone": backbone_identity,
        "dataset": dataset_id,
        "protocol": protocol,
        "version": version,
        "config": config,
        "seed": seed,
    }
    if embedder_variant != "onnx":
        doc["embedder_variant"] = embedder_variant
    if not seeded:
        doc["seeded"] = False
    return json_digest(doc, RUN_KEY_HEX)


def dataset_identity(
    entry: DatasetEntry, loader: Callable[[Any], Any] | None = None
) -> tuple[str | None, str | None]:
    """(reference fingerprint, error). A dataset whose reference cannot be resolved (missing folder,
    unknown name, bad data) yields its error instead of aborting the plan; a path outside the data
    roots (PermissionDenied) or one beyond a limit (ResourceExhausted) refuses the whole request
    instead.

    Without `loader` (the scheduler) nothing is loaded. A caller that is about to run the plan (the
    evaluator, `bob evaluate`, the local runner) passes its `loader(ref)`: the dataset is loaded
    through it first, so its checks and limits (the evaluator's max_images_per_dataset) refuse the
    request as before; the key still uses the reference fingerprint, so every planner agrees."""
    from bobench.data.reference import reference_fingerprint

    try:
        if loader is None:
            return reference_fingerprint(entry.ref), None
        dataset = loader(entry.ref)
        return reference_fingerprint(entry.ref, load=lambda _ref: dataset), None
    except (PermissionDenied, ResourceExhausted):
        raise
    except BobenchError as exc:
        return None, f"dataset {entry.name!r}: {exc}"


CUSTOM_BACKBONES: dict[str, dict[str, Any]] = {}  # user-defined backbones registered in this process


def register_custom_backbones(entries: tuple[dict[str, Any], ...]) -> None:
    """Register a spec's user-defined backbones; re-registering the identical spec is a no-op.

    Raises InvalidArgument when the name is taken by a different definition or a field is invalid."""
    from bobench.backbones import BACKBONES, check_user_backbone, register_spec
    from bobench.backbones.spec import BackboneSpec
    from bobench.errors import InvalidArgument

    for entry in entries:
        new = BackboneSpec.from_dict(entry)
        check_user_backbone(new)  # PermissionDenied: torchhub runs remote code
        if entry["name"] in BACKBONES:
            if BACKBONES.get(entry["name"]).identity() != new.identity():
                raise InvalidArgument(
                    f"battle spec: backbone {entry['name']!r} is already registered with a different definition; "
                    "pick another name"
                )
            CUSTOM_BACKBONES.setdefault(entry["name"], dict(entry))
            continue
        register_spec(new)
        CUSTOM_BACKBONES[entry["name"]] = dict(entry)


def plan_battle(
    spec: BattleSpec,
    *,
    battle_id: str | None = None,
    dataset_loader: Callable[[Any], Any] | None = None,
) -> list[RunPlan]:
    """All runs of `spec`, in a stable order (backbone-major, so a backbone loads once).

    `dataset_loader`, when given, loads each dataset before it is fingerprinted (`dataset_identity`).
    Raises InvalidArgument for an unknown backbone or protocol, or a bad protocol config: those make the
    whole spec invalid. A dataset that cannot be loaded becomes failed runs carrying the error.
    """
    from bobench.backbones import get_spec
    from bobench.backbones.weights import with_weights_digest
    from bobench.protocols import get_protocol

    register_custom_backbones(spec.custom_backbones)
    specs = {name: with_weights_digest(get_spec(name)) for name in spec.backbones}
    protocols = [(entry, get_protocol(entry.name)) for entry in spec.protocols]
    configs = [proto.resolve_config(entry.config) for entry, proto in protocols]
    datasets = {d.name: (d, *dataset_identity(d, dataset_loader)) for d in spec.datasets}

    plans: list[RunPlan] = []
    for bname in spec.backbones:
        identity = specs[bname].identity()
        for dname, (entry, fingerprint, error) in datasets.items():
            for (pentry, proto), config in zip(protocols, configs, strict=True):
                if pentry.datasets is not None and dname not in pentry.datasets:
                    continue
                if pentry.backbones is not None and bname not in pentry.backbones:
                    continue
                variant = spec.embedder_variant if embeds(proto) else "onnx"
                for seed in spec.seeds if proto.seeded else spec.seeds[:1]:
                    key = run_key(
                        identity,
                        fingerprint or entry.ref_json(),
                        proto.name,
                        proto.version,
                        config,
                        seed,
                        variant,
                        seeded=proto.seeded,
                    )
                    plans.append(
                        RunPlan(
                            run_key=key,
                            backbone=bname,
                            dataset=dname,
                            dataset_ref=entry.ref,
                            protocol=proto.name,
                            protocol_version=proto.version,
                            task=proto.task,
                            config=config,
                            seed=seed,
                            primary_metric=proto.primary_metric,
                            higher_is_better=dict(proto.higher_is_better),
                            dataset_fingerprint=fingerprint,
                            battle=battle_id,
                            error=error,
                            embedder_variant=variant,
                            seeded=proto.seeded,
                        )
                    )
    log.info(
        "planned %d runs (%d backbones x %d datasets x %d protocols x %d seeds, filtered)",
        len(plans),
        len(spec.backbones),
        len(spec.datasets),
        len(spec.protocols),
        len(spec.seeds),
    )
    unseeded = sorted({proto.name for _, proto in protocols if not proto.seeded})
    if unseeded and len(spec.seeds) > 1:
        log.info("deterministic protocols %s run once per split seed (dataset), not per seed", unseeded)
    return plans
