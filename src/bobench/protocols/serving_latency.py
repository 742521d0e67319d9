"""Serving latency through Triton, measured the way perf_analyzer does.

For each (batch size, concurrency): `concurrency` closed-loop clients send batches back to back;
time is cut into measurement windows (`window_s`, extended until `min_requests` finished) until the
last `stable_windows` windows agree by perf_analyzer's rule — for throughput and for p50 latency,
max / min over those windows <= 1 + `stability_pct` / 100 (10 % by default; version 1 accepted
values within the percentage of their mean, i.e. max/min up to 1.22) — or `max_windows` is
reached (then `stable_*` is False and the last windows are still reported). Over those windows: throughput (images/s), client latency p50/p90/p95/p99 (ms), and the
server-side breakdown per request (queue, compute input/infer/output, ms) from the deltas of
Triton's statistics API, plus the average executed batch (dynamic batching at work).

The run's progress/cancel check (`RunContext.progress`) is called at every poll of a window (at
least every `window_s / 10`), so a cancelled run, a passed deadline or the evaluator's time limit
stops the load at once instead of after the whole sweep.

Version 3 adds, after the sweep, MLPerf LoadGen-style scenarios (`scenarios`: SingleStream, Server
with Poisson arrivals and a peak-QPS search under a p99 bound, Offline; see
`bobench.protocols.serving_scenarios` and `bobench.serving.loadgen`), each with a minimum query count
and duration recorded in the result's context (`context.scenarios`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bobench.embed.base import unwrap
from bobench.errors import FailedPrecondition, InvalidArgument
from bobench.protocols import serving_scenarios as scn
from bobench.protocols.base import Metrics, RunContext
from bobench.protocols.options import SERVING_BREAKDOWN, SERVING_PERCENTILES, serving_latency_settings
from bobench.tensors import INPUT_NAME, OUTPUT_NAME
from bobench.triton_errors import to_bobench_error

log = logging.getLogger(__name__)

PERCENTILES = SERVING_PERCENTILES
BREAKDOWN = SERVING_BREAKDOWN


@dataclass
class Window:
    """One measurement window: when it ran, what finished in it, and Triton's stats at its end."""

    start_s: float
    end_s: float
    latencies_s: list[float]
    images: int
    stats_end: dict[str, float]

    @property
    def throughput_ips(self) -> float:
        return self.images / max(self.end_s - self.start_s, 1e-9)

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_s, 50) * 1e3) if self.latencies_s else float("nan")


@dataclass
class SettingResult:
    """The measured windows of one (batch size, concurrency) setting and whether they converged."""

    batch_size: int
    concurrency: int
    windows: list[Window] = field(default_factory=list)
    stats_start: dict[str, float] = field(default_factory=dict)
    stable: bool = False


def server_stats(client, model: str, timeout_s: float = 10.0) -> dict[str, float]:
    """Cumulative Triton statistics of `model`: request/execution counts and per-phase ns totals."""
    stats = client.get_inference_statistics(model, client_timeout=timeout_s).model_stats
    if not stats:
        return {}
    s = stats[0]
    inf = s.inference_stats
    out = {
        "inference_count": float(s.inference_count),
        "execution_count": float(s.execution_count),
        "success_count": float(inf.success.count),
        "success_ns": float(inf.success.ns),
    }
    for phase in BREAKDOWN:
        d = getattr(inf, phase)
        out[f"{phase}_count"], out[f"{phase}_ns"] = float(d.count), float(d.ns)
    return out


