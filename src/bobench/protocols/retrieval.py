"""Retrieval on frozen features: rank the gallery for every query by cosine similarity (exact search).

A gallery item is a positive for a query when their labels match, unless the dataset carries
per-query ground truth (`Dataset.meta["relevance"]`, from a manifest's `positives` / `junk` columns,
see `bobench.data.relevance`): then each query's listed positives are its positives and its junk
items are removed from its ranking before every metric (revisitop's junk, e.g. ROxford Medium/Hard).
Ranking order is deterministic: score descending, then gallery index ascending. Metrics (each
definition under its own name):

- `mAP`: mean over queries of average precision, tie-aware exactly as scikit-learn's
  `average_precision_score` — items with equal scores form one threshold, so AP does not depend on
  how ties are ordered;
- `mAP_roxford`: the revisited Oxford/Paris mAP of revisitop's `compute_ap` / `compute_map` (and BoB's
  retrieval evaluation): trapezoidal AP over the ranked positives, after junk removal, ties in
  ranking order;
- `mP@k`: revisitop's capped precision at k: with L the (1-based) rank of the query's last positive,
  k' = min(k, L), positives in the top k' over k';
- `MRR`: mean over *all* queries of 1 / rank of the first positive, a query without positives
  scoring 0 (as BoB averages);
- `precision@k`: positives in the top k, over k (None when the gallery has fewer than k items);
- `recall@k`: share of the query's positives found in the top k (BoB's "true recall");
- `hit@k`: 1 if any positive is in the top k (what CLIP_benchmark calls recall@k).

Queries without any positive in the gallery are excluded from every metric but MRR and counted
(`n_queries_without_positives`); `n_queries` counts the others. When the query and gallery splits
are the same, each query's own item is removed from its ranking.

Every metric carries a percentile bootstrap interval over queries (`<metric>_ci_low` / `_ci_high`,
`bobench.bootstrap_ci`, seeded with the run's seed): over the `n_queries` scored queries, and
for MRR over all `n_queries + n_queries_without_positives`.

`query_variant` reads the queries through a transform (e.g. "corrupt:gaussian_noise:3") while the
gallery stays clean — the corrupted-query robust-retrieval setting. A list of variants reports every
metric per variant as "<variant>/<metric>" ("clean/<metric>" for None) and the plain metric names
hold the mean over the variants (the robust score), its interval from the per-query mean over the
variants (the queries are the same in every variant).

Version 2: `mAP_roxford`, `mP@k`, MRR over all queries, per-query positives/junk, intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bobench.bootstrap_ci import DEFAULT_CONFIDENCE, bootstrap_ci, ci_fields
from bobench.errors import InvalidArgument, Unavailable
from bobench.protocols.base import RunContext, get_protocol
from bobench.protocols.metrics import check_features, l2_normalize, positive_ints
from bobench.protocols.options import query_variants

log = logging.getLogger(__name__)


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


Relevance = tuple[np.ndarray, np.ndarray]  # bool [nq, ng] positives, bool [nq, ng] junk (gallery positions)


def drop_junk(
    sorted_scores: np.ndarray, sorted_relevant: np.ndarray, sorted_junk: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove junk items from rankings already in final order: they move (stably) to the end of their
    row with score -inf and no relevance, so every position before them is the rank without junk."""
    order = np.argsort(sorted_junk, axis=1, kind="stable")
    scores = np.take_along_axis(sorted_scores, order, axis=1).astype(np.float64)
    relevant = np.take_along_axis(sorted_relevant, order, axis=1)
    junk = np.take_along_axis(sorted_junk, order, axis=1)
    scores[junk] = -np.inf
    return scores, relevant & ~junk


