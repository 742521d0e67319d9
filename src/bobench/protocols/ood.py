"""OOD generalisation: a linear probe trained in-distribution, tested under distribution shift.

The probe is the linear-probe protocol's own logistic regression (`bobench.protocols.linear_probe`):
L2-normalised frozen features, C chosen on the "val" split, refit on train+val at that C. It is then
scored on the clean test split (`id_top1`) and on two kinds of shifted test data, each optional (at
least one is required):

* **Synthetic shift (ImageNet-C).** The run dataset's test split under each configured corruption
  and severity (`ctx.features("test", variant="corrupt:<name>:<severity>")`), corrupted at the
  model's input resolution after resize/crop as ImageNet-C does (`bobench.data.corruptions`).
  Reported per corruption x severity (`top1_<name>_s<severity>`), per corruption averaged over
  severities (`top1_<name>`, and its error `err_<name>` = 1 - top1_<name>), and as the mean
  corruption accuracy over every pair with its absolute drop (id_top1 - mean) and relative drop
  (drop / id_top1). The mean is named `mca` (`mca_drop`, `mca_relative_drop`) only for the full
  ImageNet-C grid — the 15 common corruptions x severities 1..5 — and `mca_partial` (`mca_partial_drop`,
  `mca_partial_relative_drop`) for any other grid; `corruption_grid_complete` is 1.0 or 0.0.
  `corruptions: all` means the 15 common corruptions in ImageNet-C's order; the 4 extra (held-out)
  ones are opt-in, by name or with `all+extra`. The default is one corruption per ImageNet-C family
  (noise, blur, weather, digital) at severity 3, a partial grid that keeps a demo fast.
* **mCE.** ImageNet-C's corruption error needs a reference model's errors, so it is computed where
  every backbone's record is known (`bobench.analysis.corruption_error.corruption_errors`, from the
  `err_<name>` and `id_err` of a backbone's record and of the reference's): `mce_reference` names the
  reference backbone (null: the analysis' default, see that module). This protocol only records the
  per-corruption errors it needs.
* **Natural shift.** `target: <dataset ref>` (e.g. MNIST -> "uci_digits"): the target's
  `target_split` is scored (`target_top1`). Target labels are mapped onto the source classes by
  class *name*; a target class the source does not have is an error. A target with fewer classes is
  an error too, unless `mask_target_classes: true`, which restricts the probe's scores to the
  target's classes (BoB's ImageNet-A/R logit masking).

Primary metric `ood_top1`: the natural-shift accuracy (`target_top1`) when a target is configured —
the shift the BoB paper ranks on — otherwise the mean corruption accuracy (`mca` / `mca_partial`).
`gap` is always `id_top1 - ood_top1`. Within one battle setting the config is fixed, so `ood_top1`
means one thing.

Confidence intervals (`<metric>_ci_low` / `_ci_high`, `bobench.bootstrap_ci`, seeded with the
run's seed) are over test images: for `id_top1`, every `top1_<name>`, the corruption mean and `gap`
(paired per test image, the same images under every corruption) over the `n_test` images, and for
`target_top1` over the `n_target` target images. With a target, `gap` pairs two different image
sets and has no interval.

Version 2: corruptions at the model's input resolution (version 1 corrupted the native image), the
grid named full or partial, per-corruption errors and intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bobench.bootstrap_ci import bootstrap_mean_ci, ci_fields
from bobench.errors import InvalidArgument
from bobench.protocols.base import RunContext, get_protocol
from bobench.protocols.linear_probe import (
    LogisticGridFit,
    resolve_grid,
    select_and_refit,
    solver_options,
)
from bobench.protocols.metrics import check_features, l2_normalize
from bobench.protocols.options import SEVERITIES, resolve_corruptions, resolve_severities

log = logging.getLogger(__name__)


def corruption_variant(name: str, severity: int) -> str:
    """The feature-cache variant name of an ImageNet-C corruption (see `bobench.data.corruptions`)."""
    return f"corrupt:{name}:{severity}"


def map_target_labels(
    source_classes: list[str], target_classes: list[str], target_labels: np.ndarray, *, mask: bool, where: str
) -> tuple[np.ndarray, list[int] | None]:
    """Map target label indices onto source class indices by class name.

    Returns (mapped labels, allowed source columns or None). `allowed` lists the source class indices
    the target has, when the target covers only part of the source classes and `mask` is true.
    Raises InvalidArgument when the target has a class the source lacks, or covers only part of the
    source classes without `mask`.
    """
    source_index = {str(name): i for i, name in enumerate(source_classes)}
    missing = [str(c) for c in target_classes if str(c) not in source_index]
    if missing:
        raise InvalidArgument(
            f"{where}: class(es) {missing[:5]}{' ...' if len(missing) > 5 else ''} are not among the source "
            f"dataset's {len(source_classes)} classes; the label sets must match by name"
        )
    lookup = np.array([source_index[str(c)] for c in target_classes], dtype=np.int64)
    mapped = lookup[np.asarray(target_labels, dtype=np.int64)]
    if len(set(lookup.tolist())) == len(source_classes):
        return mapped, None
    absent = [str(c) for c in source_classes if str(c) not in {str(t) for t in target_classes}]
    if not mask:
        raise InvalidArgument(
            f"{where}: the target lacks source class(es) {absent[:5]}{' ...' if len(absent) > 5 else ''}; "
            "set 'mask_target_classes: true' to score only the target's classes"
        )
    return mapped, sorted(set(lookup.tolist()))


def probe_correct(
    fit: LogisticGridFit, x: np.ndarray, y: np.ndarray, allowed: list[int] | None = None
) -> np.ndarray:
    """Per-item top-1 correctness (float 1.0/0.0) of the (single-C) fit on (x, y); `allowed` restricts
    predictions to those labels."""
    scores = fit.decision_scores(x)[0]
    columns = np.arange(len(fit.classes))
    if allowed is not None:
        columns = np.flatnonzero(np.isin(fit.classes, allowed))
        if columns.size == 0:
            raise InvalidArgument("ood: none of the target's classes was seen when training the probe")
    predicted = fit.classes[columns[scores[:, columns].argmax(axis=1)]]
    return (predicted == np.asarray(y)).astype(np.float64)


def probe_accuracy(
    fit: LogisticGridFit, x: np.ndarray, y: np.ndarray, allowed: list[int] | None = None
) -> float:
    """Top-1 accuracy of the (single-C) fit on (x, y) (see `probe_correct`)."""
    return float(probe_correct(fit, x, y, allowed).mean())


def is_full_grid(corruptions: list[str], severities: list[int]) -> bool:
    """Whether (corruptions, severities) holds ImageNet-C's benchmark grid: the 15 common corruptions
    x severities 1..5 (extra corruptions may be present too; the mean then covers the common 15 only)."""
    from bobench.data.corruptions import COMMON_CORRUPTIONS

    return set(COMMON_CORRUPTIONS) <= set(corruptions) and list(severities) == list(SEVERITIES)


def _features(ctx: RunContext, split: str, where: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = check_features(*ctx.features(split, **kwargs), where)
    return l2_normalize(x), y


def _corruption_metrics(
    ctx: RunContext,
    fit: LogisticGridFit,
    pairs: list[tuple[str, int]],
    id_correct: np.ndarray,
    progress: tuple[int, int],
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """Per-pair, per-corruption and mean metrics with intervals over the test images (module docstring),
    and the per-image correctness averaged over the pairs in the mean."""
    from bobench.data.corruptions import COMMON_CORRUPTIONS

    metrics: dict[str, Any] = {}
    correct: dict[tuple[str, int], np.ndarray] = {}
    for i, (name, severity) in enumerate(pairs):
        variant = corruption_variant(name, severity)
        ctx.progress(progress[0] + i, progress[1], f"ood: {variant}")
        x, y = _features(ctx, "test", f"ood: test split under {variant}", variant=variant)
        correct[(name, severity)] = probe_correct(fit, x, y)
        metrics[f"top1_{name}_s{severity}"] = float(correct[(name, severity)].mean())
    names = list(dict.fromkeys(name for name, _ in pairs))
    for name in names:
        per_image = np.mean([c for (n, _), c in correct.items() if n == name], axis=0)
        metrics[f"top1_{name}"] = float(per_image.mean())
        metrics[f"err_{name}"] = 1.0 - metrics[f"top1_{name}"]
        metrics.update(ci_fields(f"top1_{name}", bootstrap_mean_ci(per_image, seed=seed)))
    full = is_full_grid(names, sorted({s for _, s in pairs}))
    in_mean = [p for p in pairs if p[0] in COMMON_CORRUPTIONS] if full else pairs
    prefix = "mca" if full else "mca_partial"
    per_image = np.mean([correct[p] for p in in_mean], axis=0)
    mean, id_top1 = float(per_image.mean()), float(id_correct.mean())
    metrics.update(
        {
            prefix: mean,
            f"{prefix}_drop": id_top1 - mean,
            f"{prefix}_relative_drop": (id_top1 - mean) / id_top1 if id_top1 > 0 else None,
            "corruption_grid_complete": 1.0 if full else 0.0,
            "n_corruptions": len(names),
            "n_corruption_pairs": len(pairs),
        },
        **ci_fields(prefix, bootstrap_mean_ci(per_image, seed=seed)),
    )
    return metrics, per_image


def _target_metrics(
    ctx: RunContext, fit: LogisticGridFit, config: dict[str, Any], seed: int
) -> dict[str, Any]:
    target = ctx.dataset_by_ref(config["target"])
    split = config["target_split"]
    where = f"ood: target dataset {target.name!r} split {split!r}"
    x, y_target = _features(ctx, split, where, dataset=target)
    y, allowed = map_target_labels(
        ctx.dataset.classes, target.classes, y_target, mask=bool(config["mask_target_classes"]), where=where
    )
    correct = probe_correct(fit, x, y, allowed)
    return {
        "target_top1": float(correct.mean()),
        **ci_fields("target_top1", bootstrap_mean_ci(correct, seed=seed)),
        "n_target": int(len(y)),
        "target_classes": len(allowed) if allowed is not None else len(ctx.dataset.classes),
    }


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the probe in-distribution, score the clean and shifted test sets (module docstring).

    The probe fit is deterministic; `seed` seeds the bootstrap intervals. Raises InvalidArgument for a config with
    neither corruptions nor a target, unknown corruptions, bad severities or mismatched label sets.
    """
    config = get_protocol("ood").resolve_config(config)
    corruptions = resolve_corruptions(config["corruptions"])
    severities = resolve_severities(config["severities"])
    if not corruptions and config["target"] is None:
        raise InvalidArgument("ood: nothing to evaluate; set 'corruptions' (a list or 'all') and/or 'target'")
    grid, options = resolve_grid(config, "ood"), solver_options(config, "ood")
    pairs = [(name, s) for name in corruptions for s in severities]
    total = 3 + len(pairs) + (config["target"] is not None)

    ctx.progress(0, total, f"ood: fitting the probe over {len(grid)} C values")
    x_tr, y_tr = _features(ctx, "train", "ood: split 'train'")
    x_va, y_va = _features(ctx, "val", "ood: split 'val'")
    selected = select_and_refit(x_tr, y_tr, x_va, y_va, grid, options)  # linear_probe's, when it ran
    chosen_C, fit = selected.chosen_C, selected.final
    ctx.progress(1, total, f"ood: refit at C={chosen_C:.3g}")
    x_te, y_te = _features(ctx, "test", "ood: split 'test'")
    id_correct = probe_correct(fit, x_te, y_te)
    id_top1 = float(id_correct.mean())
    metrics: dict[str, Any] = {
        "id_top1": id_top1,
        "id_err": 1.0 - id_top1,
        **ci_fields("id_top1", bootstrap_mean_ci(id_correct, seed=seed)),
        "val_top1": float(selected.val_accuracy[selected.chosen]),
        "chosen_C": chosen_C,
        "n_train": int(len(y_tr)),
        "n_val": int(len(y_va)),
        "n_test": int(len(y_te)),
    }
    if pairs:
        corrupted, per_image = _corruption_metrics(ctx, fit, pairs, id_correct, (2, total), seed)
        metrics.update(corrupted)
    if config["target"] is not None:
        ctx.progress(total - 1, total, "ood: natural-shift target")
        metrics.update(_target_metrics(ctx, fit, config, seed))
        metrics["ood_top1"] = metrics["target_top1"]
        metrics.update(ci_fields("ood_top1", (metrics["target_top1_ci_low"], metrics["target_top1_ci_high"])))
    else:
        mean_name = "mca" if metrics["corruption_grid_complete"] else "mca_partial"
        metrics["ood_top1"] = metrics[mean_name]
        metrics.update(
            ci_fields("ood_top1", (metrics[f"{mean_name}_ci_low"], metrics[f"{mean_name}_ci_high"]))
        )
        metrics.update(ci_fields("gap", bootstrap_mean_ci(id_correct - per_image, seed=seed)))
    metrics["gap"] = id_top1 - metrics["ood_top1"]
    ctx.progress(total, total, "ood: done")
    return metrics
