"""Rank intervals and 95 % ties from a bootstrap of the whole aggregation."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from bobench.analysis import aggregate as agg
from bobench.analysis import analyze
from bobench.analysis.aggregate import zscores
from bobench.analysis.uncertainty import (
    _zscores,
    aggregate_draws,
    draw_values,
    rank_uncertainty,
    replicate_task_scores,
)
from bobench.errors import InvalidArgument
from bobench.results import RunRecord

_keys = itertools.count()


def rec(backbone, dataset, value, ci=None, seed=0, task="classification", n_test=None):
    metrics = {"top1": value}
    if ci is not None:
        metrics.update(top1_ci_low=ci[0], top1_ci_high=ci[1])
    if n_test is not None:
        metrics["n_test"] = n_test
    return RunRecord(
        run_key=f"u{next(_keys)}",
        backbone=backbone,
        dataset=dataset,
        protocol="linear_probe",
        protocol_version="1",
        task=task,
        config={},
        seed=seed,
        status="finished",
        metrics=metrics,
        higher_is_better={"top1": True},
        primary_metric="top1",
    )


def test_vectorised_zscores_match_the_aggregation_row_by_row():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(50, 4))
    values[7] = 0.5  # a flat row
    for hib in (True, False):
        got = _zscores(values, hib)
        for row, expected in zip(values, got, strict=True):
            ref = zscores(dict(enumerate(row)), hib)
            assert expected == pytest.approx([ref[i] for i in range(4)])


def test_zero_width_intervals_reproduce_the_point_scores_in_every_replicate():
    """With nothing to resample, each replicate is the plain aggregation (an end-to-end check)."""
    values = {"a": (0.9, 0.4), "b": (0.7, 0.6), "c": (0.2, 0.5)}
    records = [
        rec(b, d, v, ci=(v, v)) for b, vs in values.items() for d, v in zip(("x", "y"), vs, strict=True)
    ]
    records += [rec(b, "z", v[0] / 2, task="retrieval") for b, v in values.items()]
    an = analyze(records, resamples=50)
    reps = replicate_task_scores(an.settings, resamples=50)
    overall = reps.overall()
    for e in an.overall:
        assert overall[:, reps.backbones.index(e["backbone"])] == pytest.approx(np.full(50, e["score"]))
        assert (e["rank_low"], e["rank_high"]) == (e["rank"], e["rank"])
        assert e["tied_with"] == []


def test_overlapping_intervals_are_tied_and_separated_ones_are_not():
    records = [
        rec("a", "x", 0.80, ci=(0.60, 0.95), n_test=24),
        rec("b", "x", 0.78, ci=(0.58, 0.93), n_test=24),
        rec("c", "x", 0.20, ci=(0.18, 0.22), n_test=5000),
    ]
    an = analyze(records, resamples=2000, seed=1)
    by = {e["backbone"]: e for e in an.overall}
    assert by["a"]["tied_with"] == ["b"] and by["b"]["tied_with"] == ["a"]
    assert by["c"]["tied_with"] == []
    assert (by["a"]["rank_low"], by["a"]["rank_high"]) == (1, 2)
    assert (by["c"]["rank_low"], by["c"]["rank_high"]) == (3, 3)
    per_task = {e["backbone"]: e for e in an.per_task["classification"]}
    assert per_task["b"]["tied_with"] == ["a"]
    row = next(r for r in an.settings_table() if r["backbone"] == "a")
    assert (row["ci_low"], row["ci_high"], row["n_items"]) == (0.60, 0.95, 24)


def test_seeds_are_resampled_when_there_is_no_interval():
    records = [rec("a", "x", v, seed=s) for s, v in enumerate((0.1, 0.9, 0.5))]
    records += [rec("b", "x", 0.55), rec("c", "x", 0.0)]
    an = analyze(records, resamples=2000)
    by = {e["backbone"]: e for e in an.overall}
    assert "b" in by["a"]["tied_with"]
    assert by["a"]["rank_high"] > by["a"]["rank_low"]


def test_rank_intervals_are_reproducible_from_the_seed_and_older_records_work():
    records = [rec("a", "x", 0.8, ci=(0.6, 0.9)), rec("b", "x", 0.7, ci=(0.5, 0.85)), rec("c", "x", 0.5)]
    first = analyze(records, seed=7).to_json()["overall"]
    assert first == analyze(records, seed=7).to_json()["overall"]
    assert analyze([rec("a", "x", 0.8), rec("b", "x", 0.7)]).overall[0]["rank_high"] == 1
    with pytest.raises(InvalidArgument, match="at least 2 resamples"):
        analyze(records, resamples=1)


def test_rank_uncertainty_counts_strictly_better_backbones():
    scores = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    result = rank_uncertainty(np.repeat(scores, 10, axis=0), ["a", "b", "c"], ["a", "b", "c"])
    assert result.rank_interval["a"] == (1, 2)
    assert result.rank_interval["c"] == (2, 3)


def test_vectorised_replicates_match_the_scalar_aggregation_replicate_by_replicate():
    """Reference: for each replicate, rebuild the settings with the drawn values and run the plain
    (scalar, dict-based) aggregation and competition ranks of `bobench.analysis.aggregate`."""
    rng = np.random.default_rng(0)
    records = []
    for d, task in (("x", "classification"), ("y", "classification"), ("z", "retrieval"), ("w", "ood")):
        for b in ("a", "b", "c", "d"):
            if (b, d) == ("d", "y"):
                continue  # missing data: d is averaged over the settings it has
            v = float(rng.uniform(0.3, 0.9))
            records += [rec(b, d, v + s * 0.01, ci=(v - 0.05, v + 0.05), seed=s, task=task) for s in range(2)]
    settings = analyze(records, resamples=2).settings
    drawn = draw_values(settings, resamples=40, seed=5)
    reps = aggregate_draws(settings, drawn)
    overall = reps.overall()
    for r in range(40):
        redrawn = [
            dataclasses.replace(
                s,
                values={
                    b: dataclasses.replace(v, z=z)
                    for (b, v), z in zip(
                        s.values.items(),
                        zscores(dict(zip(s.values, m[r], strict=True)), s.higher_is_better).values(),
                        strict=True,
                    )
                },
            )
            for s, m in zip(settings, drawn, strict=True)
        ]
        ref_tasks = agg.task_scores(redrawn)
        ref_overall = agg.overall_scores(ref_tasks)
        for t, scores in ref_tasks.items():
            assert [reps.task_scores[t][r, reps.backbones.index(b)] for b in scores] == pytest.approx(
                list(scores.values())
            )
        assert [overall[r, reps.backbones.index(b)] for b in ref_overall] == pytest.approx(
            list(ref_overall.values())
        )
        ranks = rank_uncertainty(
            overall[r : r + 1].repeat(2, axis=0), reps.backbones, reps.backbones
        ).rank_interval
        assert {b: low for b, (low, _) in ranks.items()} == {
            b: k for b, _, k in agg.competition_ranks(ref_overall)
        }
