"""Cost columns are compared at one environment key and one batch size (never averaged across them)."""

from __future__ import annotations

import itertools

from bobench.analysis import analyze, recommend
from bobench.analysis.costs import environment_key
from bobench.results import RunRecord

_keys = itertools.count()
CPU = {"device": "cpu", "runtime": "onnxruntime", "precision": "fp32", "threads": 2, "host": "h1"}
GPU = {"device": "cuda:0", "runtime": "tensorrt", "precision": "fp16", "threads": 2, "host": "h2"}


def rec(backbone, task, metrics, env, method="supervised", value=None):
    primary = None if value is None else "top1"
    if value is not None:
        metrics = {"top1": value}
    return RunRecord(
        run_key=f"c{next(_keys)}",
        backbone=backbone,
        dataset="synthetic" if value is None else "pets",
        protocol=task if value is None else "linear_probe",
        protocol_version="1",
        task=task,
        config={},
        seed=0,
        status="finished",
        metrics=metrics,
        higher_is_better={m: value is not None for m in metrics},
        primary_metric=primary,
        backbone_info={"pretraining_method": method},
        environment=env,
    )


def test_latency_of_one_backbone_on_two_devices_is_not_averaged():
    """The issue: 2 ms GPU + 40 ms CPU gave 21 ms, measured nowhere."""
    records = [
        rec("a", "efficiency", {"latency_ms_p50_b1": 2.0}, GPU),
        rec("a", "efficiency", {"latency_ms_p50_b1": 40.0}, CPU),
        rec("b", "efficiency", {"latency_ms_p50_b1": 30.0}, CPU),
    ]
    an = analyze(records)
    assert an.costs["a"].latency_ms == 40.0  # at the key both backbones have
    basis = an.cost_basis["latency_ms"]
    assert basis.environment == environment_key(CPU)
    assert (basis.metric, basis.backbones, basis.left_out) == ("latency_ms_p50_b1", ("a", "b"), ())


def test_backbones_measured_only_elsewhere_are_left_out_and_named():
    records = [
        rec("a", "efficiency", {"latency_ms_p50_b1": 40.0}, CPU),
        rec("b", "efficiency", {"latency_ms_p50_b1": 30.0}, CPU),
        rec("c", "efficiency", {"latency_ms_p50_b1": 1.0}, GPU),
    ]
    an = analyze(records)
    assert an.cost("c", "latency_ms") is None  # its GPU figure is not compared with CPU ones
    assert an.cost_basis["latency_ms"].left_out == ("c",)


def test_latency_is_compared_at_one_batch_size_every_backbone_has():
    """Before: a's smallest batch was 1 and b's was 8, and the two were compared."""
    records = [
        rec("a", "efficiency", {"latency_ms_p50_b1": 5.0, "latency_ms_p50_b8": 30.0}, CPU),
        rec("b", "efficiency", {"latency_ms_p50_b8": 20.0, "throughput_ips_b8": 400.0}, CPU),
        rec("a", "efficiency", {"throughput_ips_b8": 250.0, "throughput_ips_b32": 300.0}, CPU),
        rec("a", "classification", {}, CPU, value=0.9),
        rec("b", "classification", {}, CPU, value=0.8),
    ]
    an = analyze(records)
    assert an.cost_basis["latency_ms"].metric == "latency_ms_p50_b8"
    assert (an.costs["a"].latency_ms, an.costs["b"].latency_ms) == (30.0, 20.0)
    assert an.cost_basis["throughput_ips"].metric == "throughput_ips_b8"
    assert [e["backbone"] for e in an.pareto("latency_ms")] == ["b", "a"]


def test_recommendations_leave_out_random_init_unless_asked():
    records = [
        rec("pre", "classification", {}, CPU, value=0.6),
        rec("rnd", "classification", {}, CPU, method="random", value=0.9),
    ]
    an = analyze(records)
    assert [e["backbone"] for e in recommend(an)] == ["pre"]
    assert [e["backbone"] for e in recommend(an, include_random_init=True)] == ["rnd", "pre"]


def test_the_leaderboard_names_the_cost_comparison_basis():
    from bobench.analysis import format_leaderboard

    records = [
        rec("a", "efficiency", {"latency_ms_p50_b1": 40.0}, CPU),
        rec("b", "efficiency", {"latency_ms_p50_b1": 30.0}, CPU),
        rec("c", "efficiency", {"latency_ms_p50_b1": 1.0}, GPU),
        *(rec(b, "classification", {}, CPU, value=v) for b, v in (("a", 0.9), ("b", 0.8), ("c", 0.7))),
    ]
    text = format_leaderboard(analyze(records))
    assert f"latency_ms compared at latency_ms_p50_b1 on {environment_key(CPU)} (2 backbones" in text
    assert "left out, measured elsewhere only: c" in text
