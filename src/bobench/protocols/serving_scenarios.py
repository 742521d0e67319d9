"""The serving-latency protocol's MLPerf LoadGen-style scenarios against a Triton model.

`scenario_settings(config)` turns the protocol's flat config keys into `bobench.serving.loadgen`
settings (InvalidArgument naming the key for a bad value; the plan-time check calls it too), and
`run_scenarios(...)` runs the asked scenarios through `client.async_infer` (one query = one request
of `scenario_batch_size` images) and returns their metrics, named `scenario_<name>_...`:

- SingleStream: `scenario_singlestream_latency_ms_p{50,90,99}`, `_qps`, `_queries`, `_duration_s`;
- Server at `server_target_qps`: `scenario_server_latency_ms_p{50,90,99}` (from the scheduled
  arrival), `_qps_{target,scheduled,issued,completed}`, `_meets_bound`, `_interarrival_ks_{d,p}`;
  with `server_find_peak`, `scenario_server_peak_qps` (None when no rate met the bound) and its p99;
- Offline: `scenario_offline_throughput_ips` (images/s), `_samples`, `_duration_s`.

The settings that ran (minimum query counts and durations, the bound, the seed) and the peak
search's runs are returned as `scenario_context`, recorded in the result's context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bobench.errors import InvalidArgument
from bobench.serving import loadgen as lg
from bobench.tensors import INPUT_NAME, OUTPUT_NAME
from bobench.triton_errors import to_bobench_error

SCENARIOS = ("singlestream", "server", "offline")
DEFAULTS: dict[str, Any] = {
    "scenarios": list(SCENARIOS),
    "scenario_batch_size": 1,  # images per query
    "scenario_max_duration_s": 10.0,  # cap of every scenario run
    "singlestream_min_queries": 100,
    "singlestream_min_duration_s": 1.0,
    "server_target_qps": 50.0,
    "server_latency_bound_ms": 30.0,
    "server_percentile": 99.0,
    "server_min_queries": 200,
    "server_min_duration_s": 2.0,
    "server_max_outstanding": 256,
    "server_find_peak": True,
    "server_peak_tolerance_pct": 10.0,
    "server_max_search_runs": 8,
    "offline_min_samples": 256,
    "offline_min_duration_s": 1.0,
}
PERCENTILES = (50, 90, 99)


def _number(config: dict[str, Any], key: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"serving_latency: {key!r} must be a number, got {value!r}")
    return float(value)


def _int(config: dict[str, Any], key: str, low: int = 1, high: int = 10_000_000) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"serving_latency: {key!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def scenario_settings(config: dict[str, Any]) -> dict[str, Any]:
    """{"scenarios", "batch", "singlestream", "server", "server_run", "offline"} from the config."""
    names = config["scenarios"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidArgument(f"serving_latency: 'scenarios' must be a list of names, got {names!r}")
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise InvalidArgument(f"serving_latency: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    cap = _number(config, "scenario_max_duration_s")
    if not 0 < cap <= 600:
        raise InvalidArgument(f"serving_latency: 'scenario_max_duration_s' must be in (0, 600], got {cap!r}")

    def run(prefix: str, count_key: str) -> lg.ScenarioSettings:
        s = lg.ScenarioSettings(_int(config, count_key), _number(config, f"{prefix}_min_duration_s"), cap)
        s.check(f"serving_latency {prefix}")
        return s

    if not isinstance(config["server_find_peak"], bool):
        raise InvalidArgument(
            f"serving_latency: 'server_find_peak' must be true or false, got {config['server_find_peak']!r}"
        )
    server = lg.ServerSettings(
        target_qps=_number(config, "server_target_qps"),
        latency_bound_ms=_number(config, "server_latency_bound_ms"),
        percentile=_number(config, "server_percentile"),
        max_outstanding=_int(config, "server_max_outstanding", 1, 100_000),
        find_peak=config["server_find_peak"],
        peak_tolerance_pct=_number(config, "server_peak_tolerance_pct"),
        max_search_runs=_int(config, "server_max_search_runs", 1, 32),
    )
    server.check()
    return {
        "scenarios": list(dict.fromkeys(names)),
        "batch": _int(config, "scenario_batch_size", 1, 4096),
        "singlestream": run("singlestream", "singlestream_min_queries"),
        "server_run": run("server", "server_min_queries"),
        "server": server,
        "offline": run("offline", "offline_min_samples"),
    }


def triton_issuer(client, model: str, images: np.ndarray, timeout_s: float) -> lg.Issue:
    """`issue(on_done)` sending `images` as one async Triton request; errors become bobench errors."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), np_to_triton_dtype(images.dtype))
    inp.set_data_from_numpy(images)
    out = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
    where = f"serving_latency: Triton model {model!r}"

    def issue(on_done: Callable[[BaseException | None], None]) -> None:
        def callback(result, error) -> None:  # tritonclient passes both by keyword
            on_done(None if error is None else to_bobench_error(error, where))

        client.async_infer(model, [inp], callback, outputs=out, client_timeout=timeout_s)

    return issue


