"""Fine-tuning protocol: end-to-end training of backbone + linear head (`bobench.finetune`).

The run's backbone module (`ctx.backbone_module()`) is trained on the run dataset's "train" split,
the epoch with the best "val" top-1 is selected, and its test top-1 is reported (`top1`, primary).
Checkpoints live under `<cache_dir>/finetune/<key>`, with the key hashed from (backbone digest,
dataset fingerprint, resolved config, seed): a run interrupted mid-training resumes from its last
completed epoch when the battle is re-run. Config keys are the fields of `FinetuneConfig`; `recipe`
("bobench" or "bob", the BoB paper's timm recipe) supplies the values of the keys not given. Test
top-1 carries a bootstrap interval over the test images (`top1_ci_low/_ci_high`, with `n_test`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bobench.finetune.config import FinetuneConfig
from bobench.finetune.loop import finetune
from bobench.hashing import CHECKPOINT_DIR_HEX, json_digest
from bobench.protocols.base import RunContext, get_protocol


def checkpoint_dir(
    cache_dir: str | Path, spec_digest: str, dataset_fingerprint: str, config: FinetuneConfig, seed: int
) -> Path:
    """Where the checkpoints of one (backbone, dataset, config, seed) fine-tuning run live."""
    doc = {
        "backbone": spec_digest,
        "dataset": dataset_fingerprint,
        "config": config.to_dict(),
        "seed": int(seed),
    }
    return Path(cache_dir) / "finetune" / json_digest(doc, CHECKPOINT_DIR_HEX)


def run_config(config: dict[str, Any] | None) -> FinetuneConfig:
    """The FinetuneConfig of a protocol config: unknown keys refused, the recipe's values under the keys
    given (the protocol's defaults are the "bobench" recipe, so they are not overlaid)."""
    get_protocol("finetune").resolve_config(config)  # refuses unknown keys, naming them
    return FinetuneConfig.from_dict(dict(config or {}), "finetune protocol config")


def run_checkpoint_dir(
    cache_dir: str | Path, spec: Any, dataset: Any, config: dict[str, Any], seed: int
) -> Path:
    """The checkpoint directory `evaluate` uses for this run (the Kubernetes Job syncs it to the store).
    Raises InvalidArgument for a bad config."""
    cfg = run_config(config)
    return checkpoint_dir(cache_dir, spec.digest(), dataset.fingerprint, cfg, seed)


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fine-tune and report the best-val epoch's test metrics. Raises InvalidArgument for a bad config,
    FailedPrecondition for a backbone without a torch module."""
    cfg = run_config(config)
    settings = getattr(ctx, "settings", None)
    if settings is None:  # a context without settings: the defaults (library code reads no environment)
        from bobench.config import Settings

        settings = Settings()
    out = checkpoint_dir(settings.cache_dir, ctx.spec.digest(), ctx.dataset.fingerprint, cfg, seed)
    metrics = finetune(
        ctx.spec, ctx.dataset, out, cfg, seed, ctx.progress, module_factory=ctx.backbone_module
    )
    metrics.pop("history", None)  # per-epoch curves stay in the checkpoint, not the run record
    metrics["checkpoint_dir"] = str(out)
    return metrics
