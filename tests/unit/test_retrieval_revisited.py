"""Retrieval v2: revisited Oxford/Paris mAP and capped mP@k against an independent reference written from
revisitop's published `compute_ap` / `compute_map` definitions, junk removal, MRR over all queries,
bootstrap intervals over queries, and per-query positives/junk read from a CSV manifest."""

from __future__ import annotations

import numpy as np
import pytest
from array_context import ArrayContext
from PIL import Image
from sklearn.metrics import average_precision_score

from bobench.bootstrap_ci import bootstrap_mean_ci
from bobench.data import load_dataset
from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.metrics import l2_normalize
from bobench.protocols.retrieval import per_query_metrics, retrieval_metrics

KS = [1, 5, 10]


def revisitop_reference(ranking: list[int], ok: set[int], junk: set[int], kappas: list[int]):
    """One query, loops only: ranks of positives shifted down by the junk ranked above them, the
    trapezoidal AP over those ranks, and precision at min(k, rank of the last positive)."""
    junk_ranks = [r for r, g in enumerate(ranking) if g in junk]
    ranks = [r - sum(1 for j in junk_ranks if j < r) for r, g in enumerate(ranking) if g in ok]
    ap = 0.0
    for j, rank in enumerate(ranks):
        before = 1.0 if rank == 0 else j / rank
        ap += (before + (j + 1) / (rank + 1)) / 2 / len(ok)
    one_based = [r + 1 for r in ranks]
    prs = [sum(1 for r in one_based if r <= min(max(one_based), k)) / min(max(one_based), k) for k in kappas]
    return ap, prs, 1.0 / one_based[0]


def random_ground_truth(seed: int, nq: int = 25, ng: int = 60):
    rng = np.random.default_rng(seed)
    queries = l2_normalize(rng.normal(size=(nq, 12)).astype(np.float32))
    gallery = l2_normalize(rng.normal(size=(ng, 12)).astype(np.float32))
    positives = rng.random((nq, ng)) < 0.1
    junk = (rng.random((nq, ng)) < 0.15) & ~positives
    positives[0] = False  # a query without positives
    return queries, gallery, positives, junk


