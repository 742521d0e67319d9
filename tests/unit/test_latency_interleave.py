"""Interleaved latency: round robin in blocks over one time window, timm's budget, the battle step.

The fairness check runs on a simulated clock (a background load that comes and goes at known
times), so it asserts what interleaving guarantees without timing anything on this machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from bobench.battle.latency_step import measure_battle_latency
from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.protocols.latency import Budget, measure_alone, measure_interleaved


class SimulatedHost:
    """A clock and steps whose duration is their base cost times the load at the time they run."""

    def __init__(self, load) -> None:
        self.now_s = 0.0
        self.load = load
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now_s

    def step(self, name: str, base_s: float):
        def run() -> None:
            self.calls.append(name)
            self.now_s += base_s * self.load(self.now_s)

        return run


def test_blocks_alternate_and_the_order_rotates_every_round():
    host = SimulatedHost(lambda t: 1.0)
    steps = {n: host.step(n, 0.001) for n in ("a", "b", "c")}
    budget = Budget(warmup_steps=1, timed_steps=4, block_steps=2, block_warmup_steps=0)
    times = measure_interleaved(steps, budget, host.clock)
    assert host.calls[:3] == ["a", "b", "c"]  # warm-up of each
    timed = host.calls[3:]
    blocks = [timed[i] for i in range(0, len(timed), 2)]
    assert blocks == ["a", "b", "c", "b", "c", "a"]  # round 2 starts one further along
    assert all(len(t) == 4 for t in times.values())
    assert times["a"] == pytest.approx([1.0] * 4)


def test_each_block_rewarms_untimed_after_a_switch():
    class ColdAfterSwitch(SimulatedHost):  # the first call after another model ran is 10x slower
        def step(self, name: str, base_s: float):
            def run() -> None:
                cold = bool(self.calls) and self.calls[-1] != name
                self.calls.append(name)
                self.now_s += base_s * (10 if cold else 1)

            return run

    host = ColdAfterSwitch(lambda t: 1.0)
    steps = {n: host.step(n, 0.001) for n in ("a", "b")}
    times = measure_interleaved(steps, Budget(warmup_steps=1, timed_steps=20, block_steps=5), host.clock)
    assert times["a"] == pytest.approx([1.0] * 20) and times["b"] == pytest.approx([1.0] * 20)
    host = ColdAfterSwitch(lambda t: 1.0)
    steps = {n: host.step(n, 0.001) for n in ("a", "b")}
    budget = Budget(warmup_steps=1, timed_steps=20, block_steps=5, block_warmup_steps=0)
    assert max(measure_interleaved(steps, budget, host.clock)["a"]) == pytest.approx(10.0)


def test_min_time_extends_the_timed_steps_and_max_caps_them():
    host = SimulatedHost(lambda t: 1.0)
    times = measure_alone(host.step("a", 0.001), Budget(0, 40, min_time_s=0.1, block_steps=5), host.clock)
    assert len(times) == 100  # 40 would be 40 ms; the minimum time asks for 100 ms of 1 ms calls
    capped = measure_alone(
        host.step("a", 0.001), Budget(0, 40, min_time_s=10.0, max_timed_steps=60), host.clock
    )
    assert len(capped) == 60
    slow = measure_alone(host.step("a", 0.5), Budget(0, 40, min_time_s=1.0), host.clock)
    assert len(slow) == 40  # at least the step count, even when the minimum time is long passed


def _ratio(times: dict[str, list[float]]) -> float:
    return float(np.median(times["b"]) / np.median(times["a"]))


def test_interleaved_ratio_survives_a_load_burst_that_skews_back_to_back_timing():
    def burst(t: float) -> float:  # a background job triples every step's time for a while
        return 3.0 if 0.05 <= t < 0.5 else 1.0

    budget = Budget(warmup_steps=0, timed_steps=200, block_steps=5)
    host = SimulatedHost(burst)
    sequential = {
        n: measure_alone(host.step(n, base), budget, host.clock) for n, base in (("a", 1e-3), ("b", 2e-3))
    }
    host = SimulatedHost(burst)
    interleaved = measure_interleaved(
        {"a": host.step("a", 1e-3), "b": host.step("b", 2e-3)}, budget, host.clock
    )
    true_ratio = 2.0
    assert abs(_ratio(sequential) / true_ratio - 1) > 0.3  # a sat in the burst, b mostly did not
    assert abs(_ratio(interleaved) / true_ratio - 1) < 0.05


def test_nothing_to_measure_is_an_error():
    with pytest.raises(InvalidArgument, match="nothing to measure"):
        measure_interleaved({}, Budget())


EFFICIENCY = {"batch_sizes": [1], "warmup_steps": 1, "timed_steps": 5, "min_time_s": 0.0, "flops": False}


def _spec(backbones: list[str]):
    return parse_spec(
        {"name": "fair", "backbones": backbones, "datasets": ["toy"],
         "protocols": [{"name": "efficiency", "config": EFFICIENCY}], "seeds": [0]}
    )  # fmt: skip


def test_a_battle_times_its_backbones_interleaved_and_each_record_says_so(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, batch_size=4)
    outcome = run_battle(_spec(["toy", "resnet18-random"]), tmp_path / "out", settings, progress=False)
    by_backbone = {r.backbone: r for r in outcome.records}
    assert {r.status for r in outcome.records} == {"finished"}
    toy, resnet = by_backbone["toy"].metrics, by_backbone["resnet18-random"].metrics
    assert (toy["measurement"], toy["interleaved_with"]) == ("interleaved", "resnet18-random")
    assert (resnet["measurement"], resnet["interleaved_with"]) == ("interleaved", "toy")
    assert toy["latency_samples_b1"] == resnet["latency_samples_b1"] == 5
    assert resnet["latency_ms_p50_b1"] > toy["latency_ms_p50_b1"]  # 224 px ResNet-18 vs a 32 px toy net
    assert toy["peak_rss_mb_b1"] is not None  # memory is still the run's own


def test_a_lone_backbone_and_a_remote_executor_time_alone(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, batch_size=4)
    (record,) = run_battle(_spec(["toy"]), tmp_path / "out", settings, progress=False).records
    assert record.metrics["measurement"] == "alone"

    class RemoteExecutor:  # stand-in for the gRPC / Kubernetes executors: runs elsewhere
        settings = Settings(cache_dir=str(tmp_path / "cache"))

    from bobench.battle.plan import plan_battle

    assert measure_battle_latency(RemoteExecutor(), plan_battle(_spec(["toy", "resnet18-random"]))) == {}


def test_a_failing_latency_step_leaves_the_runs_to_time_alone(tmp_path, monkeypatch):
    import bobench.protocols.efficiency as efficiency

    def broken(*args, **kwargs):
        raise RuntimeError("a library failure inside the interleaved timing")

    monkeypatch.setattr(efficiency, "measure_together", broken)
    settings = Settings(cache_dir=str(tmp_path / "cache"), threads=1, batch_size=4)
    outcome = run_battle(_spec(["toy", "resnet18-random"]), tmp_path / "out", settings, progress=False)
    assert [r.status for r in outcome.records] == ["finished", "finished"]
    assert {r.metrics["measurement"] for r in outcome.records} == {"alone"}
