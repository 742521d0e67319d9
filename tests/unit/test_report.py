"""The report: files, decodable non-trivial PNGs, HTML/Markdown content, CSV export (headless Chromium:
tests/integration/test_report_chromium.py)."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from report_battle import record, synthetic_battle

from bobench.analysis import analyze, export_csv, load_external_csv, write_report
from bobench.errors import NotFound
from bobench.results import read_records


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    with (results / "results.jsonl").open("w") as fh:
        for rec in synthetic_battle():
            fh.write(rec.to_json() + "\n")
    external = results / "published.csv"
    external.write_text(
        "backbone,task,dataset,protocol,metric,value,higher_is_better,pretraining_method\n"
        "published_convnext_b,classification,lfw,linear_probe,top1,0.95,true,supervised\n"
        "published_convnext_b,retrieval,photos,retrieval,map,0.8,true,supervised\n"
        "published_convnext_b,ood,uci_digits,ood,error,0.45,false,supervised\n"
    )
    return results, write_report(results, external=[external])


def test_report_writes_every_file(report):
    results, files = report
    expected = {"report.html", "report.md", "analysis.json", "runs.csv"}
    expected |= {
        f"plots/{n}.png"
        for n in ("overall", "task_heatmap", "task_correlation", "pareto_latency", "pareto_params")
    }
    assert set(files) == expected
    assert all(p.is_file() and p.stat().st_size > 0 for p in files.values())
    assert files["report.html"].parent == results / "report"


def test_plots_decode_and_are_not_trivial(report):
    _, files = report
    for name, path in files.items():
        if not name.endswith(".png"):
            continue
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        assert rgb.shape[0] >= 300 and rgb.shape[1] >= 400, name
        colours = np.unique(rgb.reshape(-1, 3), axis=0)
        assert len(colours) >= 50, f"{name}: only {len(colours)} colours"
        assert (rgb < 250).mean() > 0.02, f"{name}: almost blank"


def test_served_latency_panel_is_drawn_next_to_in_process_latency(report):
    _, files = report
    with Image.open(files["plots/pareto_latency.png"]) as img:
        width, height = img.size
    assert width > 1.6 * height  # two panels side by side


def test_html_is_self_contained_and_references_every_plot(report):
    _, files = report
    page = files["report.html"].read_text()
    for name in (n for n in files if n.endswith(".png")):
        tag = re.search(rf'<img [^>]*data-file="{re.escape(name)}"[^>]*>', page)
        assert tag, name
        assert 'src="data:image/png;base64,' in tag.group(0)
        assert f'title="{name.split("/")[1]}"' in tag.group(0)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page
    assert "Content-Security-Policy" in page


def test_html_contains_leaderboard_rules_environment_and_failures(report):
    results, files = report
    page = files["report.html"].read_text()
    board = page[page.index('id="overall-leaderboard"') : page.index('id="coverage-and-missing-data"')]
    shown = re.findall(
        r"<tr><td class=num>\d+</td><td class=num>[\d-]+</td><td>[^<]*</td><td>([^<]+)</td>", board
    )
    expected = analyze(read_records(results), load_external_csv(results / "published.csv")).overall
    assert shown == [e["backbone"] + (" (ext)" if e["external"] else "") for e in expected]
    measured = [b for b in shown if not b.endswith("(ext)")]
    assert measured[:2] == ["clip_vit_b16", "convnext_tiny"] and measured[-1] == "random_resnet18"
    assert "published_convnext_b (ext)" in page
    assert "partial_vit" in page[page.index('id="coverage-and-missing-data"') :]  # below min coverage
    assert "population standard deviation" in page
    assert "onnxruntime 1.32.0" in page
    assert "RuntimeError: &lt;out of memory&gt; &amp; more" in page  # escaped error text
    assert "latency_ms_p50_b1_c1" in page
    assert "Best under 30 M parameters" in page


def test_markdown_references_plots_and_has_tables(report):
    _, files = report
    md = files["report.md"].read_text()
    for name in (n for n in files if n.endswith(".png")):
        assert f"]({name})" in md
    assert "| rank | backbone | score |" in md
    assert "| 2 | clip_vit_b16 |" in md
    assert "RuntimeError: \\<out of memory\\> & more |" in md  # a table cell cannot open an HTML tag


def test_analysis_json_matches_the_analysis(report):
    results, files = report
    data = json.loads(files["analysis.json"].read_text())
    again = analyze(read_records(results), load_external_csv(results / "published.csv"))
    assert [(e["backbone"], e["rank"]) for e in data["overall"]] == [
        (e["backbone"], e["rank"]) for e in again.overall
    ]
    assert {e["backbone"] for e in data["excluded"]} == {"partial_vit"}
    assert data["failed_runs"][0]["backbone"] == "resnet50"


def test_export_csv_flattens_metrics_environment_and_info(tmp_path):
    recs = synthetic_battle()
    path = export_csv(recs, tmp_path / "runs.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == len(recs)
    assert {"metric.top1", "metric.latency_ms_p50_b1", "env.versions.onnxruntime", "info.family"} <= set(
        rows[0]
    )
    first = rows[0]
    assert float(first["metric.top1"]) == pytest.approx(recs[0].metrics["top1"])
    assert first["metric.latency_ms_p50_b1"] == ""  # not measured in this run
    eff = next(r for r in rows if r["task"] == "efficiency")
    assert eff["metric.flops"] == ""  # None stays empty, never 0
    assert next(r for r in rows if r["status"] == "failed")["error"].endswith("& more")


def test_write_report_without_records_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="no run records"):
        write_report(tmp_path)


def test_sparse_results_give_a_report_with_only_the_plots_they_support(tmp_path):
    recs = [
        record(1, "<b>evil</b>", "classification", "lfw", "linear_probe", {"top1": 0.5}, "top1"),
        record(2, "resnet50", "classification", "lfw", "linear_probe", {"top1": 0.6}, "top1"),
        record(3, "resnet50", "retrieval", "photos", "retrieval", {}, "map", status="failed", error="   "),
    ]
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in recs))
    files = write_report(tmp_path / "results.jsonl", out_dir=tmp_path / "out")
    plots = sorted(n for n in files if n.endswith(".png"))
    assert plots == [
        "plots/overall.png",
        "plots/pareto_params.png",
        "plots/task_heatmap.png",
    ]  # 1 task, no latency
    page = files["report.html"].read_text()
    assert "<b>evil" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "(empty)" in page  # a blank error message is still shown as a failed run


def test_a_single_backbone_battle_reports_without_a_score_and_without_crashing(tmp_path):
    from bobench.analysis import format_leaderboard
    from bobench.results import append_record

    append_record(tmp_path, record(1, "only", "classification", "ds", "knn", {"top1_k20": 0.8}, "top1_k20"))
    paths = write_report(tmp_path)
    assert paths["report.html"].is_file() and "only" in paths["report.html"].read_text()
    text = format_leaderboard(analyze(read_records(tmp_path)))
    assert "no backbone is ranked" in text and "single backbone" in text


def test_task_correlation_is_not_drawn_with_too_few_backbones(tmp_path):
    """Four backbones over two tasks: rho is noise; the heatmap is withheld and the table flags it."""
    recs, i = [], 0
    for b, quality in (("a", 0.9), ("b", 0.7), ("c", 0.5), ("d", 0.2)):
        for task, protocol in (("classification", "linear_probe"), ("retrieval", "retrieval")):
            recs.append(record(i := i + 1, b, task, "lfw", protocol, {"top1": quality}, "top1"))
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in recs))
    files = write_report(tmp_path)
    assert "plots/task_correlation.png" not in files
    text = files["report.md"].read_text()
    assert "Too few backbones for a meaningful correlation" in text
    assert "1.00 (n=4, too few)" in text


def test_report_states_its_choices_and_shows_raw_metrics_with_intervals(tmp_path):
    metrics = {"a": (0.80, 0.70, 0.88), "b": (0.79, 0.69, 0.87), "c": (0.20, 0.15, 0.25)}
    recs = [
        record(i, b, "classification", "lfw", "linear_probe",
               {"top1": v, "top1_ci_low": lo, "top1_ci_high": hi, "n_test": 400}, "top1")
        for i, (b, (v, lo, hi)) in enumerate(metrics.items())
    ]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in recs))
    text = write_report(tmp_path)["report.md"].read_text()
    assert "this project's choice" in text  # population std is a stated choice, not "as in the paper"
    assert "Task map: 'records'" in text
    assert "0.800 [0.700, 0.880] n=400" in text
    assert "= 2" in text and "1-2" in text  # a and b are tied at 95 %


def test_canned_recommendations_leave_out_random_init(report):
    _, files = report
    page = files["report.md"].read_text()
    advice = page[page.index("## Recommendations") : page.index("## Per-setting metrics")]
    assert "random\\_resnet18" not in advice  # the fastest, smallest backbone, but random-init
    assert "Random-init baselines are left out" in advice
