"""The serving path end to end: a battle with `embedder: triton` (real tritonserver) gives the same
features and metrics as in-process ONNX Runtime, embedded and through scheduler -> evaluator -> Triton."""

from __future__ import annotations

import numpy as np
import pytest

from bobench.battle.executors.local import LocalExecutor
from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.embed.cache import FeatureCache, FeatureKey
from bobench.stack.procs import stop_pid
from services import start_evaluator, start_scheduler

pytestmark = pytest.mark.integration

SPEC = {
    "name": "triton-e2e",
    "backbones": ["toy"],
    "datasets": ["toy"],
    "protocols": ["linear_probe", {"name": "knn", "config": {"ks": [5, 10]}}],
}


def _settings(cache, **kw) -> Settings:
    return Settings(cache_dir=str(cache), threads=1, batch_size=8, **kw)


def test_battle_with_triton_embedder_equals_onnxruntime(tmp_path, triton_toy):
    url = triton_toy["server"].grpc_url
    ort_run = run_battle(parse_spec(SPEC), tmp_path / "ort", _settings(tmp_path / "c-ort"), progress=False)
    triton_settings = _settings(tmp_path / "c-triton", embedder="triton", triton_url=url)
    executor = LocalExecutor(triton_settings)
    triton_run = run_battle(
        parse_spec(SPEC), tmp_path / "tr", triton_settings, executor=executor, progress=False
    )
    assert executor._embedder.runtime == "triton" and executor._embedder.forward_passes > 0
    by_key = {r.run_key: r for r in ort_run.records}
    for rec in triton_run.records:
        assert rec.finished, rec.error
        assert rec.environment["runtime"] == "triton" and rec.environment["feature_runtimes"] == ["triton"]
        assert rec.metrics == pytest.approx(by_key[rec.run_key].metrics, abs=1e-6)
    # the cached features themselves agree to 1e-5
    from bobench.backbones import get_spec
    from bobench.data import load_dataset

    key = FeatureKey(get_spec("toy").digest(), load_dataset("toy").fingerprint, "train")
    a = FeatureCache(tmp_path / "c-ort").get(key)[0]
    b = FeatureCache(tmp_path / "c-triton").get(key)[0]
    assert np.abs(a - b).max() <= 1e-5


def test_scheduler_to_evaluator_to_triton_matches_the_embedded_battle(tmp_path, triton_toy):
    from bobench.client import SchedulerClient

    embedded = run_battle(
        parse_spec(SPEC), tmp_path / "embedded", _settings(tmp_path / "c-local"), progress=False
    )
    env = {
        "OMP_NUM_THREADS": "1",
        "BOBENCH_THREADS": "1",
        "BOBENCH_BATCH_SIZE": "8",
        "BOBENCH_EMBEDDER": "triton",
        "BOBENCH_TRITON_URL": triton_toy["server"].grpc_url,
    }
    evaluator = start_evaluator(tmp_path, env, cache="c-ev", results="ev")
    scheduler = None
    try:
        scheduler = start_scheduler(tmp_path, evaluator.address, env)
        with SchedulerClient(scheduler.address) as client:
            client.wait_ready()
            served = {
                "name": "serving_latency",
                "config": {"batch_sizes": [1], "concurrencies": [1], "window_s": 0.2, "max_windows": 6},
            }
            battle_id = client.submit(
                parse_spec({**SPEC, "protocols": [*SPEC["protocols"], served]})
            ).battle_id
            for _ in client.watch(battle_id, timeout_s=180):
                pass
            remote = {r.run_key: r for r in client.results(battle_id)}
        latency = [r for r in remote.values() if r.protocol == "serving_latency"]
        assert len(latency) == 1 and latency[0].finished, latency[0].error  # found Triton via the evaluator
        assert (
            latency[0].metrics["latency_ms_p50_b1_c1"] > 0
            and latency[0].metrics["server_queue_ms_b1_c1"] >= 0
        )
        remote = {k: r for k, r in remote.items() if r.protocol != "serving_latency"}
        local = {r.run_key: r for r in embedded.records}
        assert remote.keys() == local.keys()
        for key, rec in local.items():
            assert remote[key].finished, remote[key].error
            assert remote[key].environment.get("runtime") == "triton"
            assert remote[key].metrics == pytest.approx(rec.metrics, abs=1e-6)
    finally:
        if scheduler is not None:
            stop_pid(scheduler.pid)
        stop_pid(evaluator.pid)
