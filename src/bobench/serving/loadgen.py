"""MLPerf LoadGen-style scenarios against any system that answers queries: SingleStream, Server, Offline.

The load generator talks to the system under test through an `issue(on_done)` callable: it sends one
query without blocking and calls `on_done(error_or_None)` (from any thread) when the answer is back.
What each scenario measures (settings scaled for CPU; each scenario runs until both its
`min_query_count` and its `min_duration_s` are reached, capped at `max_duration_s`):

- **SingleStream**: one query at a time, the next issued when the previous completed; latency p90
  (p50/p99 too) from issue to completion.
- **Server**: open-loop Poisson arrivals at `target_qps`. The arrival times are drawn up front from
  a seeded exponential generator (`poisson_arrivals`) and never depend on completions: a slow
  answer does not delay the next arrival. Latency is measured from the *scheduled* arrival, not
  from the moment the query was sent, so a dispatcher that falls behind is charged to the system
  (as LoadGen does). The run meets the bound when its p`percentile` latency <= `latency_bound_ms`;
  more than `max_outstanding` unanswered queries stop it early as overloaded (it fails the bound).
  The inter-arrival times actually issued are checked against the exponential of the target rate
  with a Kolmogorov-Smirnov test (`ks_exponential`).
- **Peak search** (`find_peak_qps`, like LoadGen's FindPeakPerformance): from the target QPS, double
  while the bound holds (halve while it does not) to bracket the peak, then bisect the bracket until
  its width is within `peak_tolerance_pct` of the lower end; the answer is the highest QPS measured
  to meet the bound (None when even the lowest tried failed).
- **Offline**: every query issued at once; throughput = samples / time to the last answer. A first
  burst of `min_query_count` queries sizes the measured one (1.1 x measured rate x `min_duration_s`)
  when it finished faster than `min_duration_s` (again, up to 3 times, while a warmer system still
  finishes early): LoadGen's expected-QPS sizing without a guess.

Errors: InvalidArgument for bad settings; a query's error stops the scenario and is re-raised.
The `on_step()` callback (the run's progress/cancel check) is called at least every 0.1 s.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument

Issue = Callable[[Callable[[BaseException | None], None]], None]
StepCheck = Callable[[], None] | None
_POLL_S = 0.1
_LEAD_S = 0.005  # the first arrival is scheduled this long after the clock starts
_OFFLINE_RESIZES = 3


@dataclass(frozen=True)
class ScenarioSettings:
    """How long one scenario runs: at least `min_query_count` queries and `min_duration_s`, at most
    `max_duration_s` (then the result says `reached_minimum` False)."""

    min_query_count: int
    min_duration_s: float
    max_duration_s: float

    def check(self, where: str) -> None:
        if isinstance(self.min_query_count, bool) or not isinstance(self.min_query_count, int):
            raise InvalidArgument(
                f"{where}: min_query_count must be an integer, got {self.min_query_count!r}"
            )
        if self.min_query_count < 1:
            raise InvalidArgument(f"{where}: min_query_count must be >= 1, got {self.min_query_count}")
        if not 0 <= self.min_duration_s <= self.max_duration_s or self.max_duration_s <= 0:
            raise InvalidArgument(
                f"{where}: need 0 <= min_duration_s <= max_duration_s and max_duration_s > 0, got "
                f"{self.min_duration_s!r} and {self.max_duration_s!r}"
            )


@dataclass
class ScenarioResult:
    """One scenario run: per-query scheduled/issued/completed times (s, relative to its start)."""

    scenario: str
    scheduled_s: np.ndarray
    issued_s: np.ndarray
    completed_s: np.ndarray
    samples_per_query: int
    target_qps: float | None = None
    overloaded: bool = False
    reached_minimum: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def queries(self) -> int:
        return int(np.count_nonzero(np.isfinite(self.completed_s)))

    @property
    def duration_s(self) -> float:
        done = self.completed_s[np.isfinite(self.completed_s)]
        return float(done.max()) if done.size else 0.0

    def latencies_ms(self, since: str = "scheduled") -> np.ndarray:
        """Latency of every answered query from its scheduled arrival (or 'issued' time), ms."""
        start = self.scheduled_s if since == "scheduled" else self.issued_s
        ok = np.isfinite(self.completed_s)
        return (self.completed_s[ok] - start[ok]) * 1e3

    def percentile_ms(self, q: float) -> float | None:
        lat = self.latencies_ms()
        return float(np.percentile(lat, q)) if lat.size else None

    @property
    def completed_qps(self) -> float:
        return self.queries / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def issued_qps(self) -> float | None:
        """Issue rate over the run: (issued - 1) / (last issue - first issue)."""
        issued = np.sort(self.issued_s[np.isfinite(self.issued_s)])
        if issued.size < 2 or issued[-1] <= issued[0]:
            return None
        return (issued.size - 1) / float(issued[-1] - issued[0])


def poisson_arrivals(qps: float, count: int, seed: int) -> np.ndarray:
    """`count` arrival times (s) of a Poisson process at `qps`: cumulative exponential gaps drawn from
    a generator seeded with `seed` (the same seed gives the same schedule)."""
    if not qps > 0 or count < 1:
        raise InvalidArgument(f"poisson_arrivals needs qps > 0 and count >= 1, got {qps!r} and {count!r}")
    gaps = np.random.default_rng(seed).exponential(1.0 / qps, size=count)
    return np.cumsum(gaps)


def ks_exponential(gaps_s: np.ndarray, rate: float) -> tuple[float, float]:
    """(D, p-value) of a one-sample Kolmogorov-Smirnov test of `gaps_s` against Exp(rate).

    D = sup |F_n(x) - (1 - exp(-rate x))|; the p-value uses the Kolmogorov limit distribution with
    Stephens' small-sample factor (sqrt(n) + 0.12 + 0.11 / sqrt(n)): within ~0.02 of the exact
    p-value at n = 20, closer for larger n (checked against scipy in the unit tests).
    """
    x = np.sort(np.asarray(gaps_s, dtype=np.float64))
    n = x.size
    if n < 2 or not rate > 0:
        raise InvalidArgument(f"ks_exponential needs >= 2 gaps and rate > 0, got {n} and {rate!r}")
    cdf = -np.expm1(-rate * x)
    i = np.arange(1, n + 1)
    d = float(max(np.max(i / n - cdf), np.max(cdf - (i - 1) / n)))
    t = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if t < 0.2:
        return d, 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * t * t) for k in range(1, 101))
    return d, float(min(max(p, 0.0), 1.0))


class _Tracker:
    """Completion times of issued queries, the first error, and how many are still unanswered."""

    def __init__(self, count: int, clock_start: float) -> None:
        self.completed = np.full(count, np.nan)
        self.issued = np.full(count, np.nan)
        self.t0 = clock_start
        self.outstanding = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def issue(self, issue: Issue, i: int) -> None:
        with self._lock:
            self.outstanding += 1
        self.issued[i] = time.perf_counter() - self.t0
        try:
            issue(lambda err, i=i: self._done(i, err))
        except BaseException as exc:  # a synchronous failure counts like an answered error
            self._done(i, exc)

    def _done(self, i: int, err: BaseException | None) -> None:
        now = time.perf_counter() - self.t0
        with self._lock:
            if err is None:
                self.completed[i] = now
            elif self.error is None:
                self.error = err
            self.outstanding -= 1
            self._idle.notify_all()

    def wait_idle(self, deadline: float, on_step: StepCheck) -> None:
        """Until nothing is outstanding or `deadline` (perf_counter) passed."""
        with self._lock:
            while self.outstanding > 0 and time.perf_counter() < deadline:
                self._idle.wait(_POLL_S)
                if on_step is not None:
                    self._lock.release()
                    try:
                        on_step()
                    finally:
                        self._lock.acquire()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def _sleep_until(target: float, on_step: StepCheck, last_step: list[float]) -> None:
    while (left := target - time.perf_counter()) > 0:
        time.sleep(min(left, _POLL_S))
        now = time.perf_counter()
        if on_step is not None and now - last_step[0] >= _POLL_S:
            last_step[0] = now
            on_step()


def run_single_stream(
    issue: Issue, settings: ScenarioSettings, *, samples_per_query: int = 1, on_step: StepCheck = None
) -> ScenarioResult:
    """One query at a time until the minimum count and duration (see the module docstring)."""
    settings.check("SingleStream")
    cap = max(settings.min_query_count, 1) * 4 + 1024
    tracker = _Tracker(cap, time.perf_counter())
    answered = threading.Event()
    step_at = [time.perf_counter()]

    def one(on_done):
        def done(err):
            on_done(err)
            answered.set()

        issue(done)

    i = 0
    while True:
        elapsed = time.perf_counter() - tracker.t0
        # the duration that counts is the last answer's time (what reached_minimum checks), not "now"
        last_answer = float(tracker.completed[i - 1]) if i else 0.0
        if i >= settings.min_query_count and last_answer >= settings.min_duration_s:
            break
        if elapsed >= settings.max_duration_s:
            break
        if i == cap:  # grow the log (a system far faster than the minimum count needs)
            tracker.completed = np.concatenate([tracker.completed, np.full(cap, np.nan)])
            tracker.issued = np.concatenate([tracker.issued, np.full(cap, np.nan)])
            cap *= 2
        answered.clear()
        tracker.issue(one, i)
        while not answered.wait(_POLL_S) and tracker.error is None:
            if time.perf_counter() - tracker.t0 > settings.max_duration_s + 60:
                raise InvalidArgument("SingleStream: a query did not answer within max_duration_s + 60 s")
            if on_step is not None:
                on_step()
        tracker.raise_error()
        i += 1
        if on_step is not None and time.perf_counter() - step_at[0] >= _POLL_S:
            step_at[0] = time.perf_counter()
            on_step()
    issued = tracker.issued[:i]
    return ScenarioResult(
        "SingleStream",
        scheduled_s=issued.copy(),  # closed loop: a query is "scheduled" when it is sent
        issued_s=issued,
        completed_s=tracker.completed[:i],
        samples_per_query=samples_per_query,
        reached_minimum=i >= settings.min_query_count
        and float(np.nanmax(tracker.completed[:i], initial=0.0)) >= settings.min_duration_s,
    )


def run_open_loop(
    issue: Issue,
    arrivals_s: np.ndarray,
    *,
    scenario: str = "Server",
    samples_per_query: int = 1,
    max_outstanding: int = 1 << 30,
    answer_timeout_s: float = 60.0,
    on_step: StepCheck = None,
) -> ScenarioResult:
    """Issue query i at `arrivals_s[i]` (s from start), whatever earlier queries are doing, and wait
    for the answers. More than `max_outstanding` unanswered queries stop issuing (`overloaded`)."""
    arrivals = np.asarray(arrivals_s, dtype=np.float64) + _LEAD_S
    tracker = _Tracker(arrivals.size, time.perf_counter())
    step_at = [time.perf_counter()]
    overloaded = False
    for i, at in enumerate(arrivals):
        _sleep_until(tracker.t0 + at, on_step, step_at)
        if tracker.error is not None:
            break
        if tracker.outstanding >= max_outstanding:
            overloaded = True
            break
        tracker.issue(issue, i)
    tracker.wait_idle(time.perf_counter() + answer_timeout_s, on_step)
    tracker.raise_error()
    return ScenarioResult(
        scenario,
        scheduled_s=arrivals,
        issued_s=tracker.issued,
        completed_s=tracker.completed,
        samples_per_query=samples_per_query,
        overloaded=overloaded or tracker.outstanding > 0,
    )


@dataclass(frozen=True)
class ServerSettings:
    """The Server scenario: target rate, the latency bound it must meet, and the peak search."""

    target_qps: float = 50.0
    latency_bound_ms: float = 30.0
    percentile: float = 99.0
    seed: int = 0
    max_outstanding: int = 256
    find_peak: bool = True
    peak_tolerance_pct: float = 10.0
    max_search_runs: int = 8

    def check(self) -> None:
        if not self.target_qps > 0 or not self.latency_bound_ms > 0:
            raise InvalidArgument(
                f"Server: target_qps and latency_bound_ms must be > 0, got {self.target_qps!r} and "
                f"{self.latency_bound_ms!r}"
            )
        if not 0 < self.percentile < 100:
            raise InvalidArgument(f"Server: percentile must be in (0, 100), got {self.percentile!r}")
        if self.max_outstanding < 1 or self.max_search_runs < 1 or not self.peak_tolerance_pct > 0:
            raise InvalidArgument(
                "Server: max_outstanding and max_search_runs must be >= 1 and peak_tolerance_pct > 0, got "
                f"{self.max_outstanding!r}, {self.max_search_runs!r}, {self.peak_tolerance_pct!r}"
            )


def run_server(
    issue: Issue,
    qps: float,
    scenario: ScenarioSettings,
    server: ServerSettings,
    *,
    samples_per_query: int = 1,
    on_step: StepCheck = None,
) -> ScenarioResult:
    """Poisson arrivals at `qps` for max(min_query_count, qps x min_duration_s) queries (capped at
    qps x max_duration_s); `extra` holds the bound check and the inter-arrival KS test."""
    scenario.check("Server")
    count = max(scenario.min_query_count, math.ceil(qps * scenario.min_duration_s))
    count = max(2, min(count, math.ceil(qps * scenario.max_duration_s)))
    arrivals = poisson_arrivals(qps, count, server.seed)
    result = run_open_loop(
        issue,
        arrivals,
        samples_per_query=samples_per_query,
        max_outstanding=server.max_outstanding,
        on_step=on_step,
    )
    result.target_qps = qps
    result.reached_minimum = count >= scenario.min_query_count and not result.overloaded
    tail = result.percentile_ms(server.percentile)
    issued = np.sort(result.issued_s[np.isfinite(result.issued_s)])
    ks_d, ks_p = ks_exponential(np.diff(issued), qps) if issued.size > 2 else (None, None)
    result.extra = {
        "latency_bound_ms": server.latency_bound_ms,
        "percentile": server.percentile,
        "tail_ms": tail,
        "meets_bound": bool(not result.overloaded and tail is not None and tail <= server.latency_bound_ms),
        "scheduled_qps": (count - 1) / float(arrivals[-1] - arrivals[0]) if count > 1 else None,
        "ks_d": ks_d,
        "ks_p": ks_p,
    }
    return result


@dataclass
class PeakSearch:
    """The runs of a peak search and its answer (`peak_qps` None: even the lowest tried failed)."""

    peak_qps: float | None
    runs: list[tuple[float, bool, float | None]]  # (qps, met the bound, tail latency ms)
    peak: ScenarioResult | None


def find_peak_qps(run_at: Callable[[float], ScenarioResult], server: ServerSettings) -> PeakSearch:
    """Bracket, then bisect, the highest QPS whose run meets the bound (see the module docstring)."""
    server.check()
    runs: list[tuple[float, bool, float | None]] = []
    best: ScenarioResult | None = None
    low: float | None = None  # highest passing QPS
    high: float | None = None  # lowest failing QPS

    def trial(qps: float) -> bool:
        nonlocal best, low, high
        result = run_at(qps)
        ok = bool(result.extra["meets_bound"])
        runs.append((qps, ok, result.extra["tail_ms"]))
        if ok and (low is None or qps > low):
            low, best = qps, result
        if not ok and (high is None or qps < high):
            high = qps
        return ok

    qps = server.target_qps
    going_up = trial(qps)
    while len(runs) < server.max_search_runs and (low is None or high is None):
        qps = qps * 2 if going_up else qps / 2
        trial(qps)
    while (
        len(runs) < server.max_search_runs
        and low is not None
        and high is not None
        and (high - low) > low * server.peak_tolerance_pct / 100
    ):
        trial((low + high) / 2)
    return PeakSearch(low, runs, best)


def run_offline(
    issue: Issue,
    scenario: ScenarioSettings,
    *,
    samples_per_query: int = 1,
    on_step: StepCheck = None,
    answer_timeout_s: float = 120.0,
) -> ScenarioResult:
    """All queries issued at once; a probe burst sizes the measured burst (module docstring)."""
    scenario.check("Offline")
    count = scenario.min_query_count

    def burst(n: int) -> ScenarioResult:
        return run_open_loop(
            issue,
            np.zeros(n),
            scenario="Offline",
            samples_per_query=samples_per_query,
            answer_timeout_s=answer_timeout_s,
            on_step=on_step,
        )

    result = burst(count)
    for _ in range(_OFFLINE_RESIZES):  # a warm system runs faster than its probe: size again
        if result.duration_s >= scenario.min_duration_s or not result.completed_qps > 0:
            break
        wanted = math.ceil(1.1 * result.completed_qps * scenario.min_duration_s)
        cap = math.ceil(result.completed_qps * scenario.max_duration_s)
        result = burst(max(count, min(wanted, cap)))
    result.reached_minimum = result.queries >= count and result.duration_s >= scenario.min_duration_s
    return result


def settings_record(**settings: ScenarioSettings | ServerSettings) -> dict[str, Any]:
    """The settings of the scenarios that ran, JSON-ready, to record with the result."""
    return {name: asdict(s) for name, s in settings.items()}
