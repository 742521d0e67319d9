"""Weighted k-nearest-neighbour classification on frozen features (the DINOv2 / solo-learn protocol).

Features are L2-normalised; each test query takes its k most cosine-similar items of the bank
(train, plus val by default — kNN has no hyper-parameter chosen on val) and scores every class by the
sum of exp(similarity / T) over the neighbours of that class. Classes are ranked by score, ties to
the lower class index; a class without any neighbour vote never counts as a hit, so "top5" cannot be
won by a zero-score tie.

Top-1 at every k carries a seeded bootstrap interval over the test queries (`top1_k{k}_ci_low/_ci_high`,
and `top1_ci_low/_ci_high` for the ranked figure), with `n_test`.

Similarities are computed block by block (queries × bank), keeping only a running top-k, so memory
is bounded by the block sizes and not by the bank size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from bobench.errors import InvalidArgument
from bobench.protocols.base import RunContext, get_protocol
from bobench.protocols.classification_ci import accuracy_ci_fields
from bobench.protocols.metrics import check_features, l2_normalize, n_classes, positive_float, positive_ints

log = logging.getLogger(__name__)


def nearest_neighbours(
    queries: np.ndarray, bank: np.ndarray, k: int, *, query_block: int = 1024, bank_block: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest inner products of each query row with the bank rows.

    Returns (similarities float32 [nq, k] in descending order, bank indices int64 [nq, k]). Raises
    InvalidArgument when k exceeds the bank size.
    """
    if k > bank.shape[0]:
        raise InvalidArgument(f"k={k} exceeds the {bank.shape[0]} items of the kNN bank")
    bank_t = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    sims_out, idx_out = [], []
    for q0 in range(0, queries.shape[0], query_block):
        q = torch.from_numpy(np.ascontiguousarray(queries[q0 : q0 + query_block], dtype=np.float32))
        best_sim = torch.full((q.shape[0], 0), -torch.inf)
        best_idx = torch.zeros((q.shape[0], 0), dtype=torch.int64)
        for b0 in range(0, bank_t.shape[0], bank_block):
            sims = q @ bank_t[b0 : b0 + bank_block].T
            top_sim, top_idx = sims.topk(min(k, sims.shape[1]), dim=1)
            merged_sim = torch.cat([best_sim, top_sim], dim=1)
            merged_idx = torch.cat([best_idx, top_idx + b0], dim=1)
            keep = merged_sim.topk(min(k, merged_sim.shape[1]), dim=1).indices
            best_sim, best_idx = merged_sim.gather(1, keep), merged_idx.gather(1, keep)
        sims_out.append(best_sim.numpy())
        idx_out.append(best_idx.numpy())
    return np.concatenate(sims_out), np.concatenate(idx_out)


def knn_class_scores(
    neighbour_sims: np.ndarray, neighbour_labels: np.ndarray, k: int, temperature: float, num_classes: int
) -> np.ndarray:
    """Per-class vote [nq, num_classes]: Σ exp(sim / T) over each query's first k neighbours of that class."""
    weights = np.exp(neighbour_sims[:, :k].astype(np.float64) / temperature)
    scores = np.zeros((neighbour_sims.shape[0], num_classes))
    rows = np.repeat(np.arange(neighbour_sims.shape[0]), k)
    np.add.at(scores, (rows, neighbour_labels[:, :k].ravel()), weights.ravel())
    return scores


def knn_topk_hits(scores: np.ndarray, y: np.ndarray, top: int) -> np.ndarray:
    """Bool [nq]: the true class has a positive vote and is among the `top` best (ties: lower class)."""
    ranking = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    in_top = (ranking == y[:, None]).any(axis=1)
    return in_top & (scores[np.arange(len(y)), y] > 0)


def knn_metrics(
    bank_x: np.ndarray,
    bank_y: np.ndarray,
    query_x: np.ndarray,
    query_y: np.ndarray,
    ks: list[int],
    temperature: float,
    num_classes: int,
    *,
    ci_seed: int | None = None,
) -> dict[str, float | None]:
    """`top1_k{k}` and `top5_k{k}` (None with fewer than 5 classes) for every k; features as given.

    A k larger than the bank gives None for that k. With `ci_seed`, top1_k{k} gets its bootstrap
    interval over the queries (`top1_k{k}_ci_low/_ci_high`, None where the figure is None).
    """
    usable = [k for k in ks if k <= bank_x.shape[0]]
    metrics: dict[str, float | None] = {}
    if usable:
        sims, idx = nearest_neighbours(query_x, bank_x, max(usable))
        labels = bank_y[idx]
    for k in ks:
        if k not in usable:
            log.warning("kNN: k=%d exceeds the bank of %d items; top1_k%d is null", k, bank_x.shape[0], k)
            metrics[f"top1_k{k}"] = None
            metrics[f"top5_k{k}"] = None
            if ci_seed is not None:
                metrics.update(accuracy_ci_fields(f"top1_k{k}", None, seed=ci_seed))
            continue
        scores = knn_class_scores(sims, labels, k, temperature, num_classes)
        hits = knn_topk_hits(scores, query_y, 1)
        metrics[f"top1_k{k}"] = float(hits.mean())
        if ci_seed is not None:
            metrics.update(accuracy_ci_fields(f"top1_k{k}", hits, seed=ci_seed))
        metrics[f"top5_k{k}"] = float(knn_topk_hits(scores, query_y, 5).mean()) if num_classes >= 5 else None
    return metrics


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """kNN accuracy of the test split against the bank splits. Deterministic; `seed` seeds only the
    bootstrap intervals."""
    config = get_protocol("knn").resolve_config(config)
    ks = positive_ints(config["ks"], "knn: 'ks'")
    temperature = positive_float(config["temperature"], "knn: 'temperature'")
    bank_splits = config["bank_splits"]
    if isinstance(bank_splits, str):
        bank_splits = [bank_splits]
    query_split = config["query_split"]
    if not bank_splits or query_split in bank_splits:
        raise InvalidArgument(
            f"knn: 'bank_splits' {bank_splits!r} must be non-empty and must not contain the query split {query_split!r}"
        )
    parts = [check_features(*ctx.features(name), f"knn: split {name!r}") for name in bank_splits]
    query_x, query_y = check_features(*ctx.features(query_split), f"knn: split {query_split!r}")
    bank_x = l2_normalize(np.concatenate([x for x, _ in parts]))
    bank_y = np.concatenate([y for _, y in parts])
    if bank_x.shape[1] != query_x.shape[1]:
        raise InvalidArgument(
            f"knn: bank features are {bank_x.shape[1]}-d but query features {query_x.shape[1]}-d"
        )
    num_classes = n_classes(ctx, bank_y, query_y)
    ctx.progress(0, 1, f"kNN: {len(query_y)} queries against {len(bank_y)} items")
    metrics: dict[str, Any] = knn_metrics(
        bank_x, bank_y, l2_normalize(query_x), query_y, ks, temperature, num_classes, ci_seed=seed
    )
    ctx.progress(1, 1, "kNN: done")
    # the ranked figure: top-1 at the largest k asked for (top1_k20 with the default ks)
    top_k = max(ks)
    metrics.update(top1=metrics[f"top1_k{top_k}"], top1_at_k=top_k, n_bank=int(len(bank_y)),
                   top1_ci_low=metrics[f"top1_k{top_k}_ci_low"], top1_ci_high=metrics[f"top1_k{top_k}_ci_high"],
                   n_test=int(len(query_y)))  # fmt: skip
    return metrics
