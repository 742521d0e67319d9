"""The efficiency protocol: figures with their context, FLOPs checked by hand, null where uncountable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bobench.errors import FailedPrecondition, InvalidArgument
from bobench.protocols import get_protocol
from bobench.protocols.efficiency import count_flops, latency_summary, time_steps

torch.set_num_threads(1)

FAST = {"batch_sizes": [1, 4], "warmup_steps": 1, "timed_steps": 5}


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
        assert 0 < m[f"latency_ms_p50_b{b}"] <= m[f"latency_ms_p90_b{b}"] <= m[f"latency_ms_p99_b{b}"]
        assert m[f"throughput_ips_b{b}"] > 0
    assert m["peak_rss_mb"] > 0 and m["rss_delta_mb"] is not None
    assert m["peak_gpu_allocated_mb"] is None  # CPU run: no GPU figure, not a made-up 0


def test_each_timed_call_is_one_forward_pass_and_batch_size_is_restored(tmp_path):
    ctx = _context(tmp_path, "toy", "torch")
    embedder = ctx.embedder()
    before = embedder.forward_passes
    get_protocol("efficiency").evaluate(ctx, {**FAST, "batch_sizes": [8]}, 0)
    assert embedder.forward_passes - before == FAST["warmup_steps"] + FAST["timed_steps"]
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
        ({"iterations": 3}, "unknown config key"),
    ],
)
def test_bad_config_is_rejected(config, message):
    with pytest.raises(InvalidArgument, match=message):
        get_protocol("efficiency").evaluate(object(), config, 0)
