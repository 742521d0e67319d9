"""Feature cache: hits, misses, key sensitivity, atomic and corrupt entries."""

from __future__ import annotations

import numpy as np

from bobench.embed.cache import FeatureCache, FeatureKey


def test_put_get_roundtrip_and_counts(tmp_path):
    cache = FeatureCache(tmp_path)
    key = FeatureKey("abc", "fp1", "train")
    assert cache.get(key) is None and cache.misses == 1
    x, y = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32), np.arange(5)
    cache.put(key, x, y)
    got = cache.get(key)
    assert got is not None and cache.hits == 1
    np.testing.assert_array_equal(got[0], x)
    np.testing.assert_array_equal(got[1], y)
    assert not list(tmp_path.rglob("*.tmp.npz"))


def test_every_key_field_changes_the_entry(tmp_path):
    base = FeatureKey("abc", "fp1", "train")
    variants = [
        FeatureKey("abd", "fp1", "train"),
        FeatureKey("abc", "fp2", "train"),
        FeatureKey("abc", "fp1", "test"),
        FeatureKey("abc", "fp1", "train", "corrupt:fog:1"),
        FeatureKey("abc", "fp1", "train", precision="fp16"),
    ]
    assert len({k.hexdigest() for k in [base, *variants]}) == 6


def test_corrupt_entry_is_a_miss_not_a_crash(tmp_path):
    cache = FeatureCache(tmp_path)
    key = FeatureKey("abc", "fp1", "train")
    path = cache.put(key, np.zeros((2, 2), np.float32), np.zeros(2))
    path.write_bytes(b"not an npz")
    assert cache.get(key) is None


def test_the_runtime_is_in_the_key_and_onnx_keys_are_unchanged():
    import hashlib
    import json

    from bobench.embed.cache import feature_key, feature_runtime

    onnx = feature_key("abc", "fp1", "train", runtime="onnx")
    legacy = {"backbone_digest": "abc", "dataset_fingerprint": "fp1", "split": "train", "variant": ""}
    legacy["precision"] = "fp32"
    # entries written before the runtime was keyed (all ONNX: the graph ORT and Triton run) stay valid
    assert onnx.hexdigest() == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:32]
    assert feature_key("abc", "fp1", "train", runtime="torch").hexdigest() != onnx.hexdigest()
    assert feature_runtime("onnxruntime") == feature_runtime("triton") == "onnx"
    assert feature_runtime("torch") == "torch"


def _knn_plan():
    from bobench.battle.plan import plan_battle
    from bobench.battle.spec import parse_spec

    spec = {"backbones": ["toy"], "datasets": ["toy"], "protocols": [{"name": "knn", "config": {"ks": [5]}}]}
    (plan,) = plan_battle(parse_spec(spec))
    return plan


def test_torch_embedder_never_reads_onnxruntime_features(tmp_path):
    from bobench.battle.executors.local import LocalExecutor
    from bobench.config import Settings

    plan = _knn_plan()
    ort = LocalExecutor(Settings(cache_dir=str(tmp_path), embedder="onnxruntime", threads=1))
    assert ort.execute(plan).environment["feature_runtimes"] == ["onnxruntime"]
    torch = LocalExecutor(Settings(cache_dir=str(tmp_path), embedder="torch", threads=1))
    record = torch.execute(plan)
    assert record.finished, record.error
    assert record.environment["feature_runtimes"] == ["torch"]
    again = LocalExecutor(Settings(cache_dir=str(tmp_path), embedder="torch", threads=1))
    assert again.execute(plan).environment["feature_runtimes"] == ["torch"] and again._embedder is None


def test_recompute_features_ignores_cached_entries_once(tmp_path):
    from bobench.battle.executors.local import LocalExecutor
    from bobench.config import Settings

    plan = _knn_plan()
    LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1)).execute(plan)
    fresh = LocalExecutor(Settings(cache_dir=str(tmp_path), threads=1, recompute_features=True))
    first = fresh.execute(plan)
    assert first.finished and fresh.cache.hits == 0 and fresh._embedder is not None
    misses = fresh.cache.misses
    second = fresh.execute(plan)  # what this executor computed is served again, not recomputed
    assert fresh.cache.misses == misses and fresh.cache.hits > 0
    assert second.metrics["top1"] == first.metrics["top1"]


def test_recompute_flag_sets_the_setting(monkeypatch):
    import argparse

    from bobench.cli.common import add_settings_flags, settings_from

    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    assert settings_from(parser.parse_args(["--recompute"])).recompute_features is True
    assert settings_from(parser.parse_args([])).recompute_features is False
    monkeypatch.setenv("BOBENCH_RECOMPUTE_FEATURES", "1")
    assert settings_from(parser.parse_args([])).recompute_features is True


def test_recompute_reruns_finished_runs_of_a_battle(tmp_path):
    from bobench.battle.runner import run_battle
    from bobench.battle.spec import parse_spec
    from bobench.config import Settings

    spec = parse_spec(
        {"backbones": ["toy"], "datasets": ["toy"], "protocols": [{"name": "knn", "config": {"ks": [5]}}]}
    )
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1)
    assert run_battle(spec, tmp_path / "out", settings, progress=False).executed == 1
    assert run_battle(spec, tmp_path / "out", settings, progress=False).reused == 1
    forced = Settings(cache_dir=str(tmp_path / "cache"), threads=1, recompute_features=True)
    assert run_battle(spec, tmp_path / "out", forced, progress=False).executed == 1
