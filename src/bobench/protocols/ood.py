"""OOD generalisation: a linear probe trained in-distribution, tested under distribution shift.

The probe is the linear-probe protocol's own logistic regression (`bobench.protocols.linear_probe`):
L2-normalised frozen features, C chosen on the "val" split, refit on train+val at that C. It is then
scored on the clean test split (`id_top1`) and on two kinds of shifted test data, each optional (at
least one is required):

* **Synthetic shift (ImageNet-C).** The run dataset's test split under each configured corruption
  and severity (`ctx.features("test", variant="corrupt:<name>:<severity>")`). Reported per
  corruption x severity (`top1_<name>_s<severity>`), per corruption averaged over severities
  (`top1_<name>`), and as the mean corruption accuracy over every pair (`mca`), with its absolute
  (`mca_drop` = id_top1 - mca) and relative (`mca_relative_drop` = mca_drop / id_top1) drop.
  The default is one corruption per ImageNet-C family (noise, blur, weather, digital) at severity 3,
  so a demo stays fast; `corruptions: all` and `severities: all` give the full 19 x 5 grid.
* **Natural shift.** `target: <dataset ref>` (e.g. MNIST -> "uci_digits"): the target's
  `target_split` is scored (`target_top1`). Target labels are mapped onto the source classes by
  class *name*; a target class the source does not have is an error. A target with fewer classes is
  an error too, unless `mask_target_classes: true`, which restricts the probe's scores to the
  target's classes (BoB's ImageNet-A/R logit masking).

Primary metric `ood_top1`: the natural-shift accuracy (`target_top1`) when a target is configured —
the shift the BoB paper ranks on — otherwise the mean corruption accuracy (`mca`). `gap` is always
`id_top1 - ood_top1`. Within one battle setting the config is fixed, so `ood_top1` means one thing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument
from bobench.protocols.base import Protocol, RunContext, register_protocol
from bobench.protocols.linear_probe import (
    LogisticGridFit,
    fit_logistic_grid,
    resolve_grid,
    solver_options,
    sweep_and_select,
)
from bobench.protocols.metrics import check_features, l2_normalize

log = logging.getLogger(__name__)

# one corruption from each ImageNet-C family: noise, blur, weather, digital
DEFAULT_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog", "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)


def corruption_variant(name: str, severity: int) -> str:
    """The feature-cache variant name of an ImageNet-C corruption (see `bobench.data.corruptions`)."""
    return f"corrupt:{name}:{severity}"


def resolve_corruptions(value: Any) -> list[str]:
    """The configured corruption names: a list, "all" (every known corruption) or null/[] (none).

    Raises InvalidArgument for an unknown name (with close matches) or a malformed value.
    """
    if value is None or value == []:
        return []
    from bobench.data.corruptions import CORRUPTIONS

    known = list(CORRUPTIONS)
    if value == "all":
        return known
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"ood: 'corruptions' must be a list of names, 'all' or null, got {value!r}")
    for name in value:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InvalidArgument(
                f"ood: unknown corruption {name!r} in 'corruptions'{hint} (known: {', '.join(known)})"
            )
    return list(dict.fromkeys(value))


def resolve_severities(value: Any) -> list[int]:
    """Severities 1..5 from a list, a single int or "all"; InvalidArgument otherwise."""
    if value == "all":
        return list(SEVERITIES)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise InvalidArgument(
            f"ood: 'severities' must be a non-empty list of integers 1..5 or 'all', got {value!r}"
        )
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES:
            raise InvalidArgument(f"ood: severity {s!r} in 'severities' is not an integer in 1..5")
    return sorted(set(value))


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


def probe_accuracy(
    fit: LogisticGridFit, x: np.ndarray, y: np.ndarray, allowed: list[int] | None = None
) -> float:
    """Top-1 accuracy of the (single-C) fit on (x, y); `allowed` restricts predictions to those labels."""
    scores = fit.decision_scores(x)[0]
    columns = np.arange(len(fit.classes))
    if allowed is not None:
        columns = np.flatnonzero(np.isin(fit.classes, allowed))
        if columns.size == 0:
            raise InvalidArgument("ood: none of the target's classes was seen when training the probe")
    predicted = fit.classes[columns[scores[:, columns].argmax(axis=1)]]
    return float((predicted == np.asarray(y)).mean())


def _features(ctx: RunContext, split: str, where: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = check_features(*ctx.features(split, **kwargs), where)
    return l2_normalize(x), y


def _corruption_metrics(
    ctx: RunContext, fit: LogisticGridFit, pairs: list[tuple[str, int]], id_top1: float, step: int, total: int
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    by_name: dict[str, list[float]] = {}
    for i, (name, severity) in enumerate(pairs):
        variant = corruption_variant(name, severity)
        ctx.progress(step + i, total, f"ood: {variant}")
        x, y = _features(ctx, "test", f"ood: test split under {variant}", variant=variant)
        acc = probe_accuracy(fit, x, y)
        metrics[f"top1_{name}_s{severity}"] = acc
        by_name.setdefault(name, []).append(acc)
    for name, accs in by_name.items():
        metrics[f"top1_{name}"] = float(np.mean(accs))
    mca = float(np.mean([metrics[f"top1_{n}_s{s}"] for n, s in pairs]))
    metrics.update(
        mca=mca,
        mca_drop=id_top1 - mca,
        mca_relative_drop=(id_top1 - mca) / id_top1 if id_top1 > 0 else None,
        n_corruptions=len(by_name),
        n_corruption_pairs=len(pairs),
    )
    return metrics


def _target_metrics(ctx: RunContext, fit: LogisticGridFit, config: dict[str, Any]) -> dict[str, Any]:
    target = ctx.dataset_by_ref(config["target"])
    split = config["target_split"]
    where = f"ood: target dataset {target.name!r} split {split!r}"
    x, y_target = _features(ctx, split, where, dataset=target)
    y, allowed = map_target_labels(
        ctx.dataset.classes, target.classes, y_target, mask=bool(config["mask_target_classes"]), where=where
    )
    return {
        "target_top1": probe_accuracy(fit, x, y, allowed),
        "n_target": int(len(y)),
        "target_classes": len(allowed) if allowed is not None else len(ctx.dataset.classes),
    }


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the probe in-distribution, score the clean and shifted test sets (module docstring).

    The probe fit is deterministic, so `seed` is unused. Raises InvalidArgument for a config with
    neither corruptions nor a target, unknown corruptions, bad severities or mismatched label sets.
    """
    config = PROTOCOL.resolve_config(config)
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
    _, val_accuracy, chosen = sweep_and_select(x_tr, y_tr, x_va, y_va, grid, **options)
    chosen_C = float(grid[chosen])
    ctx.progress(1, total, f"ood: refit at C={chosen_C:.3g}")
    fit = fit_logistic_grid(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), [chosen_C], **options)
    x_te, y_te = _features(ctx, "test", "ood: split 'test'")
    id_top1 = probe_accuracy(fit, x_te, y_te)
    metrics: dict[str, Any] = {
        "id_top1": id_top1,
        "val_top1": float(val_accuracy[chosen]),
        "chosen_C": chosen_C,
        "n_train": int(len(y_tr)),
        "n_val": int(len(y_va)),
        "n_test": int(len(y_te)),
    }
    if pairs:
        metrics.update(_corruption_metrics(ctx, fit, pairs, id_top1, 2, total))
    if config["target"] is not None:
        ctx.progress(total - 1, total, "ood: natural-shift target")
        metrics.update(_target_metrics(ctx, fit, config))
    metrics["ood_top1"] = metrics["target_top1"] if config["target"] is not None else metrics["mca"]
    metrics["gap"] = id_top1 - metrics["ood_top1"]
    ctx.progress(total, total, "ood: done")
    return metrics


PROTOCOL = register_protocol(
    Protocol(
        name="ood",
        version="1",
        task="ood",
        evaluate=evaluate,
        seeded=False,  # deterministic: once per split seed
        defaults={
            "corruptions": list(DEFAULT_CORRUPTIONS),
            "severities": [3],
            "target": None,
            "target_split": "test",
            "mask_target_classes": False,
            "grid": None,
            "max_iter": 1000,
            "tol": 1e-4,
        },
        primary_metric="ood_top1",
        higher_is_better={
            "ood_top1": True,
            "id_top1": True,
            "val_top1": True,
            "mca": True,
            "target_top1": True,
            "gap": False,
            "mca_drop": False,
            "mca_relative_drop": False,
        },
        description="Linear probe trained in-distribution, tested on ImageNet-C corruptions and/or a shifted dataset.",
    )
)
