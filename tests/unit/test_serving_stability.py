"""serving_latency's stability rule is perf_analyzer's: max/min of the last windows <= 1 + threshold."""

from __future__ import annotations

import pytest

from bobench.protocols import get_protocol
from bobench.protocols.serving_latency import Window, _converged


def _window(throughput_ips: float, p50_ms: float) -> Window:
    """A 1 s window with `throughput_ips` images and every request at `p50_ms`."""
    n = max(1, int(throughput_ips))
    return Window(0.0, 1.0, [p50_ms / 1e3] * n, int(throughput_ips), {})


def perf_analyzer_stable(values: list[float], threshold: float) -> bool:
    """perf_analyzer's check, written from its documentation: every pair of the last windows is
    within the threshold, i.e. max / min <= 1 + threshold."""
    return max(values) / min(values) <= 1 + threshold


@pytest.mark.parametrize(
    ("throughputs", "expected"),
    [
        ([90.0, 110.0, 100.0], False),  # max/min = 1.22: within 10 % of the mean, not of each other
        ([95.0, 104.0, 100.0], True),  # 1.095
        ([100.0, 100.0, 111.0], False),  # 1.11
        ([100.0, 100.0, 100.0], True),
    ],
)
def test_throughput_stability_follows_perf_analyzer(throughputs, expected):
    windows = [_window(t, 5.0) for t in throughputs]
    assert perf_analyzer_stable(throughputs, 0.10) is expected
    assert _converged(windows, 10.0) is expected


def test_latency_stability_follows_perf_analyzer():
    p50s = [4.5, 5.5, 5.0]  # max/min = 1.22
    assert perf_analyzer_stable(p50s, 0.10) is False
    assert _converged([_window(100.0, p) for p in p50s], 10.0) is False
    assert _converged([_window(100.0, p) for p in (4.8, 5.2, 5.0)], 10.0) is True  # 1.083


def test_empty_window_is_never_stable():
    assert _converged([_window(100.0, 5.0), Window(1.0, 2.0, [], 0, {})], 10.0) is False


def test_protocol_version_is_bumped_for_the_stricter_rule():
    assert int(get_protocol("serving_latency").version) >= 2  # 2: the stricter rule (3 added scenarios)