def run_scenarios(
    issue: lg.Issue, settings: dict[str, Any], seed: int, on_step: lg.StepCheck = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, scenario_context) of the scenarios in `settings` (from `scenario_settings`)."""
    batch = settings["batch"]
    metrics: dict[str, Any] = {}
    context: dict[str, Any] = {"images_per_query": batch, "seed": seed}
    if "singlestream" in settings["scenarios"]:
        r = lg.run_single_stream(issue, settings["singlestream"], samples_per_query=batch, on_step=on_step)
        metrics.update(_latencies("singlestream", r))
        metrics["scenario_singlestream_qps"] = r.completed_qps
        context["singlestream"] = {
            **_settings_of(settings["singlestream"]),
            "reached_minimum": r.reached_minimum,
        }
    if "server" in settings["scenarios"]:
        server: lg.ServerSettings = settings["server"]
        server = lg.ServerSettings(**{**_settings_of(server), "seed": seed})

        def run_at(qps: float) -> lg.ScenarioResult:
            return lg.run_server(issue, qps, settings["server_run"], server, samples_per_query=batch,
                                 on_step=on_step)  # fmt: skip

        at_target = run_at(server.target_qps)
        metrics.update(_server_metrics(at_target))
        context["server"] = {
            **_settings_of(settings["server_run"]),
            **_settings_of(server),
            "reached_minimum": at_target.reached_minimum,
        }
        if server.find_peak:
            search = lg.find_peak_qps(lambda q: at_target if q == server.target_qps else run_at(q), server)
            metrics["scenario_server_peak_qps"] = search.peak_qps
            metrics["scenario_server_peak_latency_ms_p99"] = (
                search.peak.percentile_ms(99) if search.peak is not None else None
            )
            metrics["scenario_server_peak_runs"] = len(search.runs)
            context["server_search"] = [
                {"qps": q, "meets_bound": ok, "tail_ms": tail} for q, ok, tail in search.runs
            ]
    if "offline" in settings["scenarios"]:
        r = lg.run_offline(issue, settings["offline"], samples_per_query=batch, on_step=on_step)
        span_s = r.duration_s - float(np.nanmin(r.issued_s))
        metrics["scenario_offline_throughput_ips"] = r.queries * batch / span_s if span_s > 0 else None
        metrics["scenario_offline_samples"] = r.queries * batch
        metrics["scenario_offline_duration_s"] = span_s
        context["offline"] = {**_settings_of(settings["offline"]), "reached_minimum": r.reached_minimum}
    return metrics, context


def _latencies(name: str, r: lg.ScenarioResult) -> dict[str, Any]:
    out: dict[str, Any] = {f"scenario_{name}_latency_ms_p{q}": r.percentile_ms(q) for q in PERCENTILES}
    out[f"scenario_{name}_queries"] = r.queries
    out[f"scenario_{name}_duration_s"] = r.duration_s
    return out


def _server_metrics(r: lg.ScenarioResult) -> dict[str, Any]:
    out = _latencies("server", r)
    out.update(
        scenario_server_qps_target=r.target_qps,
        scenario_server_qps_scheduled=r.extra["scheduled_qps"],
        scenario_server_qps_issued=r.issued_qps,
        scenario_server_qps_completed=r.completed_qps,
        scenario_server_meets_bound=r.extra["meets_bound"],
        scenario_server_interarrival_ks_d=r.extra["ks_d"],
        scenario_server_interarrival_ks_p=r.extra["ks_p"],
    )
    return out


def _settings_of(s: lg.ScenarioSettings | lg.ServerSettings) -> dict[str, Any]:
    return lg.settings_record(s=s)["s"]


def higher_is_better() -> dict[str, bool]:
    """Directions of the scenario metrics (latencies lower, rates higher)."""
    out = {f"scenario_{n}_latency_ms_p{q}": False for n in ("singlestream", "server") for q in PERCENTILES}
    out.update(
        scenario_singlestream_qps=True,
        scenario_server_qps_completed=True,
        scenario_server_peak_qps=True,
        scenario_server_peak_latency_ms_p99=False,
        scenario_offline_throughput_ips=True,
    )
    return out
