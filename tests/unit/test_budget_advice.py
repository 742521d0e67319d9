"""Cost per million images, Server-scenario capacity, and the advice and report section built on them."""

from __future__ import annotations

import itertools

import pytest

from bobench.analysis import analyze, recommend
from bobench.analysis import budget as bud
from bobench.analysis.costs import cost_per_million_images, price_for, server_bound
from bobench.analysis.render import Heading, Table, render_markdown
from bobench.config import load_settings
from bobench.errors import InvalidArgument
from bobench.results import RunRecord

_keys = itertools.count()
CPU = {"device": "cpu", "runtime": "onnxruntime", "precision": "fp32", "threads": 2, "host": "h1"}
TRITON = {"device": "cpu", "runtime": "triton", "precision": "fp32", "threads": 0, "host": "h1"}
PRICES = {"cpu": 0.10, "nvidia-h200": 4.0}


def rec(backbone, task, metrics, env=CPU, config=None, value=None):
    if value is not None:
        metrics = {"top1": value}
    return RunRecord(
        run_key=f"b{next(_keys)}",
        backbone=backbone,
        dataset="synthetic" if value is None else "pets",
        protocol={"serving": "serving_latency"}.get(task, task) if value is None else "linear_probe",
        protocol_version="1",
        task=task,
        config=config or {},
        seed=0,
        status="finished",
        metrics=metrics,
        higher_is_better={m: value is not None for m in metrics},
        primary_metric="top1" if value is not None else None,
        backbone_info={"pretraining_method": "supervised"},
        environment=env,
    )


BOUND_30 = {"server_latency_bound_ms": 30.0, "server_percentile": 99.0}


def battle():
    """a: best score, slow and dear; b: middle; c: cheapest, weakest."""
    out = []
    for name, score, ips, served, peak in (("a", 0.9, 100.0, 80.0, 20.0), ("b", 0.8, 500.0, 400.0, 120.0),
                                           ("c", 0.7, 2000.0, 1500.0, 600.0)):  # fmt: skip
        out.append(rec(name, "classification", {}, value=score))
        out.append(rec(name, "efficiency", {"throughput_ips_b8": ips, "latency_ms_p50_b1": 1000 / ips}))
        out.append(
            rec(
                name,
                "serving",
                {"scenario_offline_throughput_ips": served, "scenario_server_peak_qps": peak},
                TRITON,
                BOUND_30,
            )  # fmt: skip
        )
    return out


def test_cost_per_million_images_is_price_over_images_per_hour():
    # 100 images/s = 360,000 images/h; $0.10/h -> $0.2778 per million
    assert cost_per_million_images(100.0, 0.10) == pytest.approx(0.10 / 0.36)
    assert cost_per_million_images(None, 0.10) is None and cost_per_million_images(100.0, None) is None
    assert cost_per_million_images(0.0, 0.10) is None


def test_price_is_found_by_exact_device_then_its_kind():
    assert price_for("cpu", PRICES) == 0.10
    assert price_for("NVIDIA-H200", PRICES) == 4.0
    assert price_for("cuda:0", {"cuda": 2.0}) == 2.0
    assert price_for("cuda:0", PRICES) is None and price_for(None, PRICES) is None


def test_budget_advice_picks_the_best_backbone_under_the_price():
    an = analyze(battle())
    # in-process $/M: a 0.278, b 0.0556, c 0.0139
    assert [e["backbone"] for e in recommend(an, prices=PRICES)] == ["a", "b", "c"]
    under = recommend(an, max_cost_per_million=0.1, prices=PRICES)
    assert [e["backbone"] for e in under] == ["b", "c"]
    assert under[0]["cost_per_million_images"] == pytest.approx(0.10 / (500 * 3600) * 1e6)
    # served (Offline) $/M: a 0.347, b 0.0694, c 0.0185
    served = recommend(an, max_served_cost_per_million=0.05, prices=PRICES)
    assert [e["backbone"] for e in served] == ["c"]
    assert served[0]["served_cost_per_million_images"] == pytest.approx(0.10 / (1500 * 3600) * 1e6)


def test_capacity_advice_answers_sustains_qps_at_p99_bound():
    an = analyze(battle())
    assert server_bound(an.cost_basis["server_peak_qps"].metric) == (99.0, 30.0)
    best = recommend(an, min_server_qps=50.0, max_server_p99_ms=30.0)
    assert [e["backbone"] for e in best] == ["b", "c"] and all(e["sustains"] for e in best)
    # peaks were found under p99 <= 30 ms: they say nothing about a stricter 10 ms bound
    assert recommend(an, min_server_qps=50.0, max_server_p99_ms=10.0) == []
    # a looser ask is answered by the stricter measurement
    assert [e["backbone"] for e in recommend(an, min_server_qps=100.0, max_server_p99_ms=50.0)] == ["b", "c"]


