"""Few-shot linear probe (ELEVATER-style): k labelled images per class, repeated over sampling seeds.

For each shot count k and each repeat, k train items per class are drawn without replacement, the
linear probe's C grid is fitted on those shots in one batched pass (the same solver as
`linear_probe`), C is chosen on the full val split (ties to the stronger penalty) and the model fitted
on the shots at that C is scored on test — no refit, so the classifier only ever sees k·classes labels.

Metrics, per k: `top1_{k}shot_mean`, `top1_{k}shot_std` (sample std over repeats; None for a single
repeat) and `chosen_C_{k}shot` (one per repeat). `top1_fewshot_mean` — the mean of the per-k means —
is the primary figure. A k larger than the smallest class's train count cannot be sampled: its
figures are None and k is listed in `skipped_shots` (with `min_train_per_class`), rather than failing.
Repeat r of shot count k uses the random generator seeded by (run seed, k, r), so runs reproduce.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument
from bobench.protocols.base import Protocol, RunContext, register_protocol
from bobench.protocols.linear_probe import resolve_grid, solver_options, sweep_and_select
from bobench.protocols.metrics import check_features, l2_normalize, positive_ints

log = logging.getLogger(__name__)


def sample_shots(y: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `shots` items per class of `y`, drawn without replacement.

    Raises InvalidArgument naming the class when it has fewer than `shots` items.
    """
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if members.size < shots:
            raise InvalidArgument(
                f"class {int(label)} has {members.size} train items, fewer than {shots} shots"
            )
        chosen.append(rng.choice(members, size=shots, replace=False))
    return np.sort(np.concatenate(chosen))


def fewshot_top1(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    grid: np.ndarray,
    **solver: Any,
) -> tuple[float, float]:
    """(test top1, chosen C) of one few-shot repeat; features are used as given."""
    picked = sample_shots(y_train, shots, rng)
    fit, _, chosen = sweep_and_select(x_train[picked], y_train[picked], x_val, y_val, grid, **solver)
    top1 = float((fit.predict(x_test)[chosen] == y_test).mean())
    return top1, float(fit.Cs[chosen])


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Few-shot top1 (mean ± std over repeats) per shot count; see the module docstring."""
    config = PROTOCOL.resolve_config(config)
    shot_counts = positive_ints(config["shots"], "fewshot: 'shots'")
    repeats = positive_ints(config["seeds"], "fewshot: 'seeds'")
    if len(repeats) != 1:
        raise InvalidArgument(
            f"fewshot: 'seeds' is the number of repeats (one integer), got {config['seeds']!r}"
        )
    n_repeats = repeats[0]
    grid, solver = resolve_grid(config, "fewshot"), solver_options(config, "fewshot")
    data = {}
    for name in ("train", "val", "test"):
        x, y = check_features(*ctx.features(name), f"fewshot: split {name!r}")
        data[name] = (l2_normalize(x), y)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = data["train"], data["val"], data["test"]
    labels, counts = np.unique(y_tr, return_counts=True)
    smallest = int(counts.min())
    metrics: dict[str, Any] = {
        "min_train_per_class": smallest,
        "n_classes_train": int(labels.size),
        "n_test": len(y_te),
    }
    skipped, means = [], []
    total, done = len(shot_counts) * n_repeats, 0
    for k in shot_counts:
        if k > smallest:
            log.warning(
                "fewshot: %d-shot skipped: class %d has only %d train items",
                k,
                int(labels[counts.argmin()]),
                smallest,
            )
            skipped.append(k)
            metrics.update({f"top1_{k}shot_mean": None, f"top1_{k}shot_std": None, f"chosen_C_{k}shot": None})
            continue
        top1s, chosen_Cs = [], []
        for r in range(n_repeats):
            ctx.progress(done, total, f"few-shot: {k}-shot, repeat {r + 1}/{n_repeats}")
            rng = np.random.default_rng([seed, k, r])
            top1, chosen_C = fewshot_top1(x_tr, y_tr, x_va, y_va, x_te, y_te, k, rng, grid, **solver)
            top1s.append(top1)
            chosen_Cs.append(chosen_C)
            done += 1
        means.append(float(np.mean(top1s)))
        metrics[f"top1_{k}shot_mean"] = means[-1]
        metrics[f"top1_{k}shot_std"] = float(np.std(top1s, ddof=1)) if n_repeats > 1 else None
        metrics[f"chosen_C_{k}shot"] = chosen_Cs
    ctx.progress(total, total, "few-shot: done")
    metrics["top1_fewshot_mean"] = float(np.mean(means)) if means else None
    metrics["skipped_shots"] = skipped
    return metrics


PROTOCOL = register_protocol(
    Protocol(
        name="fewshot",
        version="1",
        task="fewshot",
        evaluate=evaluate,
        defaults={"shots": [1, 5, 10], "seeds": 3, "grid": None, "max_iter": 1000, "tol": 1e-4},
        primary_metric="top1_fewshot_mean",
        higher_is_better={
            "top1_fewshot_mean": True,
            **{f"top1_{k}shot_mean": True for k in (1, 2, 4, 5, 8, 10, 16, 20, 50, 100)},
        },
        description="k-shot linear probe (C chosen on val), mean ± std of test top1 over sampling repeats.",
    )
)
