"""One ONNX Runtime session per backbone across a battle: the latency step and every run share it,
a cached export is neither rebuilt nor verified again, and a reused session embeds exactly as a
fresh one does. Counts come from `bobench.stage_timer` counters, nothing is timed."""

from __future__ import annotations

import numpy as np

from bobench import stage_timer
from bobench.backbones import get_spec
from bobench.backbones.weights import with_weights_digest
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.embed import make_embedder

BACKBONES = ("toy", "resnet18-random")
EFFICIENCY = {"batch_sizes": [1], "warmup_steps": 1, "timed_steps": 3, "min_time_s": 0.0, "flops": False}


def _spec():
    return parse_spec(
        {"name": "sessions", "backbones": list(BACKBONES), "datasets": ["toy"],
         "protocols": ["knn", {"name": "efficiency", "config": EFFICIENCY}], "seeds": [0]}
    )  # fmt: skip


def _counts(table: stage_timer.StageTable, backbone: str) -> dict[str, int]:
    kinds = ("onnx_exports", "onnx_verifications", "onnx_export_cache_hits", "ort_sessions")
    return {kind: table.counts.get(f"{kind}:{backbone}", 0) for kind in kinds}


def test_a_cold_battle_exports_verifies_and_opens_one_session_per_backbone(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, batch_size=8)
    with stage_timer.recording() as table:
        outcome = run_battle(_spec(), tmp_path / "out", settings, progress=False)
    assert {r.status for r in outcome.records} == {"finished"}
    timed = {r.metrics["measurement"] for r in outcome.records if r.protocol == "efficiency"}
    assert timed == {"interleaved"}
    for name in BACKBONES:  # latency step + knn + efficiency: one session; the export verified once
        assert _counts(table, name) == {
            "onnx_exports": 1, "onnx_verifications": 1, "onnx_export_cache_hits": 0, "ort_sessions": 1
        }  # fmt: skip


def test_a_warm_export_cache_is_neither_rebuilt_nor_verified_again(tmp_path):
    cache = str(tmp_path / "cache")
    run_battle(_spec(), tmp_path / "first", Settings(cache_dir=cache, threads=1), progress=False)
    settings = Settings(cache_dir=cache, threads=1, recompute_features=True)  # embeds again
    with stage_timer.recording() as table:
        run_battle(_spec(), tmp_path / "second", settings, progress=False)
    for name in BACKBONES:
        assert _counts(table, name) == {
            "onnx_exports": 0, "onnx_verifications": 0, "onnx_export_cache_hits": 1, "ort_sessions": 1
        }  # fmt: skip


def test_the_prepared_embedder_is_the_runs_embedder_and_close_releases_it(tmp_path):
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1, batch_size=4))
    toy, resnet = (with_weights_digest(get_spec(n)) for n in BACKBONES)
    prepared = executor.prepared_embedder(toy)
    other = executor.prepared_embedder(resnet)
    assert executor.prepared_embedder(toy) is prepared
    assert executor.embedder(toy) is prepared  # the run takes over the one the latency step timed
    assert executor.embedder(resnet) is other
    assert prepared.session is None  # moving on to the next backbone closed the previous one
    executor.close()
    assert other.session is None


def test_features_from_a_reused_session_equal_a_fresh_sessions(tmp_path):
    executor = LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1, batch_size=4))
    toy = with_weights_digest(get_spec("toy"))
    reused = executor.prepared_embedder(toy)
    rng = np.random.default_rng(0)
    for _ in range(5):  # the latency step's use: random batches at several sizes
        reused.embed(rng.integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8))
    images = rng.integers(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)
    fresh = make_embedder("onnxruntime", "toy", batch_size=4, threads=1, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(executor.embedder(toy).embed(images), fresh.embed(images))
    fresh.close()
    executor.close()