def test_trapezoidal_ap_of_a_hand_ranking():
    # ranking + - + : AP = ((1 + 1) / 2 + (1/2 + 2/3) / 2) / 2 = 19/24
    got = per_query_metrics(np.array([[3.0, 2.0, 1.0]]), np.array([[True, False, True]]), [1, 5])
    assert got["AP_roxford"][0] == pytest.approx(19 / 24)
    assert got["AP"][0] == pytest.approx((1 + 2 / 3) / 2)  # the sklearn-style AP differs
    # capped precision: last positive at rank 3, so mP@5 = 2/3 (uncapped precision@5 would be 2/5)
    assert got["mP@1"][0] == 1.0 and got["mP@5"][0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_revisited_map_mp_at_k_and_junk_match_the_revisitop_reference(seed):
    queries, gallery, positives, junk = random_ground_truth(seed)
    got = retrieval_metrics(queries, None, gallery, None, KS, relevance=(positives, junk), query_block=7)
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    aps, prs, rrs, sk_aps = [], [], [], []
    for q in range(len(queries)):
        if not positives[q].any():
            rrs.append(0.0)
            continue
        ranking = sorted(range(gallery.shape[0]), key=lambda g: (-scores[q, g], g))
        ap, pr, rr = revisitop_reference(
            ranking, set(np.flatnonzero(positives[q])), set(np.flatnonzero(junk[q])), KS
        )
        aps.append(ap)
        prs.append(pr)
        rrs.append(rr)
        keep = ~junk[q]
        sk_aps.append(average_precision_score(positives[q][keep], scores[q][keep]))
    assert got["mAP_roxford"] == pytest.approx(np.mean(aps), abs=1e-9)
    for i, k in enumerate(KS):
        assert got[f"mP@{k}"] == pytest.approx(np.mean([p[i] for p in prs]), abs=1e-9)
    assert got["mAP"] == pytest.approx(np.mean(sk_aps), abs=1e-6)  # junk ignored by the sklearn AP too
    assert got["MRR"] == pytest.approx(np.mean(rrs), abs=1e-9)  # over all queries, 0 without positives
    assert got["n_queries"] == len(aps) and got["n_queries_without_positives"] == 1


def test_every_metric_has_a_seeded_bootstrap_interval_over_queries():
    queries, gallery, positives, junk = random_ground_truth(4, nq=40)
    got = retrieval_metrics(queries, None, gallery, None, KS, relevance=(positives, junk), seed=11)
    values = [k for k, v in got.items() if isinstance(v, float) and not k.endswith(("_ci_low", "_ci_high"))]
    assert {"mAP", "mAP_roxford", "MRR", "mP@5", "precision@5", "recall@5", "hit@5"} <= set(values)
    for name in values:
        assert got[f"{name}_ci_low"] <= got[name] <= got[f"{name}_ci_high"], name
    # MRR's interval is over every query (RR 0 for the one without positives)
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    rr = []
    for q in range(len(queries)):
        ranked = [
            g for g in sorted(range(gallery.shape[0]), key=lambda g: (-scores[q, g], g)) if not junk[q, g]
        ]
        hits = [i for i, g in enumerate(ranked) if positives[q, g]]
        rr.append(1.0 / (hits[0] + 1) if hits else 0.0)
    low, high = bootstrap_mean_ci(np.array(rr), seed=11)
    assert (got["MRR_ci_low"], got["MRR_ci_high"]) == pytest.approx((low, high), abs=1e-9)
    again = retrieval_metrics(queries, None, gallery, None, KS, relevance=(positives, junk), seed=11)
    assert again == got


def test_variant_intervals_and_the_robust_mean_over_variants():
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(40, 16)).astype(np.float32)
    labels = np.arange(40) % 8
    arrays = {
        ("gallery", None): (gallery, labels),
        ("query", None): (gallery + 0.3 * rng.normal(size=gallery.shape).astype(np.float32), labels),
        ("query", "noise"): (gallery + 2.0 * rng.normal(size=gallery.shape).astype(np.float32), labels),
    }
    m = get_protocol("retrieval").evaluate(ArrayContext(arrays), {"query_variant": [None, "noise"]}, 0)
    for name in ("mAP_roxford", "mP@5", "MRR"):
        assert m[name] == pytest.approx((m[f"clean/{name}"] + m[f"noise/{name}"]) / 2)
        for prefix in ("", "clean/", "noise/"):
            assert m[f"{prefix}{name}_ci_low"] <= m[f"{prefix}{name}"] <= m[f"{prefix}{name}_ci_high"]


def _write_manifest(tmp_path, rows: list[str], header: str = "path,label,split,positives,junk") -> str:
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"im{i}.png")
    path = tmp_path / "gnd.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


OXFORD_STYLE = [
    "im0.png,a,query,im2.png;im3.png,im4.png",
    "im1.png,b,query,im5.png,",
    "im2.png,a,gallery,,",
    "im3.png,a,gallery,,",
    "im4.png,a,gallery,,",
    "im5.png,b,gallery,,",
]


