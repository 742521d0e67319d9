"""BoB aggregation, ranks, correlations, Pareto fronts and recommendations on hand-computed tables."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from bobench.analysis import analyze, format_leaderboard, recommend
from bobench.analysis.aggregate import competition_ranks, spearman, zscores
from bobench.analysis.core import task_correlation
from bobench.errors import InvalidArgument
from bobench.results import RunRecord

_keys = itertools.count()
SQRT_1_5 = math.sqrt(1.5)


def make_record(
    backbone, task, dataset, protocol, metric, value, hib=True, seed=0, status="finished", info=None, **kw
):
    """A real RunRecord with one primary metric (or several metrics for cost tasks via `metrics=`)."""
    metrics = kw.pop("metrics", {metric: value} if metric else {})
    return RunRecord(
        run_key=f"k{next(_keys)}",
        backbone=backbone,
        dataset=dataset,
        protocol=protocol,
        protocol_version="1",
        task=task,
        config={},
        seed=seed,
        status=status,
        metrics=metrics,
        higher_is_better={m: hib for m in metrics} if metric else {},
        primary_metric=metric,
        backbone_info=info or {},
        environment=kw.pop("environment", {"device": "cpu", "runtime": "onnxruntime", "threads": 1}),
        **kw,
    )


def hand_table() -> list[RunRecord]:
    """Five settings over backbones a, b, c (+ d in one single-backbone setting); see test docstrings."""
    r = make_record
    return [
        # A: classification/ds1/linear_probe:top1 (higher better); a has two seeds, mean 0.9
        r("a", "classification", "ds1", "linear_probe", "top1", 0.88, seed=0),
        r("a", "classification", "ds1", "linear_probe", "top1", 0.92, seed=1),
        r("b", "classification", "ds1", "linear_probe", "top1", 0.8),
        r("c", "classification", "ds1", "linear_probe", "top1", 0.7),
        # B: retrieval, b missing
        r("a", "retrieval", "photos", "retrieval", "map", 0.6),
        r("c", "retrieval", "photos", "retrieval", "map", 0.2),
        # C: ood error, lower is better
        r("a", "ood", "digits", "ood", "error", 0.3, hib=False),
        r("b", "ood", "digits", "ood", "error", 0.1, hib=False),
        r("c", "ood", "digits", "ood", "error", 0.2, hib=False),
        # D: all equal -> z = 0; c missing
        r("a", "classification", "ds3", "knn", "top1", 0.5),
        r("b", "classification", "ds3", "knn", "top1", 0.5),
        # E: a single backbone -> z = 0, and the setting is left out of task/overall scores
        r("d", "ood", "single", "ood", "acc", 0.9),
        # not counted: failed, running, unusable primary metric, cost task
        r("a", "classification", "ds1", "linear_probe", "top1", 0.1, status="failed", error="boom"),
        r("b", "retrieval", "photos", "retrieval", "map", 0.99, status="running"),
        r("b", "retrieval", "photos", "retrieval", "map", None),
        r("c", "efficiency", "synthetic", "efficiency", None, None, metrics={"latency_ms_p50_b1": 3.0}),
    ]


def test_zscores_use_population_std_and_flip_sign_when_lower_is_better():
    z = zscores({"a": 0.9, "b": 0.8, "c": 0.7}, higher_is_better=True)
    assert z == pytest.approx({"a": SQRT_1_5, "b": 0.0, "c": -SQRT_1_5})
    z = zscores({"a": 0.3, "b": 0.1, "c": 0.2}, higher_is_better=False)
    assert z == pytest.approx({"a": -SQRT_1_5, "b": SQRT_1_5, "c": 0.0})


def test_zscores_are_zero_for_a_flat_or_single_backbone_setting():
    assert zscores({"a": 0.7, "b": 0.7, "c": 0.7}, True) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert zscores({"a": 0.1 + 0.2, "b": 0.3}, True) == {"a": 0.0, "b": 0.0}  # float noise is flat
    assert zscores({"only": 5.0}, False) == {"only": 0.0}


def test_settings_average_seeds_then_zscore():
    an = analyze(hand_table())
    by_label = {s.key.label(): s for s in an.settings}
    assert sorted(by_label) == sorted(
        [
            "classification/ds1/linear_probe:top1",
            "classification/ds3/knn:top1",
            "ood/digits/ood:error",
            "ood/single/ood:acc",
            "retrieval/photos/retrieval:map",
        ]
    )
    a1 = by_label["classification/ds1/linear_probe:top1"].values["a"]
    assert (a1.mean, a1.n_seeds) == (pytest.approx(0.9), 2)
    assert a1.std == pytest.approx(np.std([0.88, 0.92], ddof=1))
    assert a1.z == pytest.approx(SQRT_1_5)
    assert by_label["retrieval/photos/retrieval:map"].values["c"].z == pytest.approx(-1.0)
    assert "b" not in by_label["retrieval/photos/retrieval:map"].values  # running / None ignored
    assert by_label["ood/digits/ood:error"].values["b"].z == pytest.approx(SQRT_1_5)


def test_task_and_overall_scores_match_hand_computation():
    an = analyze(hand_table())
    assert an.tasks == ["classification", "ood", "retrieval"]  # efficiency is a cost, not a task
    assert an.task_scores["classification"] == pytest.approx({"a": SQRT_1_5 / 2, "b": 0.0, "c": -SQRT_1_5})
    assert an.task_scores["ood"] == pytest.approx({"a": -SQRT_1_5, "b": SQRT_1_5, "c": 0.0})
    assert an.task_scores["retrieval"] == pytest.approx({"a": 1.0, "c": -1.0})
    expected = {"b": SQRT_1_5 / 2, "a": (SQRT_1_5 / 2 + 1 - SQRT_1_5) / 3, "c": (-SQRT_1_5 - 1) / 3}
    assert [e["backbone"] for e in an.overall] == ["b", "a", "c"]
    assert [e["rank"] for e in an.overall] == [1, 2, 3]
    assert {e["backbone"]: e["score"] for e in an.overall} == pytest.approx(expected)


def test_coverage_and_min_coverage_rule():
    an = analyze(hand_table(), min_coverage=0.5)
    cov = {e["backbone"]: (e["n_settings"], e["n_settings_total"]) for e in an.overall}
    # the single-backbone setting E compares nothing: it counts for no one's coverage
    assert cov == {"a": (4, 4), "b": (3, 4), "c": (3, 4)}
    assert [(e["backbone"], e["score"], e["rank"]) for e in an.excluded] == [("d", None, None)]
    assert "d" not in {e["backbone"] for e in an.per_task["ood"]}
    assert [e["backbone"] for e in analyze(hand_table(), min_coverage=0.0).overall] == ["b", "a", "c"]
    assert [e["backbone"] for e in analyze(hand_table(), min_coverage=0.8).overall] == ["a"]
    dropped = analyze(hand_table(), min_coverage=0.8).excluded
    assert [(e["backbone"], e["coverage"]) for e in dropped] == [("b", 0.75), ("c", 0.75), ("d", 0.0)]
    with pytest.raises(InvalidArgument, match="min_coverage"):
        analyze(hand_table(), min_coverage=1.5)


def test_competition_ranks_give_ties_the_same_min_rank():
    ranked = competition_ranks({"w": 0.0, "y": 0.5, "x": 1.0, "z": 0.5, "v": 0.5 + 1e-15})
    assert [(n, r) for n, _, r in ranked] == [("x", 1), ("v", 2), ("y", 2), ("z", 2), ("w", 5)]


def test_backbones_with_identical_results_share_a_rank():
    recs = [
        make_record(b, "classification", "ds", "lp", "top1", v)
        for b, v in [("p", 0.9), ("q", 0.9), ("r", 0.1)]
    ]
    assert [(e["backbone"], e["rank"]) for e in analyze(recs).overall] == [("p", 1), ("q", 1), ("r", 3)]


def test_failed_runs_environments_and_status_counts_are_reported():
    an = analyze(hand_table())
    assert [(f["backbone"], f["error"]) for f in an.failed_runs] == [("a", "boom")]
    assert an.run_counts == {"failed": 1, "finished": 14, "running": 1}
    assert an.environments[0]["environment"]["runtime"] == "onnxruntime"
    assert an.environments[0]["n_runs"] == 14


def test_direction_conflict_within_a_setting_is_rejected():
    recs = [
        make_record("a", "ood", "d", "ood", "err", 0.1, hib=False),
        make_record("b", "ood", "d", "ood", "err", 0.2, hib=True),
    ]
    with pytest.raises(InvalidArgument, match="higher_is_better"):
        analyze(recs)


def test_spearman_matches_scipy_including_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, size=8).astype(float)
        y = rng.normal(size=8)
        expected = spearmanr(x, y).statistic
        got = spearman(x, y)
        if np.isnan(expected):
            assert got is None
        else:
            assert got == pytest.approx(expected, abs=1e-12)
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_task_correlation_is_symmetric_with_unit_diagonal_and_equals_scipy():
    rng = np.random.default_rng(1)
    backbones = [f"m{i}" for i in range(7)]
    per_task = {t: {b: float(rng.normal()) for b in backbones} for t in ("cls", "ood", "ret")}
    del per_task["ret"]["m0"]  # one missing backbone: correlate over the common six
    per_task["tiny"] = {"m1": 0.1, "m2": 0.2}  # fewer than 3 backbones
    cm = task_correlation(per_task)
    n = len(cm.tasks)
    for i, j in itertools.product(range(n), range(n)):
        assert cm.rho[i][j] == cm.rho[j][i]
    for i, t in enumerate(cm.tasks):
        assert cm.rho[i][i] == (None if t == "tiny" else 1.0)
    common = sorted(set(per_task["cls"]) & set(per_task["ret"]))
    expected = spearmanr([per_task["cls"][b] for b in common], [per_task["ret"][b] for b in common]).statistic
    assert cm.get("cls", "ret") == pytest.approx(expected, abs=1e-12)
    assert cm.n_common[cm.tasks.index("cls")][cm.tasks.index("ret")] == 6
    assert cm.get("tiny", "cls") is None


def pareto_records() -> list[RunRecord]:
    """p, q, t, r, s with scores in that order (q and t tied), latencies and params given."""
    table = {
        "p": (0.9, 10.0, 80e6),
        "q": (0.7, 5.0, 20e6),
        "t": (0.7, 6.0, 10e6),
        "r": (0.5, 20.0, 5e6),
        "s": (0.3, 1.0, None),
    }
    recs = []
    for b, (value, latency_ms, params) in table.items():
        info = {
            "family": "cnn" if b in "pqt" else "vit",
            "pretraining_method": "supervised" if b in "pq" else "ssl",
        }
        if params:
            info["num_params"] = params
        recs.append(make_record(b, "classification", "ds", "lp", "top1", value, info=info))
        recs.append(
            make_record(
                b, "efficiency", "synthetic", "efficiency", None, None,
                metrics={"latency_ms_p50_b8": 40 * latency_ms, "latency_ms_p50_b1": latency_ms,
                         "throughput_ips_b1": 1000 / latency_ms, "throughput_ips_b32": 3000 / latency_ms, "flops": None},
            )
        )  # fmt: skip
    recs.append(
        make_record(
            "p", "serving", "synthetic", "serving_latency", None, None,
            metrics={"latency_ms_p50_b1_c4": 30.0, "latency_ms_p50_b1_c1": 12.5, "latency_ms_p50_b8_c1": 50.0},
        )
    )  # fmt: skip
    return recs


def test_cost_columns_choose_documented_keys():
    an = analyze(pareto_records())
    p = an.costs["p"]
    assert (p.latency_key, p.latency_ms) == ("latency_ms_p50_b1", 10.0)
    assert (p.throughput_key, p.throughput_ips) == ("throughput_ips_b32", 300.0)
    assert (p.served_latency_key, p.served_latency_ms) == ("latency_ms_p50_b1_c1", 12.5)
    assert p.params == 80e6 and p.flops is None  # a missing FLOP count stays None
    assert an.costs["s"].params is None
    assert "efficiency" not in an.tasks and "serving" not in an.tasks


def test_pareto_front_by_latency_and_by_params():
    an = analyze(pareto_records())
    assert [e["backbone"] for e in an.pareto("latency_ms")] == ["s", "q", "p"]
    assert [e["backbone"] for e in an.pareto("params")] == ["r", "t", "p"]
    assert [e["backbone"] for e in an.pareto("served_latency_ms")] == ["p"]
    with pytest.raises(InvalidArgument, match="pareto"):
        an.pareto("watts")


def test_recommend_applies_every_constraint_and_skips_unknown_costs():
    an = analyze(pareto_records())
    names = lambda entries: [e["backbone"] for e in entries]  # noqa: E731
    assert names(recommend(an, max_latency_ms=6)) == ["q", "t", "s"]
    assert names(recommend(an, max_params=30e6)) == ["q", "t", "r"]
    assert names(recommend(an, max_latency_ms=6, max_params=15e6)) == ["t"]
    assert names(recommend(an, max_latency_ms=6, top_k=1)) == ["q"]
    assert names(recommend(an, pretraining_method="ssl")) == ["t", "r", "s"]
    assert names(recommend(an, family="vit", max_latency_ms=100)) == ["r", "s"]
    assert names(recommend(an, max_served_latency_ms=20)) == ["p"]
    assert names(recommend(an, task="classification", max_latency_ms=0.5)) == []
    assert recommend(an, max_latency_ms=6)[0]["latency_ms"] == 5.0
    with pytest.raises(InvalidArgument, match="max_latency_ms"):
        recommend(an, max_latency_ms=-1)
    with pytest.raises(InvalidArgument, match="unknown task"):
        recommend(an, task="detection")


def test_by_method_and_by_family_average_ranked_scores():
    an = analyze(pareto_records())
    scores = {e["backbone"]: e["score"] for e in an.overall}
    assert an.by_method["supervised"]["count"] == 2
    assert an.by_method["supervised"]["mean_score"] == pytest.approx((scores["p"] + scores["q"]) / 2)
    assert an.by_family["vit"]["backbones"] == ["r", "s"]
    assert list(an.by_method) == ["supervised", "ssl"]  # best group first


def test_to_json_shape_is_serialisable_without_nan():
    an = analyze(hand_table() + pareto_records(), min_coverage=0.0)
    data = json.loads(json.dumps(an.to_json(), allow_nan=False))
    assert set(data) >= {
        "overall",
        "per_task",
        "excluded",
        "settings",
        "task_correlation",
        "by_method",
        "by_family",
    }
    assert all(set(e) >= {"backbone", "score", "rank"} for e in data["overall"])
    assert [e["rank"] for e in data["overall"]] == sorted(e["rank"] for e in data["overall"])
    assert set(data["per_task"]) == {"classification", "ood", "retrieval"}
    assert data["task_correlation"]["tasks"] == an.tasks
    assert {r["backbone"] for r in data["settings"]} == {"a", "b", "c", "d", "p", "q", "r", "s", "t"}
    assert data["pareto"]["latency_ms"][0]["backbone"] == "s"


def test_format_leaderboard_is_aligned_and_ordered():
    text = format_leaderboard(analyze(hand_table()))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    table = lines[header : header + 5]
    assert len({len(line) for line in table[:2]}) == 1  # header and rule line up
    at = table[0].index("backbone")
    assert [line[at:].split()[0] for line in table[2:5]] == ["b", "a", "c"]
    assert "Not ranked" in text
    not_ranked = lines[lines.index(next(x for x in lines if x.startswith("Not ranked"))) + 3]
    assert not_ranked.split()[0] == "d"
    assert format_leaderboard(analyze([])) == "No finished, ranked runs to show."
