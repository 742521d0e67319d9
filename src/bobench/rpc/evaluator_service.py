"""The Evaluator gRPC service: a thin adapter that validates a RunRequest, plans the run with the
library (`plan_single_run`), executes it in a worker thread (bounded by an executor pool), streams
progress and the final RunResult, and stores the record so `GetResult` can answer it.

Run it with `python -m bobench.rpc.evaluator_service --port 50051` (flags below; env BOBENCH_*).

Readiness: with `--embedder triton`, health for `bobench.v1.Evaluator` is SERVING only while the Triton
at `--triton-url` answers `is_server_live` (checked every `--readiness-interval-s`, 2 s timeout), so a
Kubernetes readiness probe on that service takes the pod out of rotation while its embedder is down;
the overall "" service stays SERVING (liveness), so a Triton outage does not restart evaluators.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from bobench.battle.plan import RunPlan
from bobench.battle.records import STATUS_CANCELLED, RunRecord
from bobench.battle.single import plan_single_run
from bobench.config import Settings, load_settings
from bobench.data import configure as configure_data
from bobench.errors import Cancelled, DeadlineExceeded, FailedPrecondition, InvalidArgument
from bobench.rpc import convert
from bobench.rpc.evaluator_pool import ExecutorPool, PooledExecutor
from bobench.rpc.result_log import ResultLog
from bobench.v1 import evaluator_pb2, evaluator_pb2_grpc

log = logging.getLogger(__name__)

RUNS = Counter(
    "bobench_evaluator_runs",
    "Evaluate calls by final run status (reused = answered from the store).",
    ["status"],
)
RUNS_IN_FLIGHT = Gauge("bobench_evaluator_runs_in_flight", "Runs executing now.")
RUNS_WAITING = Gauge("bobench_evaluator_runs_waiting", "Valid Evaluate calls waiting for a free executor.")

_DONE = object()


def validate_run_request(run: Any) -> dict[str, Any]:
    """Check a RunRequest's fields and return the keyword arguments of `plan_single_run`.

    Raises InvalidArgument naming the field ("run.seed", "run.dataset.ref_json", ...).
    """
    if not run.HasField("backbone") or not run.backbone.name.strip():
        raise InvalidArgument("run.backbone.name: is required")
    if not run.HasField("dataset"):
        raise InvalidArgument("run.dataset: is required")
    if not run.HasField("protocol") or not run.protocol.name.strip():
        raise InvalidArgument("run.protocol.name: is required")
    if run.seed < 0:
        raise InvalidArgument(f"run.seed: must be >= 0, got {run.seed}")
    convert.check_batch_size(run.batch_size, "run.batch_size")
    if run.backbone.spec_json:
        from bobench.battle.plan import register_custom_backbones

        entry = convert.parse_json_object(run.backbone.spec_json, "run.backbone.spec_json")
        if entry.get("name") != run.backbone.name:
            raise InvalidArgument("run.backbone.spec_json: its 'name' must equal run.backbone.name")
        from bobench.battle.spec import custom_backbone_entry

        register_custom_backbones((custom_backbone_entry(entry, "run.backbone.spec_json", None),))
    ref, name = convert.dataset_ref_from_proto(run.dataset, "run.dataset")
    return {
        "backbone": run.backbone.name,
        "dataset": ref,
        "protocol": run.protocol.name,
        "config": convert.protocol_config_from_proto(run.protocol, "run.protocol"),
        "seed": int(run.seed),
        "dataset_name": name,
        "battle_id": run.battle_id or None,
        "embedder_variant": convert.embedder_variant_from_proto(run.embedder_variant, "run.embedder_variant"),
    }


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Evaluate and GetResult over an ExecutorPool and a ResultLog."""

    def __init__(self, settings: Settings, results_dir: str | Path, max_concurrent_runs: int = 1) -> None:
        self.settings = settings
        self.pool = ExecutorPool(settings, max_concurrent_runs)
        self.results = ResultLog(results_dir)
        self._threads = ThreadPoolExecutor(max_workers=max_concurrent_runs, thread_name_prefix="evaluate")
        self._closing = threading.Event()  # set on shutdown: runs in flight stop at their next progress tick
        self._background: set[asyncio.Task] = set()
        self._inflight: dict[asyncio.Future, PooledExecutor] = {}  # runs whose record is not stored yet

    async def GetResult(self, request, context):
        if not request.run_key.strip():
            raise InvalidArgument("run_key: is required")
        return convert.record_to_result(self.results.get(request.run_key))

    async def Evaluate(self, request, context):
        if not request.HasField("run"):
            raise InvalidArgument("run: is required")
        kwargs = validate_run_request(request.run)
        plan = await asyncio.to_thread(plan_single_run, dataset_loader=self.pool.datasets.load, **kwargs)
        expected = request.run.expected_run_key
        if expected and expected != plan.run_key:
            raise FailedPrecondition(
                f"run.expected_run_key: caller planned {expected!r} but this evaluator plans {plan.run_key!r} "
                "(different bobench versions, backbone weights or dataset contents?)"
            )
        stored = None if request.run.rerun else self.results.finished(plan.run_key)
        yield evaluator_pb2.EvaluateEvent(
            started=evaluator_pb2.Started(run_key=plan.run_key, reused=stored is not None)
        )
        if stored is not None:
            RUNS.labels("reused").inc()
            yield evaluator_pb2.EvaluateEvent(result=convert.record_to_result(stored))
            return
        async for event in self._execute(plan, request.run.batch_size, context):
            yield event

    async def _execute(self, plan: RunPlan, batch_size: int, context):
        """Run `plan` on a pooled executor; yield Progress events, then the RunResult."""
        RUNS_WAITING.inc()
        try:
            executor = await self.pool.acquire()
        finally:
            RUNS_WAITING.dec()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        remaining_s = context.time_remaining()
        deadline = None if remaining_s is None else loop.time() + remaining_s

        def progress(done: int, total: int, message: str = "") -> None:  # runs in the worker thread
            if stop.is_set():
                raise Cancelled(f"run {plan.run_key} cancelled by the caller")
            if self._closing.is_set():
                raise Cancelled(f"run {plan.run_key} stopped: the evaluator is shutting down")
            if deadline is not None and loop.time() > deadline:
                raise DeadlineExceeded(f"run {plan.run_key} passed its deadline")
            event = evaluator_pb2.Progress(done=int(done), total=int(total), message=str(message))
            loop.call_soon_threadsafe(events.put_nowait, event)

        executor.batch_size_override = batch_size or None
        RUNS_IN_FLIGHT.inc()
        future = loop.run_in_executor(self._threads, executor.execute, plan, progress)
        self._inflight[future] = executor
        future.add_done_callback(lambda _f: events.put_nowait(_DONE))
        try:
            while (event := await events.get()) is not _DONE:
                yield evaluator_pb2.EvaluateEvent(progress=event)
            if future.exception() is not None:  # execute() records a run's own failure; this is a bug
                self._inflight.pop(future, None)
                RUNS_IN_FLIGHT.dec()
                self.pool.release(executor)
                raise future.exception()
            record = self._finish(future, executor, cancelled=stop.is_set())
            yield evaluator_pb2.EvaluateEvent(result=convert.record_to_result(record))
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away or the deadline passed: stop the worker at its next progress call,
            # and record the run as cancelled once it has returned.
            stop.set()
            task = asyncio.ensure_future(self._finish_later(future, executor))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise

    async def _finish_later(self, future: asyncio.Future, executor: PooledExecutor) -> None:
        try:
            await asyncio.shield(future)
        except Exception:  # execute() never raises for a run's own failure; this is a bug
            log.exception("worker of a cancelled run crashed")
            self._inflight.pop(future, None)
            RUNS_IN_FLIGHT.dec()
            self.pool.release(executor)
            return
        self._finish(future, executor, cancelled=True)

    def _finish(self, future: asyncio.Future, executor: PooledExecutor, *, cancelled: bool) -> RunRecord:
        """Store the record (as cancelled when the caller left before it ended) and free the executor.
        Once per run: whichever of the stream, the cancel path or shutdown gets there first."""
        record = future.result()
        if self._inflight.pop(future, None) is None:
            return record
        RUNS_IN_FLIGHT.dec()
        self.pool.release(executor)
        if cancelled:
            record.status = STATUS_CANCELLED
            record.metrics = {}
            if not (record.error or "").startswith(("Cancelled", "DeadlineExceeded")):
                record.error = "Cancelled: the caller cancelled or its deadline passed before the run ended"
        self.results.put(record)
        RUNS.labels(record.status).inc()
        log.info(
            "run %s (%s/%s/%s) %s in %.2f s",
            record.run_key,
            record.backbone,
            record.dataset,
            record.protocol,
            record.status,
            record.duration_s or 0.0,
        )
        return record

    async def aclose(self) -> None:
        """After the grace period: stop runs still in flight at their next progress tick and wait until
        they are recorded as cancelled (never finished), then release everything."""
        self._closing.set()
        for future in list(self._inflight):
            try:
                await asyncio.shield(future)
            except Exception:
                log.exception("a run in flight crashed during shutdown")
                continue
            if future in self._inflight:  # a run that still finished keeps its result; the rest cancelled
                self._finish(future, self._inflight[future], cancelled=not future.result().finished)
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        self.close()

    def close(self) -> None:
        self._closing.set()
        self._threads.shutdown(wait=True, cancel_futures=True)
        self.pool.close()


