"""The efficiency protocol: figures with their context, FLOPs checked by hand, null where uncountable,
timm's budget by default, percentiles only when backed, per-batch memory, handed interleaved times."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bobench.errors import FailedPrecondition, InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.efficiency import HandedLatency, count_flops, handed_latency, handoff_key
from bobench.protocols.latency import latency_summary, time_steps

torch.set_num_threads(1)

FAST = {"batch_sizes": [1, 4], "warmup_steps": 1, "timed_steps": 5, "min_time_s": 0.0}


def _context(root, backbone: str, runtime: str, module_factory=None):
    from bobench.backbones import create_backbone
    from bobench.battle.context import LocalContext
    from bobench.data import load_dataset
    from bobench.embed import make_embedder
    from bobench.embed.cache import FeatureCache

    embedder = make_embedder(runtime, backbone, batch_size=2, cache_dir=str(root), threads=1)
    if module_factory is None:
        module_factory = lambda: create_backbone(backbone, cache_dir=str(root)).module  # noqa: E731
    return LocalContext(
        embedder.spec, load_dataset("toy"), cache=FeatureCache(root), embedder_factory=lambda: embedder,
        dataset_loader=load_dataset, module_factory=module_factory,
    )  # fmt: skip


def _conv_flops(c_in: int, c_out: int, kernel: int, out_px: int) -> int:
    return 2 * c_in * c_out * kernel * kernel * out_px * out_px  # a multiply-add counts as 2 FLOPs


def test_toy_backbone_figures_carry_their_context(tmp_path):
    ctx = _context(tmp_path, "toy", "torch")
    m = get_protocol("efficiency").evaluate(ctx, FAST, 0)
    module = ctx.backbone_module()
    assert m["params"] == sum(p.numel() for p in module.parameters()) and m["params_source"] == "torch"
    # ToyNet at 32 px: three 3x3 stride-2 convs, 3->16 (16 px out), 16->32 (8 px), 32->32 (4 px)
    expected = _conv_flops(3, 16, 3, 16) + _conv_flops(16, 32, 3, 8) + _conv_flops(32, 32, 3, 4)
    assert m["flops"] == expected
    assert m["flops_counter"] == "torch.utils.flop_counter.FlopCounterMode" and m["flops_unit"] == "FLOPs"
    assert (m["runtime"], m["device"], m["precision"]) == ("torch", "cpu", "fp32")
    assert m["threads"] == 1 and m["batch_sizes"] == [1, 4] and m["timed_steps"] == 5
    for b in (1, 4):
        assert 0 < m[f"latency_ms_p50_b{b}"] and m[f"latency_samples_b{b}"] == 5
        assert (
            m[f"latency_ms_p90_b{b}"] is None and m[f"latency_ms_p99_b{b}"] is None
        )  # 5 samples back p50 only
        assert m[f"throughput_ips_b{b}"] > 0
        assert m[f"peak_rss_mb_b{b}"] > 0 and m[f"rss_delta_mb_b{b}"] is not None
        assert m[f"peak_gpu_allocated_mb_b{b}"] is None  # CPU run: no GPU figure, not a made-up 0
    assert m["peak_rss_mb"] == max(m["peak_rss_mb_b1"], m["peak_rss_mb_b4"])
    assert (
        m["peak_gpu_allocated_mb"] is None and m["measurement"] == "alone" and m["interleaved_with"] is None
    )


def test_each_timed_call_is_one_forward_pass_and_batch_size_is_restored(tmp_path):
    ctx = _context(tmp_path, "toy", "torch")
    embedder = ctx.embedder()
    before = embedder.forward_passes
    get_protocol("efficiency").evaluate(ctx, {**FAST, "batch_sizes": [8]}, 0)
    memory_pass = 1
    assert embedder.forward_passes - before == FAST["warmup_steps"] + FAST["timed_steps"] + memory_pass
    assert embedder.batch_size == 2


def test_onnx_only_backbone_has_null_flops_and_counts_initializers(tmp_path):
    from bobench.errors import Unavailable

    def no_module():
        raise FailedPrecondition("open_nsfw is an ONNX model")

    try:
        ctx = _context(tmp_path, "open_nsfw", "onnxruntime", module_factory=no_module)
    except Unavailable as exc:
        pytest.skip(f"open_nsfw weights not installed: {exc}")
    m = get_protocol("efficiency").evaluate(ctx, {**FAST, "batch_sizes": [1]}, 0)
    assert m["flops"] is None and m["flops_counter"] is None
    assert m["params_source"] == "onnx_initializers"
    assert m["params"] == pytest.approx(ctx.spec.num_params, rel=1e-4)  # catalog figure 5,889,222
    assert m["runtime"] == "onnxruntime" and m["latency_ms_p50_b1"] > 0


def test_flops_are_null_when_the_counter_knows_no_op():
    class Elementwise(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.float() * self.scale).mean(dim=(2, 3))

    assert count_flops(Elementwise(), 8) is None


def test_flops_of_a_linear_layer_match_the_formula():
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.float().flatten(1))

    assert count_flops(Flat(), 4) == 2 * 48 * 10


def test_latency_summary_matches_a_brute_force_percentile():
    times = [float(t) for t in np.random.default_rng(0).permutation(np.arange(1, 101))]
    s = latency_summary(times, 4)

    def percentile(q: float) -> float:  # linear interpolation between closest ranks
        ordered = sorted(times)
        rank = q / 100 * (len(ordered) - 1)
        lo = int(rank)
        return ordered[lo] + (rank - lo) * (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo])

    assert s["latency_ms_p50_b4"] == pytest.approx(percentile(50)) == pytest.approx(50.5)
    assert s["latency_ms_p90_b4"] == pytest.approx(percentile(90))
    assert s["latency_ms_p99_b4"] == pytest.approx(percentile(99))
    assert s["throughput_ips_b4"] == pytest.approx(4 * 100 / (sum(times) / 1000))


def test_time_steps_times_only_the_timed_calls():
    calls = []
    ticks = iter(range(100))
    times = time_steps(
        lambda: calls.append(1), warmup_steps=3, timed_steps=4, clock=lambda: next(ticks) / 1000
    )
    assert len(calls) == 7 and times == pytest.approx([1.0] * 4)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"batch_sizes": [0]}, "batch_sizes"),
        ({"timed_steps": 0}, "timed_steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"min_time_s": -1.0}, "min_time_s"),
        ({"timed_steps": 50, "max_timed_steps": 45}, "max_timed_steps"),
        ({"block_steps": 0}, "block_steps"),
        ({"iterations": 3}, "unknown config key"),
    ],
)
def test_bad_config_is_rejected(config, message):
    with pytest.raises(InvalidArgument, match=message):
        get_protocol("efficiency").evaluate(object(), config, 0)


def test_default_budget_is_timms():
    defaults = get_protocol("efficiency").resolve_config({})
    assert (defaults["warmup_steps"], defaults["timed_steps"]) == (10, 40)  # timm benchmark.py
    assert defaults["min_time_s"] > 0 and defaults["max_timed_steps"] >= 100
    assert get_protocol("efficiency").version == "2"


def _brute_force_backed(times: list[float], q: float) -> float | None:
    """A percentile is backed when at least one sample lies at or beyond its rank: n * (1 - q) >= 1."""
    n = len(times)
    if n * (1 - q / 100) < 1 - 1e-9:
        return None
    ordered = sorted(times)
    rank = q / 100 * (n - 1)
    lo = int(rank)
    return ordered[lo] + (rank - lo) * (ordered[min(lo + 1, n - 1)] - ordered[lo])


@pytest.mark.parametrize("n", [1, 5, 9, 10, 40, 99, 100, 250])
def test_percentiles_are_reported_only_when_enough_samples_back_them(n):
    times = [float(t) for t in np.random.default_rng(n).gamma(2.0, 3.0, size=n)]
    s = latency_summary(times, 1)
    for q in (50, 90, 99):
        expected = _brute_force_backed(times, q)
        got = s[f"latency_ms_p{q}_b1"]
        assert (got is None) == (expected is None), (n, q)
        if expected is not None:
            assert got == pytest.approx(expected)
    assert s["latency_samples_b1"] == n


def test_per_batch_memory_is_this_backbones_not_the_process_high_water_mark(tmp_path):
    from bobench.protocols.memory import read_memory_kb

    ballast = np.ones(300 * 2**20 // 8)  # 300 MiB touched, then freed: the process's lifetime peak
    del ballast
    process_hwm_mb = read_memory_kb()["VmHWM"] / 1024
    ctx = _context(tmp_path, "toy", "torch")
    m = get_protocol("efficiency").evaluate(ctx, {**FAST, "batch_sizes": [1]}, 0)
    assert m["peak_rss_reset"] is True
    assert m["peak_rss_mb"] < process_hwm_mb - 200  # the 300 MiB burst before the run is not in it
    assert 0 <= m["rss_delta_mb_b1"] < 100


def test_handed_interleaved_times_are_used_and_only_for_their_run(tmp_path):
    ctx = _context(tmp_path, "toy", "torch")
    config = {**FAST, "batch_sizes": [1]}
    handed = HandedLatency({1: [2.0, 4.0, 6.0]}, ("resnet18-random",))
    embedder = ctx.embedder()
    with handed_latency({handoff_key(ctx.spec.digest(), config, 0): handed}):
        before = embedder.forward_passes
        m = get_protocol("efficiency").evaluate(ctx, config, 0)
        assert embedder.forward_passes - before == 1  # the memory pass only: no timing of its own
        other_seed = get_protocol("efficiency").evaluate(ctx, config, 1)
    assert m["measurement"] == "interleaved" and m["interleaved_with"] == "resnet18-random"
    assert m["latency_ms_mean_b1"] == pytest.approx(4.0) and m["latency_samples_b1"] == 3
    assert other_seed["measurement"] == "alone"  # another seed is another run
    assert get_protocol("efficiency").evaluate(ctx, config, 0)["measurement"] == "alone"  # dropped on exit


@pytest.mark.gpu
def test_gpu_memory_is_reported_per_batch_size(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from bobench.backbones import create_backbone
    from bobench.battle.context import LocalContext
    from bobench.data import load_dataset
    from bobench.embed import make_embedder
    from bobench.embed.cache import FeatureCache

    embedder = make_embedder("torch", "toy", batch_size=2, cache_dir=str(tmp_path), device="cuda")
    ctx = LocalContext(
        embedder.spec, load_dataset("toy"), cache=FeatureCache(tmp_path), embedder_factory=lambda: embedder,
        dataset_loader=load_dataset, module_factory=lambda: create_backbone("toy", cache_dir=str(tmp_path)).module,
    )  # fmt: skip
    m = get_protocol("efficiency").evaluate(ctx, {**FAST, "batch_sizes": [1, 256], "flops": False}, 0)
    assert m["device"] == "cuda"
    assert 0 < m["peak_gpu_allocated_mb_b1"] < m["peak_gpu_allocated_mb_b256"]  # reset between batches
    assert m["peak_gpu_allocated_mb_b256"] <= m["peak_gpu_reserved_mb_b256"]
    assert m["peak_gpu_allocated_mb"] == m["peak_gpu_allocated_mb_b256"]