def per_query_metrics(
    sorted_scores: np.ndarray, sorted_relevant: np.ndarray, ks: list[int]
) -> dict[str, np.ndarray]:
    """Per-query AP (sklearn-style and revisitop's), reciprocal rank and @k figures from rankings already
    in final order (junk already removed, `drop_junk`).

    `sorted_scores` [nq, m] (descending per row) and `sorted_relevant` bool [nq, m]. Every row must
    hold at least one positive. Returns arrays [nq] keyed "AP", "AP_roxford", "RR", "precision@k",
    "recall@k", "hit@k" (@k entries only for k ≤ m) and "mP@k" (every k).
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
        "AP_roxford": _trapezoidal_ap(rel, cum_tp, n_pos),
        "RR": 1.0 / (rel.argmax(axis=1) + 1),
    }
    last_positive = m - rel[:, ::-1].argmax(axis=1)  # 1-based rank of the last positive
    for k in ks:
        capped = np.minimum(last_positive, k)
        out[f"mP@{k}"] = np.take_along_axis(cum_tp, capped[:, None] - 1, axis=1)[:, 0] / capped
        if k > m:
            continue
        hits = cum_tp[:, k - 1]
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_pos
        out[f"hit@{k}"] = (hits > 0).astype(np.float64)
    return out


def _trapezoidal_ap(rel: np.ndarray, cum_tp: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """revisitop's AP: the j-th positive (0-based) at rank r adds ((j / r or 1 at r = 0) +
    (j + 1) / (r + 1)) / 2 / n_pos, the trapezoid between the precision before and at that positive."""
    rank = np.arange(rel.shape[1], dtype=np.float64)
    before = cum_tp - rel  # positives ranked above this item (j for a positive)
    precision_before = np.where(rank == 0, 1.0, before / np.maximum(rank, 1.0))
    precision_at = cum_tp / (rank + 1.0)
    return (rel * (precision_before + precision_at) / 2.0).sum(axis=1) / n_pos


def label_relevance(query_y: np.ndarray, gallery_y: np.ndarray) -> Relevance:
    """Relevance by label match, no junk."""
    positives = np.asarray(gallery_y)[None, :] == np.asarray(query_y)[:, None]
    return positives, np.zeros_like(positives)


def per_query_retrieval(
    query_x: np.ndarray,
    gallery_x: np.ndarray,
    relevance: Relevance,
    ks: list[int],
    *,
    exclude_self: bool = False,
    query_block: int = 256,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-query metrics of L2-normalised queries against a gallery.

    Returns (metrics keyed as `per_query_metrics` over the queries with at least one positive after
    junk removal, the reciprocal rank of every query with 0 for those without). `exclude_self` drops
    gallery item i from query i's ranking. Work is done in query blocks so the [block, ng] ranking
    bounds memory.
    """
    positives, junk = relevance
    parts: dict[str, list[np.ndarray]] = {}
    rr_all = []
    for q0 in range(0, len(query_x), query_block):
        scores, idx = rank_gallery(query_x[q0 : q0 + query_block], gallery_x)
        rows = np.arange(q0, q0 + len(idx))[:, None]
        if exclude_self:
            own = idx == rows
            scores = scores[~own].reshape(len(idx), -1)
            idx = idx[~own].reshape(len(idx), -1)
        scores, relevant = drop_junk(scores, positives[rows, idx], junk[rows, idx])
        has_pos = relevant.any(axis=1)
        rr = np.zeros(len(idx))
        if has_pos.any():
            block = per_query_metrics(scores[has_pos], relevant[has_pos], ks)
            rr[has_pos] = block["RR"]
            for name, values in block.items():
                parts.setdefault(name, []).append(values)
        rr_all.append(rr)
    return {name: np.concatenate(v) for name, v in parts.items()}, np.concatenate(rr_all)


