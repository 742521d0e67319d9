"""Retrieval on frozen features: rank the gallery for every query by cosine similarity (exact search).

A gallery item is a positive for a query when their labels match. Ranking order is deterministic:
score descending, then gallery index ascending. Metrics (BoB + CLIP_benchmark definitions, under
distinct names):

- `mAP`: mean over queries of average precision, tie-aware exactly as scikit-learn's
  `average_precision_score` — items with equal scores form one threshold, so AP does not depend on
  how ties are ordered;
- `MRR`: mean of 1 / rank of the first positive;
- `precision@k`: positives in the top k, over k (None when the gallery has fewer than k items);
- `recall@k`: share of the query's positives found in the top k (BoB's "true recall");
- `hit@k`: 1 if any positive is in the top k (what CLIP_benchmark calls recall@k).

Queries without any positive in the gallery are excluded and counted (`n_queries_without_positives`).
When the query and gallery splits are the same, each query's own item is removed from its ranking.

`query_variant` reads the queries through a transform (e.g. "corrupt:gaussian_noise:3") while the
gallery stays clean — the corrupted-query robust-retrieval setting. A list of variants reports every
metric per variant as "<variant>/<metric>" ("clean/<metric>" for None) and the plain metric names
hold the mean over the variants (the robust score).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument, Unavailable
from bobench.protocols.base import Protocol, RunContext, register_protocol
from bobench.protocols.metrics import check_features, l2_normalize, positive_ints

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)


def order_ranking(scores: np.ndarray, gallery_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-sort each row by score descending, then gallery index ascending (the documented tie order).

    `scores` and `gallery_idx` are [nq, m]; returns both re-ordered.
    """
    order = np.lexsort((gallery_idx, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(gallery_idx, order, axis=1)


def rank_gallery(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product ranking of the whole gallery for each query with faiss `IndexFlatIP`.

    Returns (scores float32 [nq, ng], gallery indices int64 [nq, ng]) in the documented order.
    Raises Unavailable when faiss is not installed.
    """
    try:
        import faiss
    except ImportError as exc:  # faiss-cpu is a pinned dependency; say so if it is missing
        raise Unavailable("retrieval needs faiss (pip install faiss-cpu)") from exc
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    scores, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), gallery.shape[0])
    return order_ranking(scores, idx.astype(np.int64))


def per_query_metrics(
    sorted_scores: np.ndarray, sorted_relevant: np.ndarray, ks: list[int]
) -> dict[str, np.ndarray]:
    """Per-query AP, reciprocal rank and @k figures from rankings already in final order.

    `sorted_scores` [nq, m] (descending per row) and `sorted_relevant` bool [nq, m]. Every row must
    hold at least one positive. Returns arrays [nq] keyed "AP", "RR", "precision@k", "recall@k",
    "hit@k" (@k entries only for k ≤ m).
    """
    rel = sorted_relevant.astype(np.float64)
    nq, m = rel.shape
    n_pos = rel.sum(axis=1)
    cum_tp = np.cumsum(rel, axis=1)
    # Tie-aware AP: every item of a group of equal scores gets the precision at the group's end.
    is_group_end = np.ones((nq, m), dtype=bool)
    is_group_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    end_positions = np.where(is_group_end, np.arange(m), m)
    group_end = np.minimum.accumulate(end_positions[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(cum_tp, group_end, axis=1) / (group_end + 1)
    out = {
        "AP": (rel * precision_at_end).sum(axis=1) / n_pos,
        "RR": 1.0 / (rel.argmax(axis=1) + 1),
    }
    for k in ks:
        if k > m:
            continue
        hits = cum_tp[:, k - 1]
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_pos
        out[f"hit@{k}"] = (hits > 0).astype(np.float64)
    return out


def retrieval_metrics(
    query_x: np.ndarray,
    query_y: np.ndarray,
    gallery_x: np.ndarray,
    gallery_y: np.ndarray,
    ks: list[int],
    *,
    exclude_self: bool = False,
    query_block: int = 256,
) -> dict[str, float | int | None]:
    """mAP, MRR, precision@k, recall@k, hit@k of L2-normalised queries against a gallery.

    `exclude_self` drops gallery item i from query i's ranking (query and gallery are the same split).
    Work is done in query blocks so the [block, ng] ranking bounds memory. Metrics are None when no
    query has a positive.
    """
    sums: dict[str, float] = {}
    n_scored = n_without = 0
    for q0 in range(0, len(query_y), query_block):
        scores, idx = rank_gallery(query_x[q0 : q0 + query_block], gallery_x)
        if exclude_self:
            own = idx == np.arange(q0, q0 + len(idx))[:, None]
            scores = scores[~own].reshape(len(idx), -1)
            idx = idx[~own].reshape(len(idx), -1)
        relevant = gallery_y[idx] == query_y[q0 : q0 + len(idx), None]
        has_pos = relevant.any(axis=1)
        n_without += int((~has_pos).sum())
        n_scored += int(has_pos.sum())
        if has_pos.any():
            for name, values in per_query_metrics(scores[has_pos], relevant[has_pos], ks).items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
    m = gallery_x.shape[0] - int(exclude_self)
    metrics: dict[str, float | int | None] = {
        "mAP": sums["AP"] / n_scored if n_scored else None,
        "MRR": sums["RR"] / n_scored if n_scored else None,
    }
    for k in ks:
        for kind in ("precision", "recall", "hit"):
            name = f"{kind}@{k}"
            metrics[name] = sums[name] / n_scored if n_scored and k <= m else None
    metrics.update(n_queries=n_scored, n_queries_without_positives=n_without, n_gallery=m)
    if n_without:
        log.info("retrieval: %d queries have no positive in the gallery and are excluded", n_without)
    return metrics


def _variants(value: Any) -> tuple[list[str | None], bool]:
    """(variants, is_list) from the `query_variant` config value."""
    if value is None or isinstance(value, str):
        return [value], False
    if isinstance(value, list | tuple) and value and all(v is None or isinstance(v, str) for v in value):
        return list(value), True
    raise InvalidArgument(
        f"retrieval: 'query_variant' must be null, a string or a non-empty list of them, got {value!r}"
    )


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Retrieval metrics of the query split against the (clean) gallery split. `seed` is unused."""
    config = PROTOCOL.resolve_config(config)
    ks = positive_ints(config["ks"], "retrieval: 'ks'")
    variants, per_variant = _variants(config["query_variant"])
    query_split, gallery_split = config["query_split"], config["gallery_split"]
    gallery_x, gallery_y = check_features(*ctx.features(gallery_split), f"retrieval: split {gallery_split!r}")
    gallery_x = l2_normalize(gallery_x)
    results = []
    for i, variant in enumerate(variants):
        where = f"retrieval: split {query_split!r}" + (f" variant {variant!r}" if variant else "")
        query_x, query_y = check_features(*ctx.features(query_split, variant=variant), where)
        if query_x.shape[1] != gallery_x.shape[1]:
            raise InvalidArgument(f"{where}: {query_x.shape[1]}-d queries vs {gallery_x.shape[1]}-d gallery")
        ctx.progress(i, len(variants), f"retrieval: ranking {len(query_y)} queries ({variant or 'clean'})")
        results.append(
            retrieval_metrics(l2_normalize(query_x), query_y, gallery_x, gallery_y, ks,
                              exclude_self=query_split == gallery_split)
        )  # fmt: skip
    ctx.progress(len(variants), len(variants), "retrieval: done")
    if not per_variant:
        return results[0]
    metrics: dict[str, Any] = {}
    for variant, result in zip(variants, results, strict=True):
        metrics.update({f"{variant or 'clean'}/{name}": value for name, value in result.items()})
    for name, value in results[0].items():
        values = [r[name] for r in results]
        if name.startswith("n_"):  # the same queries and gallery in every variant
            metrics[name] = value
        else:
            metrics[name] = float(np.mean(values)) if all(v is not None for v in values) else None
    return metrics


PROTOCOL = register_protocol(
    Protocol(
        name="retrieval",
        version="1",
        task="retrieval",
        evaluate=evaluate,
        seeded=False,  # deterministic: once per split seed
        defaults={
            "ks": list(DEFAULT_KS),
            "query_split": "query",
            "gallery_split": "gallery",
            "query_variant": None,
        },
        primary_metric="mAP",
        higher_is_better={
            "mAP": True,
            "MRR": True,
            **{
                f"{kind}@{k}": True
                for kind in ("precision", "recall", "hit")
                for k in (1, 5, 10, 20, 50, 100)
            },
        },
        description="Cosine retrieval (faiss exact search) on frozen L2-normalised features; labels define positives.",
    )
)
