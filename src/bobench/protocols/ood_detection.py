"""OOD detection protocol: train a detector on one domain, score it there and on a shifted domain.

BoB trains on Sim10k and tests on Cityscapes; offline, the tree crowns' NEON sites give a real shift:
with `source_sites` (default ["YELL"], Yellowstone) the detector trains on the train/val tiles of
those sites, `AP` is its box AP on their test tiles (in-domain) and `shift_AP` on every tile of the
other sites (OSBS, Florida; SOAP, California), `gap` = AP - shift_AP. With `target` (a dataset ref
with the same classes) the run's dataset is the source and the target's "test" split is the shifted
set. Primary metric: `shift_AP`. Recipe, regimes and checkpoints as in `bobench.protocols.detection`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bobench.data.detection import require_detection
from bobench.detection.config import DEFAULTS
from bobench.detection.run import run_detection
from bobench.errors import InvalidArgument
from bobench.protocols.base import RunContext, get_protocol


def site_sets(ds, sites: list[str]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(train, val, test, shift) image indices: the source sites' splits, and every other site's tiles
    (a run Job picks its checkpoint directory from the same train/val). InvalidArgument when the
    dataset has no sites or `sites` names an unknown one."""
    if not ds.sites:
        raise InvalidArgument(
            f"protocol 'ood_detection': dataset {ds.name!r} has no sites; give a target dataset"
        )
    in_source = np.isin(np.asarray(ds.sites), sites)
    unknown = sorted(set(sites) - set(ds.sites))
    if unknown:
        raise InvalidArgument(f"protocol 'ood_detection': source_sites {unknown} not in {ds.name!r}")

    def pick(split: str) -> list[int]:
        return [int(i) for i in ds.split(split) if in_source[i]]

    return pick("train"), pick("val"), pick("test"), np.flatnonzero(~in_source).tolist()


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """In-domain AP, shifted AP and their gap; InvalidArgument when the shift cannot be formed."""
    ds = require_detection(ctx.dataset, "ood_detection")
    config = get_protocol("ood_detection").resolve_config(
        config
    )  # includes options.check_ood_domains and the model's checks
    model_config = {k: v for k, v in config.items() if k not in ("source_sites", "target")}
    if config["target"] is not None:
        target = require_detection(ctx.dataset_by_ref(config["target"]), "ood_detection")
        if target.classes != ds.classes:
            raise InvalidArgument(
                f"protocol 'ood_detection': target {target.name!r} has other classes than {ds.name!r}"
            )
        train, val, test = (ds.split(s).tolist() for s in ("train", "val", "test"))
        shifted = (target, target.split("test").tolist())
    else:
        train, val, test, shift = site_sets(ds, config["source_sites"])
        shifted = (ds, shift)
    metrics = run_detection(
        ctx, ds, {**DEFAULTS, **model_config}, seed, protocol="ood_detection", train=train, val=val,
        tests={"": (ds, test), "shift_": shifted},
    )  # fmt: skip
    if metrics.get("AP") is not None and metrics.get("shift_AP") is not None:
        metrics["gap"] = metrics["AP"] - metrics["shift_AP"]
    return metrics