def test_manifest_positives_and_junk_drive_the_metrics(tmp_path):
    ds = load_dataset({"type": "manifest", "path": _write_manifest(tmp_path, OXFORD_STYLE)})
    im = [str(tmp_path / f"im{i}.png") for i in range(6)]
    assert ds.meta["relevance"] == {"queries": im[:2], "positives": [im[2:4], [im[5]]], "junk": [[im[4]], []]}
    rng = np.random.default_rng(0)
    q, g = (
        l2_normalize(rng.normal(size=(2, 6)).astype(np.float32)),
        l2_normalize(rng.normal(size=(4, 6)).astype(np.float32)),
    )
    ctx = ArrayContext({"query": (q, np.array([0, 1])), "gallery": (g, np.array([0, 0, 0, 1]))})
    ctx.dataset = ds
    got = get_protocol("retrieval").evaluate(ctx, {"ks": [1, 2]}, 0)
    positives = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    junk = np.array([[0, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    expected = retrieval_metrics(q, None, g, None, [1, 2], relevance=(positives, junk))
    assert got == expected
    label_based = retrieval_metrics(q, np.array([0, 1]), g, np.array([0, 0, 0, 1]), [1, 2])
    assert got["mAP_roxford"] != label_based["mAP_roxford"] or got["mAP"] != label_based["mAP"]


def test_roxford_medium_and_hard_are_different_manifests_with_different_fingerprints(tmp_path):
    medium = _write_manifest(tmp_path, OXFORD_STYLE)
    fp_medium = load_dataset({"type": "manifest", "path": medium}).fingerprint
    hard_rows = ["im0.png,a,query,im3.png,im4.png;im2.png", *OXFORD_STYLE[1:]]  # easy im2 becomes junk
    (tmp_path / "gnd.csv").write_text("path,label,split,positives,junk\n" + "\n".join(hard_rows) + "\n")
    hard = load_dataset({"type": "manifest", "path": medium})
    im = [str(tmp_path / f"im{i}.png") for i in range(6)]
    assert hard.meta["relevance"]["positives"][0] == [im[3]] and hard.meta["relevance"]["junk"][0] == [
        im[2],
        im[4],
    ]
    assert hard.fingerprint != fp_medium


def test_manifest_ids_column_names_gallery_rows(tmp_path):
    rows = ["q1,im0.png,a,query,g2", "g1,im1.png,a,gallery,", "g2,im2.png,a,gallery,"]
    ds = load_dataset(
        {"type": "manifest", "path": _write_manifest(tmp_path, rows, "id,path,label,split,positives")}
    )
    im = [str(tmp_path / f"im{i}.png") for i in range(3)]
    assert ds.meta["relevance"] == {"queries": [im[0]], "positives": [[im[2]]], "junk": [[]]}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["im0.png,a,query,im9.png,", "im2.png,a,gallery,,"], "entry 1 names no row"),
        (["im0.png,a,query,im1.png,", "im1.png,a,query,,", "im2.png,a,gallery,,"], "not a gallery row"),
        (["im0.png,a,query,,", "im2.png,a,gallery,im0.png,"], "set on a non-query row"),
        (["im0.png,a,query,im2.png,im2.png", "im2.png,a,gallery,,"], "both positive and junk"),
    ],
)
def test_bad_manifest_ground_truth_names_the_row(tmp_path, rows, message):
    with pytest.raises(InvalidArgument, match=message) as info:
        load_dataset({"type": "manifest", "path": _write_manifest(tmp_path, rows)})
    assert "row " in str(info.value)


def test_a_file_named_by_ground_truth_on_two_rows_is_refused(tmp_path):
    rows = ["q,im0.png,a,query,g", "g,im2.png,a,gallery,", "h,im2.png,a,gallery,"]
    with pytest.raises(InvalidArgument, match=r"rows \[3, 4\] name the same file"):
        load_dataset(
            {"type": "manifest", "path": _write_manifest(tmp_path, rows, "id,path,label,split,positives")}
        )


def test_ground_truth_survives_a_subset_that_reindexes_items(tmp_path):
    """max_per_class re-indexes items; relevance is by source, so each query keeps its positives."""
    rows = [f"im{i}.png,{'ab'[i % 2]},{'query' if i < 2 else 'gallery'},{'im4.png' if i == 0 else 'im5.png' if i == 1 else ''},"
            for i in range(6)]  # fmt: skip
    manifest = _write_manifest(tmp_path, rows)
    ds = load_dataset({"type": "manifest", "path": manifest, "max_per_class": 2})
    rng = np.random.default_rng(1)
    arrays = {
        s: (rng.normal(size=(len(ds.split(s)), 4)).astype(np.float32), ds.labels[ds.split(s)])
        for s in ("query", "gallery")
    }
    ctx = ArrayContext(arrays)
    ctx.dataset = ds
    from bobench.protocols.retrieval import dataset_relevance

    positives, junk = dataset_relevance(ctx, "query", "gallery")
    gallery_sources = [ds.describe(int(i)) for i in ds.split("gallery")]
    for qi, item in enumerate(ds.split("query")):
        wanted = (
            {str(tmp_path / "im4.png")}
            if ds.describe(int(item)).endswith("im0.png")
            else {str(tmp_path / "im5.png")}
        )
        assert {gallery_sources[j] for j in np.flatnonzero(positives[qi])} == wanted & set(gallery_sources)
    assert not junk.any()


def test_shared_resample_intervals_equal_one_bootstrap_per_metric():
    from bobench.protocols.retrieval import mean_intervals

    values = np.random.default_rng(3).random((257, 4))
    got = mean_intervals(values, seed=5)
    for j in range(values.shape[1]):
        assert got[j] == pytest.approx(bootstrap_mean_ci(values[:, j], seed=5), abs=1e-12)