def test_cost_limits_without_prices_are_refused_naming_the_setting():
    an = analyze(battle())
    with pytest.raises(InvalidArgument, match="price_per_hour"):
        recommend(an, max_cost_per_million=1.0)
    with pytest.raises(InvalidArgument, match="min_server_qps"):
        recommend(an, min_server_qps=-1.0)


def test_the_budget_section_prices_every_backbone_and_answers_the_canned_questions():
    an = analyze(battle())
    blocks = bud.section(an, PRICES, {"max_cost_per_million": 0.02})
    titles = [b.text for b in blocks if isinstance(b, Heading)]
    assert titles[0] == "Budget and capacity"
    assert "Your limits: max_cost_per_million <= 0.02" in titles
    assert "Best that sustains 50 QPS at p99 <= 30 ms on this server" in titles
    tables = [b for b in blocks if isinstance(b, Table)]
    costs = {row[0]: row for row in tables[0].rows}
    assert costs["b"][2] == "$0.05556" and costs["c"][5].startswith("600.0 (p99 <= 30 ms)")
    yours = tables[1]  # your limits come first: only c costs <= $0.02 per million
    assert [row[1] for row in yours.rows] == ["c"]
    md = render_markdown("r", blocks)
    assert "$/M images" in md


def test_the_budget_section_without_prices_says_how_to_set_them():
    blocks = bud.section(analyze(battle()), {}, {})
    text = " ".join(getattr(b, "text", "") for b in blocks)
    assert "No prices set" in text and "BOBENCH_PRICE_PER_HOUR" in text
    assert "Best under $1 per million images" not in text
    assert "Best that sustains 50 QPS at p99 <= 30 ms on this server" in text


def test_price_per_hour_setting_from_file_and_env(tmp_path, monkeypatch):
    f = tmp_path / "bobench.yaml"
    f.write_text("price_per_hour: {cpu: 0.10, NVIDIA-H200: 4}\n")
    assert load_settings(f).price_per_hour == {"cpu": 0.10, "nvidia-h200": 4.0}
    monkeypatch.setenv("BOBENCH_PRICE_PER_HOUR", "cpu=0.2,nvidia-h200=3.5")
    assert load_settings(f).price_per_hour == {"cpu": 0.2, "nvidia-h200": 3.5}
    monkeypatch.setenv("BOBENCH_PRICE_PER_HOUR", "cpu=-1")
    with pytest.raises(InvalidArgument, match="BOBENCH_PRICE_PER_HOUR: expected a price table"):
        load_settings(f)
    monkeypatch.delenv("BOBENCH_PRICE_PER_HOUR")
    f.write_text("price_per_hour: [cpu]\n")
    with pytest.raises(InvalidArgument, match="price_per_hour"):
        load_settings(f)


def test_the_report_carries_the_budget_section_with_prices_and_the_readers_capacity_ask(tmp_path):
    pytest.importorskip("matplotlib")
    from bobench.analysis.report import write_report
    from bobench.analysis.selection import Selection

    paths = write_report(
        tmp_path,
        out_dir=tmp_path / "report",
        selection=Selection(battle(), "a test battle"),
        limits={"min_server_qps": 500.0, "max_server_p99_ms": 30.0, "max_latency_ms": 100.0},
        prices=PRICES,
    )
    md = paths["report.md"].read_text()
    assert "## Budget and capacity" in md and "Prices per hour: cpu $0.1, nvidia-h200 $4." in md
    assert "### Your limits: min\\_server\\_qps \\>= 500, max\\_server\\_p99\\_ms \\<= 30" in md
    assert "### Best under $1 per million images" in md
    budget_part = md.split("## Budget and capacity", 1)[1]
    assert "$0.05556" in budget_part  # b: $0.10 / (500 img/s x 3600) x 1e6


def test_a_battle_spec_may_ask_the_budget_and_capacity_questions():
    from bobench.battle.spec import parse_spec

    spec = {"name": "b", "backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]}
    asked = {"max_cost_per_million": 0.5, "min_server_qps": 50, "max_server_p99_ms": 30}
    parsed = parse_spec({**spec, "recommend": asked})
    assert parsed.recommend == {
        "max_cost_per_million": 0.5,
        "min_server_qps": 50.0,
        "max_server_p99_ms": 30.0,
    }
    others, budget_limits = bud.split_limits(parsed.recommend)
    assert others == {} and budget_limits == parsed.recommend