def triton_liveness(url: str, timeout_s: float = 2.0) -> Callable[[], Awaitable[bool]]:
    """A readiness check: True while the Triton at gRPC `url` answers `is_server_live` in `timeout_s`.

    Each check opens a fresh client, so a restarted Triton is seen at the next check instead of after
    a long gRPC reconnect backoff.
    """

    def check() -> bool:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url)
        try:
            return bool(client.is_server_live(client_timeout=timeout_s))
        except Exception as exc:  # any transport or server error means "not live"
            log.debug("Triton %s not live: %s", url, exc)
            return False
        finally:
            client.close()

    async def liveness() -> bool:
        return await asyncio.to_thread(check)

    return liveness


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bobench-evaluator", description="bobench Evaluator gRPC service")
    p.add_argument(
        "--host",
        default=os.environ.get("BOBENCH_EVALUATOR_HOST", "127.0.0.1"),
        help="address to bind (env BOBENCH_EVALUATOR_HOST; 0.0.0.0 in containers)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BOBENCH_EVALUATOR_PORT", "50051")),
        help="gRPC port, 0 = pick (env BOBENCH_EVALUATOR_PORT)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int("BOBENCH_METRICS_PORT"),
        help="Prometheus /metrics port, 0 = pick; off when unset (env BOBENCH_METRICS_PORT)",
    )
    p.add_argument(
        "--results-dir",
        default=os.environ.get("BOBENCH_RESULTS_DIR"),
        help="where results.jsonl lives (env BOBENCH_RESULTS_DIR; default CACHE_DIR/evaluator-results)",
    )
    p.add_argument(
        "--max-concurrent-runs",
        type=int,
        default=int(os.environ.get("BOBENCH_MAX_CONCURRENT_RUNS", "1")),
        help="runs executed at once (env BOBENCH_MAX_CONCURRENT_RUNS)",
    )
    p.add_argument("--max-message-mb", type=int, default=64, help="largest gRPC message accepted")
    p.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    p.add_argument("--config", help="settings file (YAML); env BOBENCH_CONFIG")
    p.add_argument("--cache-dir", help="feature/model cache (env BOBENCH_CACHE_DIR)")
    p.add_argument("--embedder", choices=("onnxruntime", "torch", "triton"), help="embedding runtime")
    p.add_argument("--triton-url", help="Triton gRPC address for --embedder triton")
    p.add_argument(
        "--readiness-interval-s",
        type=float,
        default=5.0,
        help="with --embedder triton: how often readiness re-checks that Triton is live",
    )
    p.add_argument(
        "--max-connection-age-s",
        type=float,
        default=60.0,
        help="close client connections after this age (runs in flight go on) so a dns:/// round-robin "
        "scheduler re-resolves and finds added evaluators; 0 = never",
    )
    p.add_argument("--batch-size", type=int, help="default embedding batch size")
    p.add_argument("--threads", type=int, help="intra-op threads (0 = library default)")
    return p


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build the servicer and serve until SIGTERM/SIGINT."""
    from bobench.rpc.server import ServiceBinding, serve_forever

    args = build_parser().parse_args(argv)
    settings = load_settings(
        args.config,
        cache_dir=args.cache_dir,
        embedder=args.embedder,
        triton_url=args.triton_url,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    configure_data(settings, service=True)  # s3:// datasets; client paths only under data_roots
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    results_dir = Path(args.results_dir or Path(settings.cache_dir) / "evaluator-results")
    servicer = EvaluatorServicer(settings, results_dir, args.max_concurrent_runs)
    readiness = triton_liveness(settings.triton_url) if settings.embedder == "triton" else None
    binding = ServiceBinding.of(
        evaluator_pb2_grpc.add_EvaluatorServicer_to_server,
        servicer,
        readiness=readiness,
        readiness_interval_s=args.readiness_interval_s,
    )
    asyncio.run(
        serve_forever(
            [binding],
            args.host,
            args.port,
            max_message_mb=args.max_message_mb,
            metrics_port=args.metrics_port,
            grace_s=args.grace_s,
            on_stop=servicer.aclose,
            max_connection_age_s=args.max_connection_age_s or None,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
