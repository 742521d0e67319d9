"""The LoadGen-style scenario engine (bobench.serving.loadgen) without a server.

The system under test here is `QueueSystem`: a real FIFO server of `workers` threads, each answering
a query after `service_s` of sleep. It is a stand-in for Triton (these tests check the scheduling and
statistics, not a model); the same scenarios run against a real tritonserver in
tests/integration/test_triton_scenarios.py.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest

from bobench.errors import InvalidArgument
from bobench.protocols import get_protocol
from bobench.serving import loadgen as lg


class QueueSystem:
    """`workers` threads serving queries first come first served, `service_s` each (a stand-in)."""

    def __init__(self, service_s: float, workers: int = 1) -> None:
        self.service_s = service_s
        self.jobs: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            time.sleep(self.service_s)
            job(None)

    def issue(self, on_done) -> None:
        self.jobs.put(on_done)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


@pytest.fixture
def fast_system():
    system = QueueSystem(0.0005, workers=2)
    yield system
    system.close()


def test_poisson_arrivals_are_seeded_and_exponential_by_scipy_and_own_ks():
    stats = pytest.importorskip("scipy.stats")
    a = lg.poisson_arrivals(200.0, 4000, seed=3)
    assert np.array_equal(a, lg.poisson_arrivals(200.0, 4000, seed=3))
    assert not np.array_equal(a, lg.poisson_arrivals(200.0, 4000, seed=4))
    gaps = np.diff(np.concatenate([[0.0], a]))
    d, p = lg.ks_exponential(gaps, 200.0)
    ref = stats.kstest(gaps, "expon", args=(0, 1 / 200.0))
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, abs=0.01)
    assert p > 0.01  # a Poisson schedule is not rejected
    assert 4000 / a[-1] == pytest.approx(200.0, rel=0.05)


@pytest.mark.parametrize(("n", "low", "high"), [(20, 0.0, 0.02), (50, 0.0, 0.02), (200, 0.005, 0.015)])
def test_own_ks_p_value_matches_scipy_on_small_and_non_exponential_samples(n, low, high):
    stats = pytest.importorskip("scipy.stats")
    gaps = np.random.default_rng(n).uniform(low, high, size=n)  # mean 0.01, but not exponential
    d, p = lg.ks_exponential(gaps, 100.0)
    ref = stats.kstest(gaps, "expon", args=(0, 0.01))  # scipy: the exact distribution at small n
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, abs=0.03)
    if n == 200:
        assert p < 1e-6 and ref.pvalue < 1e-6


def test_ks_rejects_evenly_spaced_arrivals():
    _, p = lg.ks_exponential(np.full(500, 0.01), 100.0)
    assert p < 1e-6


def test_open_loop_arrivals_do_not_wait_for_slow_answers_and_latency_counts_the_queue():
    system = QueueSystem(0.02, workers=1)  # 50 queries/s at most
    try:
        arrivals = lg.poisson_arrivals(150.0, 60, seed=0)  # three times what it can serve
        r = lg.run_open_loop(system.issue, arrivals)
    finally:
        system.close()
    assert r.queries == 60 and not r.overloaded
    # issued on schedule although answers lag far behind (open loop)
    assert np.max(np.abs(r.issued_s - r.scheduled_s)) < 0.015
    waited = r.latencies_ms("scheduled")
    assert waited[-1] > 20 * 30  # the last one waited behind ~40 earlier queries
    assert np.all(waited >= r.latencies_ms("issued") - 1e-9)
    assert r.completed_qps < 60  # the system's rate, not the offered one


def test_open_loop_stops_issuing_when_too_many_queries_are_outstanding():
    system = QueueSystem(0.05, workers=1)
    try:
        r = lg.run_open_loop(system.issue, np.linspace(0, 0.05, 50), max_outstanding=5)
    finally:
        system.close()
    assert r.overloaded and r.queries <= 6


def test_an_error_answer_stops_the_scenario_and_is_raised():
    calls = []

    def failing(on_done):
        calls.append(1)
        on_done(InvalidArgument("bad request") if len(calls) == 3 else None)

    with pytest.raises(InvalidArgument, match="bad request"):
        lg.run_open_loop(failing, np.linspace(0, 0.05, 20))
    assert len(calls) < 20


def test_single_stream_meets_minimum_count_and_duration(fast_system):
    r = lg.run_single_stream(fast_system.issue, lg.ScenarioSettings(30, 0.2, 5.0))
    assert r.queries >= 30 and r.duration_s >= 0.2 and r.reached_minimum
    # one at a time: each query was issued after the previous one completed
    assert np.all(r.issued_s[1:] >= r.completed_s[:-1])
    assert r.percentile_ms(90) >= 0.5 * 0.9


def test_single_stream_stops_at_the_cap_and_says_the_minimum_was_missed():
    system = QueueSystem(0.05, workers=1)
    try:
        r = lg.run_single_stream(system.issue, lg.ScenarioSettings(1000, 0.0, 0.3))
    finally:
        system.close()
    assert r.queries < 1000 and not r.reached_minimum


def test_server_scenario_hits_target_rate_and_checks_the_bound(fast_system):
    scenario = lg.ScenarioSettings(300, 1.0, 5.0)
    r = lg.run_server(fast_system.issue, 300.0, scenario, lg.ServerSettings(latency_bound_ms=50.0))
    assert r.queries == 300
    assert r.issued_qps == pytest.approx(r.extra["scheduled_qps"], rel=0.05)
    assert r.extra["meets_bound"] is True and r.extra["tail_ms"] <= 50.0
    assert r.extra["ks_p"] > 0.001
    strict = lg.run_server(fast_system.issue, 300.0, scenario, lg.ServerSettings(latency_bound_ms=1e-6))
    assert strict.extra["meets_bound"] is False


def _synthetic(capacity_qps: float, calls: list[float]):
    """run_at for a system that meets the bound exactly up to `capacity_qps` (no timing involved)."""

    def run_at(qps: float) -> lg.ScenarioResult:
        calls.append(qps)
        ok = qps <= capacity_qps
        empty = np.zeros(0)
        return lg.ScenarioResult("Server", empty, empty, empty, 1, qps, extra={"meets_bound": ok,
                                 "tail_ms": 10.0 if ok else 99.0})  # fmt: skip

    return run_at


@pytest.mark.parametrize("target", [10.0, 50.0, 1000.0])
def test_peak_search_brackets_then_bisects_to_the_tolerance(target):
    calls: list[float] = []
    server = lg.ServerSettings(target_qps=target, peak_tolerance_pct=5.0, max_search_runs=20)
    search = lg.find_peak_qps(_synthetic(137.0, calls), server)
    assert search.peak_qps is not None and search.peak_qps <= 137.0
    assert search.peak_qps >= 137.0 / 1.05
    assert search.peak is not None and search.peak.target_qps == search.peak_qps
    assert calls[0] == target and len(calls) == len(search.runs) <= 20
    assert all(ok == (q <= 137.0) for q, ok, _ in search.runs)


def test_peak_search_respects_its_run_budget_and_reports_none_when_nothing_passes():
    calls: list[float] = []
    search = lg.find_peak_qps(_synthetic(0.0, calls), lg.ServerSettings(target_qps=8.0, max_search_runs=4))
    assert search.peak_qps is None and search.peak is None
    assert calls == [8.0, 4.0, 2.0, 1.0]


def test_offline_issues_everything_at_once_and_sizes_the_burst_to_the_minimum_duration(fast_system):
    r = lg.run_offline(fast_system.issue, lg.ScenarioSettings(50, 0.3, 5.0))
    assert np.all(r.scheduled_s == r.scheduled_s[0])
    assert r.queries > 50 and r.reached_minimum  # the probe burst was too short: a larger one ran


def test_settings_are_checked_with_the_key_named():
    with pytest.raises(InvalidArgument, match="min_query_count"):
        lg.ScenarioSettings(0, 1.0, 2.0).check("Server")
    with pytest.raises(InvalidArgument, match="max_duration_s"):
        lg.ScenarioSettings(10, 3.0, 2.0).check("Server")
    with pytest.raises(InvalidArgument, match="percentile"):
        lg.ServerSettings(percentile=100.0).check()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"scenarios": ["singlestream", "multistream"]}, "multistream"),
        ({"server_target_qps": 0}, "target_qps"),
        ({"server_latency_bound_ms": "30"}, "server_latency_bound_ms"),
        ({"singlestream_min_queries": 0}, "singlestream_min_queries"),
        ({"server_find_peak": "yes"}, "server_find_peak"),
        ({"scenario_max_duration_s": 3600}, "scenario_max_duration_s"),
        ({"offline_min_duration_s": 20.0}, "max_duration_s"),
    ],
)
def test_serving_latency_refuses_bad_scenario_keys_when_the_config_is_resolved(config, key):
    with pytest.raises(InvalidArgument, match=key):
        get_protocol("serving_latency").resolve_config(config)


def test_serving_latency_defaults_record_cpu_scaled_minimums():
    resolved = get_protocol("serving_latency").resolve_config({})
    assert resolved["scenarios"] == ["singlestream", "server", "offline"]
    assert resolved["server_latency_bound_ms"] == 30.0 and resolved["server_target_qps"] == 50.0
    assert resolved["server_min_queries"] >= 100 and resolved["server_min_duration_s"] > 0
