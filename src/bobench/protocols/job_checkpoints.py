"""Where a detection run keeps its checkpoints, known before it starts: what `bob job run` syncs.

A run Job (`bobench.battle.executors.job_entry`) restores `jobs/<run_key>/checkpoints/` into the
protocol's checkpoint directory before the run and uploads it after every epoch, so a retried pod
resumes. The detection protocols keep theirs under `<cache_dir>/detection/<key>`
(`bobench.detection.run`), the key hashed from `run_identity` (protocol, backbone digest, dataset
fingerprint, the config `run_detection` gets, seed, train and val images). These functions call the
same `run_identity` with what the Job has before the run: the backbone spec, the loaded dataset, the
protocol's resolved config and the seed, with the train/val images chosen as each protocol's
`evaluate` chooses them (`ood_detection.site_sets`). The signature is the one
`k8s_jobs.CHECKPOINTED` names: `(cache_dir, spec, dataset, config, seed) -> Path`. A dataset that is
not a detection set, or an OOD shift that cannot be formed, raises InvalidArgument (a config error:
the Job fails at once).
"""

from __future__ import annotations

from pathlib import Path

from bobench.data.detection import require_detection
from bobench.detection.config import DEFAULTS
from bobench.detection.run import checkpoint_dir, run_identity

OOD_DOMAIN_KEYS = ("source_sites", "target")  # ood_detection's own keys: not the detector's config


def _plain(protocol: str, cache_dir, spec, dataset, config: dict, seed: int) -> Path:
    ds = require_detection(dataset, protocol)
    train, val = ds.split("train").tolist(), ds.split("val").tolist()
    return checkpoint_dir(Path(cache_dir), run_identity(protocol, spec, ds, config, seed, train, val))


def detection_checkpoint_dir(cache_dir, spec, dataset, config: dict, seed: int) -> Path:
    """The `detection` run's checkpoint directory."""
    return _plain("detection", cache_dir, spec, dataset, config, seed)


def instance_segmentation_checkpoint_dir(cache_dir, spec, dataset, config: dict, seed: int) -> Path:
    """The `instance_segmentation` run's checkpoint directory."""
    return _plain("instance_segmentation", cache_dir, spec, dataset, config, seed)


def ood_detection_checkpoint_dir(cache_dir, spec, dataset, config: dict, seed: int) -> Path:
    """The `ood_detection` run's checkpoint directory: trained on the source sites' train/val tiles
    (or, with a `target`, on the dataset's own train/val split)."""
    from bobench.protocols.ood_detection import site_sets

    ds = require_detection(dataset, "ood_detection")
    if config["target"] is not None:
        train, val = ds.split("train").tolist(), ds.split("val").tolist()
    else:
        train, val, _, _ = site_sets(ds, config["source_sites"])
    model_config = {**DEFAULTS, **{k: v for k, v in config.items() if k not in OOD_DOMAIN_KEYS}}
    identity = run_identity("ood_detection", spec, ds, model_config, seed, train, val)
    return checkpoint_dir(Path(cache_dir), identity)