def summarise(
    per_query: dict[str, np.ndarray], rr_all: np.ndarray, ks: list[int], n_gallery: int, seed: int
) -> dict[str, float | int | None]:
    """Record metrics (means and bootstrap intervals over queries) from `per_query_retrieval`'s output.

    A metric is None (and has no interval) when no query has a positive, or for @k with k > n_gallery.
    """
    n_scored = len(per_query.get("AP", ()))
    metrics: dict[str, float | int | None] = {}
    names = ["AP", "AP_roxford"] + [
        f"{kind}@{k}" for k in ks for kind in ("mP", "precision", "recall", "hit")
    ]
    present = [n for n in names if n in per_query and n_scored]
    intervals = mean_intervals(np.stack([per_query[n] for n in present], axis=1), seed) if present else []
    by_name = dict(zip(present, intervals, strict=True))
    for name in names:
        out_name = {"AP": "mAP", "AP_roxford": "mAP_roxford"}.get(name, name)
        metrics[out_name] = float(per_query[name].mean()) if name in by_name else None
        if name in by_name:
            metrics.update(ci_fields(out_name, by_name[name]))
    metrics["MRR"] = float(rr_all.mean()) if n_scored else None
    if n_scored:
        metrics.update(ci_fields("MRR", mean_intervals(rr_all[:, None], seed)[0]))
    n_without = len(rr_all) - n_scored
    metrics.update(n_queries=n_scored, n_queries_without_positives=n_without, n_gallery=n_gallery)
    if n_without:
        log.info("retrieval: %d queries have no positive in the gallery and are excluded", n_without)
    return metrics


def mean_intervals(values: np.ndarray, seed: int) -> list[tuple[float, float]]:
    """Bootstrap intervals of the column means of per-query `values` [n, M], every column from the same
    resamples (`bobench.bootstrap_ci.bootstrap_ci`'s seeded index matrices, so each interval equals
    `bootstrap_mean_ci(values[:, j], seed=seed)`): a resample's means are one count-weighted matrix
    product for all metrics instead of one resampling per metric."""
    n = values.shape[0]
    means: list[np.ndarray] = []

    def all_means(idx: np.ndarray) -> np.ndarray:
        rows = idx.shape[0]
        counts = np.bincount((idx + (np.arange(rows) * n)[:, None]).ravel(), minlength=rows * n)
        means.append(counts.reshape(rows, n).astype(np.float64) @ values / n)
        return means[-1][:, 0]

    bootstrap_ci(all_means, n, seed=seed)
    alpha = (1.0 - DEFAULT_CONFIDENCE) / 2.0
    bounds = np.quantile(np.concatenate(means), [alpha, 1.0 - alpha], axis=0)
    return [(float(low), float(high)) for low, high in bounds.T]