def measure_setting(
    client,
    model: str,
    images: np.ndarray,
    concurrency: int,
    *,
    window_s: float = 1.0,
    min_requests: int = 10,
    max_windows: int = 10,
    stable_windows: int = 3,
    stability_pct: float = 10.0,
    timeout_s: float = 30.0,
    on_step: Callable[[], None] | None = None,
) -> SettingResult:
    """Closed-loop load with `concurrency` clients sending `images` (one request each time).

    `on_step()` (the run's progress/cancel check) is called at every window poll; what it raises
    stops the load and propagates. Raises the bobench error of the first failed request (NotFound,
    InvalidArgument, Unavailable, ...).
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    result = SettingResult(batch_size=int(images.shape[0]), concurrency=concurrency)
    finished: list[tuple[float, float]] = []  # (end time, latency), appended by the workers
    errors: list[Exception] = []
    stop = threading.Event()

    def worker() -> None:
        inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), np_to_triton_dtype(images.dtype))
        inp.set_data_from_numpy(images)
        out = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                client.infer(model, [inp], outputs=out, client_timeout=timeout_s)
            except Exception as exc:
                errors.append(exc)
                stop.set()
                return
            t1 = time.perf_counter()
            finished.append((t1, t1 - t0))

    threads = [
        threading.Thread(target=worker, daemon=True, name=f"serving-load-{i}") for i in range(concurrency)
    ]
    result.stats_start = server_stats(client, model)
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        while len(result.windows) < max_windows and not errors:
            window = _next_window(
                finished, start, window_s, min_requests, errors, int(images.shape[0]), on_step
            )
            window.stats_end = server_stats(client, model)
            result.windows.append(window)
            start = window.end_s
            if len(result.windows) >= stable_windows and _converged(
                result.windows[-stable_windows:], stability_pct
            ):
                result.stable = True
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=timeout_s)
    if errors:
        raise to_bobench_error(errors[0], f"serving_latency: Triton model {model!r}") from None
    return result


def summarize(result: SettingResult, stable_windows: int = 3) -> dict[str, float | None]:
    """Throughput, client latency percentiles and the server breakdown over the last windows."""
    windows = result.windows[-stable_windows:]
    tag = f"b{result.batch_size}_c{result.concurrency}"
    latencies = np.concatenate([np.asarray(w.latencies_s) for w in windows]) * 1e3
    span_s = windows[-1].end_s - windows[0].start_s
    out: dict[str, float | None] = {f"throughput_ips_{tag}": sum(w.images for w in windows) / span_s}
    for q in PERCENTILES:
        out[f"latency_ms_p{q}_{tag}"] = float(np.percentile(latencies, q)) if latencies.size else None
    before = (
        result.windows[-stable_windows - 1].stats_end
        if len(result.windows) > stable_windows
        else result.stats_start
    )
    after = windows[-1].stats_end
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    for phase in BREAKDOWN:
        count = delta.get(f"{phase}_count", 0.0)
        out[f"server_{phase}_ms_{tag}"] = delta[f"{phase}_ns"] / count / 1e6 if count else None
    success = delta.get("success_count", 0.0)
    out[f"server_request_ms_{tag}"] = delta["success_ns"] / success / 1e6 if success else None
    executions = delta.get("execution_count", 0.0)
    out[f"server_batch_avg_{tag}"] = delta["inference_count"] / executions if executions else None
    return out


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> Metrics:
    """Run the (batch size × concurrency) sweep against the Triton model named by config or embedder."""
    scenarios = serving_latency_settings(config)
    scenario_context: dict[str, Any] = {}
    client, url, model, owned = _resolve_target(ctx, config)
    try:
        model_config = client.get_model_config(model, client_timeout=config["timeout_s"]).config
    except Exception as exc:
        raise to_bobench_error(exc, f"serving_latency: Triton model {model!r} at {url}") from None
    from tritonclient.grpc import model_config_pb2 as mc

    dims = [int(d) for d in model_config.input[0].dims]
    dtype = np.uint8 if model_config.input[0].data_type == mc.TYPE_UINT8 else np.float32
    rng = np.random.default_rng(seed)
    metrics: Metrics = {}
    all_stable = True
    try:
        for batch in config["batch_sizes"]:
            if model_config.max_batch_size and batch > model_config.max_batch_size:
                raise InvalidArgument(
                    f"serving_latency: batch size {batch} exceeds model {model!r} "
                    f"max_batch_size {model_config.max_batch_size}"
                )
            images = rng.integers(0, 256, size=(batch, *dims)).astype(dtype)
            for concurrency in config["concurrencies"]:
                result = measure_setting(
                    client,
                    model,
                    images,
                    int(concurrency),
                    window_s=config["window_s"],
                    min_requests=config["min_requests"],
                    max_windows=config["max_windows"],
                    stable_windows=config["stable_windows"],
                    stability_pct=config["stability_pct"],
                    timeout_s=config["timeout_s"],
                    on_step=lambda tag=f"b{batch}_c{concurrency}": ctx.progress(0, 1, f"serving {tag}"),
                )
                tag = f"b{batch}_c{concurrency}"
                metrics.update(summarize(result, config["stable_windows"]))
                metrics[f"stable_{tag}"] = result.stable
                metrics[f"windows_{tag}"] = len(result.windows)
                all_stable &= result.stable
                if not result.stable:
                    log.warning(
                        "serving_latency %s on %s: not stable after %d windows",
                        tag,
                        model,
                        len(result.windows),
                    )
        if scenarios["scenarios"]:
            if model_config.max_batch_size and scenarios["batch"] > model_config.max_batch_size:
                raise InvalidArgument(
                    f"serving_latency: scenario_batch_size {scenarios['batch']} exceeds model {model!r} "
                    f"max_batch_size {model_config.max_batch_size}"
                )
            images = rng.integers(0, 256, size=(scenarios["batch"], *dims)).astype(dtype)
            issue = scn.triton_issuer(client, model, images, config["timeout_s"])
            found, scenario_context = scn.run_scenarios(
                issue, scenarios, seed, on_step=lambda: ctx.progress(0, 1, "serving scenarios")
            )
            metrics.update(found)
    finally:
        if owned:
            client.close()
    metrics["stable"] = all_stable
    metrics["context"] = {
        "runtime": "triton",
        "transport": "grpc",
        "url": url,
        "model": model,
        "server_backend": model_config.backend or model_config.platform,
        "input_dtype": np.dtype(dtype).name,
        "window_s": config["window_s"],
        "stability_pct": config["stability_pct"],
        "stable_windows": config["stable_windows"],
        "scenarios": scenario_context,
    }
    return metrics


def _next_window(finished, start_s, window_s, min_requests, errors, batch, on_step=None) -> Window:
    """Sleep through one window (extended, up to 10×, until `min_requests` finished) and slice it,
    calling `on_step()` every `window_s / 10`."""
    end_s = start_s + window_s
    hard_end_s = start_s + 10 * window_s
    while True:
        while (left_s := end_s - time.perf_counter()) > 0:
            time.sleep(min(left_s, window_s / 10))
            if on_step is not None:
                on_step()
        now = time.perf_counter()
        done = [lat for t, lat in list(finished) if start_s <= t < now]
        if len(done) >= min_requests or now >= hard_end_s or errors:
            return Window(
                start_s=start_s, end_s=now, latencies_s=done, images=len(done) * batch, stats_end={}
            )
        end_s = min(now + window_s / 10, hard_end_s)


def _converged(windows: list[Window], pct: float) -> bool:
    """perf_analyzer's stability rule: max/min of throughput and of p50 latency <= 1 + pct/100."""
    for values in ([w.throughput_ips for w in windows], [w.p50_ms for w in windows]):
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 or high / low > 1 + pct / 100:
            return False
    return True


def _resolve_target(ctx: RunContext, config: dict[str, Any]):
    """(client, url, model, owned): config url/model first, else the context's TritonEmbedder."""
    if config["url"]:
        from bobench.serving.triton_access import service_client

        model = config["model"] or _default_model(ctx)
        key = (
            getattr(getattr(ctx, "settings", None), "triton_service_key", "") or ""
        )  # a keyed Triton needs it
        return service_client(config["url"], key), config["url"], model, True
    from bobench.embed.triton_embedder import TritonEmbedder

    embedder = unwrap(ctx.embedder())  # the evaluator wraps embedders to time them
    if isinstance(embedder, TritonEmbedder):
        return embedder.client, embedder.url, config["model"] or embedder.model_name, False
    raise FailedPrecondition(
        "serving_latency needs a running Triton: set the protocol config 'url' (and 'model'), "
        f"or run with the triton embedder (this run uses {getattr(embedder, 'runtime', type(embedder).__name__)!r})"
    )


def _default_model(ctx: RunContext) -> str:
    from bobench.export.triton_repo import model_name_for

    return model_name_for(ctx.spec)