def retrieval_metrics(
    query_x: np.ndarray,
    query_y: np.ndarray,
    gallery_x: np.ndarray,
    gallery_y: np.ndarray,
    ks: list[int],
    *,
    exclude_self: bool = False,
    relevance: Relevance | None = None,
    query_block: int = 256,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """Every retrieval metric (module docstring) with its interval, of L2-normalised queries against a
    gallery; `relevance` overrides label matching (positives and junk, bool [nq, ng] each)."""
    relevance = relevance if relevance is not None else label_relevance(query_y, gallery_y)
    per_query, rr_all = per_query_retrieval(
        query_x, gallery_x, relevance, ks, exclude_self=exclude_self, query_block=query_block
    )
    return summarise(per_query, rr_all, ks, gallery_x.shape[0] - int(exclude_self), seed)


def dataset_relevance(ctx: RunContext, query_split: str, gallery_split: str) -> Relevance | None:
    """The run dataset's per-query relevance (`bobench.data.relevance`, by item source) in (query,
    gallery) split positions, or None when labels define it. Listed items the dataset no longer holds
    (a subset) are dropped. Raises InvalidArgument when a query of `query_split` has no ground truth or
    a listed item is not in `gallery_split`."""
    ds = ctx.dataset
    relevance = ds.meta.get("relevance") if isinstance(ds.meta, dict) else None
    if not relevance:
        return None
    index_of = {str(source): i for i, source in enumerate(ds.sources)}
    queries, gallery = ds.split(query_split), ds.split(gallery_split)
    row_of = {index_of[q]: r for r, q in enumerate(relevance["queries"]) if q in index_of}
    column_of = {int(g): j for j, g in enumerate(gallery)}
    positives = np.zeros((len(queries), len(gallery)), dtype=bool)
    junk = np.zeros_like(positives)
    for qi, item in enumerate(queries):
        if int(item) not in row_of:
            raise InvalidArgument(f"retrieval: query {ds.describe(int(item))} has no per-query ground truth")
        row = row_of[int(item)]
        for target, listed in ((positives, relevance["positives"][row]), (junk, relevance["junk"][row])):
            held = [index_of[s] for s in listed if s in index_of]
            outside = [ds.describe(i) for i in held if i not in column_of]
            if outside:
                raise InvalidArgument(
                    f"retrieval: query {ds.describe(int(item))} lists {outside[:3]} outside split {gallery_split!r}"
                )
            target[qi, [column_of[i] for i in held]] = True
    return positives, junk


def check_retrieval_splits(ds: Any, query_split: str, gallery_split: str) -> None:
    """InvalidArgument explaining how to give a dataset (typically a user's own folder of class
    folders, split train/val/test by default) the query and gallery splits retrieval ranks."""
    missing = [s for s in dict.fromkeys((query_split, gallery_split)) if s not in ds.splits]
    if missing:
        raise InvalidArgument(
            f"retrieval needs a {query_split!r} and a {gallery_split!r} split; dataset {ds.name!r} has "
            f"{', '.join(sorted(ds.splits))}. For a folder of your own: put the images under "
            f"{query_split}/<class>/ and {gallery_split}/<class>/, or split its class folders on load with "
            f"`splits: {{{query_split}: 0.3, {gallery_split}: 0.7}}` in the dataset ref, or point the "
            "protocol at splits it has (`config: {query_split: test, gallery_split: train}`)"
        )


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Retrieval metrics of the query split against the (clean) gallery split (module docstring).

    The ranking is deterministic; `seed` seeds the bootstrap intervals. Raises InvalidArgument for a
    bad config, mismatched feature sizes or per-query ground truth that does not fit the splits.
    """
    config = get_protocol("retrieval").resolve_config(config)
    ks = positive_ints(config["ks"], "retrieval: 'ks'")
    variants, per_variant = query_variants(config["query_variant"])
    query_split, gallery_split = config["query_split"], config["gallery_split"]
    check_retrieval_splits(ctx.dataset, query_split, gallery_split)
    gallery_x, gallery_y = check_features(*ctx.features(gallery_split), f"retrieval: split {gallery_split!r}")
    gallery_x = l2_normalize(gallery_x)
    explicit = dataset_relevance(ctx, query_split, gallery_split)
    exclude_self = query_split == gallery_split
    n_gallery = gallery_x.shape[0] - int(exclude_self)
    results = []
    for i, variant in enumerate(variants):
        where = f"retrieval: split {query_split!r}" + (f" variant {variant!r}" if variant else "")
        query_x, query_y = check_features(*ctx.features(query_split, variant=variant), where)
        if query_x.shape[1] != gallery_x.shape[1]:
            raise InvalidArgument(f"{where}: {query_x.shape[1]}-d queries vs {gallery_x.shape[1]}-d gallery")
        ctx.progress(i, len(variants), f"retrieval: ranking {len(query_y)} queries ({variant or 'clean'})")
        relevance = explicit if explicit is not None else label_relevance(query_y, gallery_y)
        results.append(
            per_query_retrieval(l2_normalize(query_x), gallery_x, relevance, ks, exclude_self=exclude_self)
        )
    ctx.progress(len(variants), len(variants), "retrieval: done")
    if not per_variant:
        return summarise(*results[0], ks, n_gallery, seed)
    metrics: dict[str, Any] = {}
    for variant, (per_query, rr_all) in zip(variants, results, strict=True):
        summary = summarise(per_query, rr_all, ks, n_gallery, seed)
        metrics.update({f"{variant or 'clean'}/{k}": v for k, v in summary.items() if not k.startswith("n_")})
    # the robust score: per query, the mean over variants (same queries and gallery in every variant)
    mean_per_query = {name: np.mean([r[0][name] for r in results], axis=0) for name in results[0][0]}
    metrics.update(summarise(mean_per_query, np.mean([r[1] for r in results], axis=0), ks, n_gallery, seed))
    return metrics
