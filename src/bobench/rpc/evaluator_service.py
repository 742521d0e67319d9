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
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from bobench.battle.executors.base import utc_now
from bobench.battle.executors.pool import ExecutorPool
from bobench.battle.plan import RunPlan
from bobench.battle.single_run import plan_single_run
from bobench.config import (
    EvaluatorServiceSettings,
    Settings,
    check_device,
    load_settings,
    resolve_settings,
)
from bobench.data import configure as configure_data
from bobench.errors import INTERNAL_ERROR, Cancelled, DeadlineExceeded, FailedPrecondition, InvalidArgument
from bobench.exit_codes import report_exit, run_main
from bobench.logs import setup_logging
from bobench.results import RunRecord, RunStatus
from bobench.results.convert import record_to_result
from bobench.rpc import auth, convert
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


def validate_run_request(run: Any, limits: Settings | None = None) -> dict[str, Any]:
    """Check a RunRequest's fields (bounds from `limits`, this server's settings; the defaults without)
    and return the keyword arguments of `plan_single_run`.

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
    convert.check_batch_size(run.batch_size, "run.batch_size", limits)
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


class _Flight:
    """One execution of a run key and the Evaluate calls waiting for it (single-flight).

    Created, joined and left on the event loop; the worker thread only reads `stop` and `deadline`.
    The run stops at its next progress call once every caller has left (`stop`).
    """

    def __init__(self, plan: RunPlan, loop: asyncio.AbstractEventLoop) -> None:
        self.plan = plan
        self.stop = threading.Event()
        self.listeners: dict[asyncio.Queue, float | None] = {}  # a caller's queue -> its deadline
        self.deadline: float | None = None  # the latest caller deadline (None: some caller has none)
        self.done: asyncio.Future = loop.create_future()  # the stored RunRecord
        self.task: asyncio.Task | None = None

    def join(self, queue: asyncio.Queue, deadline: float | None) -> None:
        self.listeners[queue] = deadline
        self._update_deadline()

    def leave(self, queue: asyncio.Queue) -> None:
        if self.listeners.pop(queue, _DONE) is not _DONE and not self.listeners and not self.done.done():
            self.stop.set()  # nobody waits for this run any more
        self._update_deadline()

    def _update_deadline(self) -> None:
        values = list(self.listeners.values())
        self.deadline = None if not values or None in values else max(values)

    def broadcast(self, item: Any) -> None:
        for queue in self.listeners:
            queue.put_nowait(item)


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Evaluate and GetResult over an ExecutorPool and a ResultLog.

    Single-flight: concurrent Evaluate calls for one run key share one execution and all receive
    its record. Runs execute in daemon threads, so a run stuck in native code cannot keep the
    process from exiting; `aclose` waits at most `stop_timeout_s` for runs in flight.
    """

    def __init__(
        self,
        settings: Settings,
        results_dir: str | Path,
        max_concurrent_runs: int = 1,
        *,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.pool = ExecutorPool(settings, max_concurrent_runs)
        self.results = ResultLog(results_dir)
        self.stop_timeout_s = stop_timeout_s
        self._closing = threading.Event()  # set on shutdown: runs in flight stop at their next progress tick
        self._flights: dict[str, _Flight] = {}  # run key -> its execution in progress
        self.executions_started = 0  # flights started (tests: single-flight)

    async def GetResult(self, request, context):
        if not request.run_key.strip():
            raise InvalidArgument("run_key: is required")
        return record_to_result(self.results.get(request.run_key))

    async def Evaluate(self, request, context):
        if not request.HasField("run"):
            raise InvalidArgument("run: is required")
        if request.run.rerun:  # re-running over a stored result is for admins and the scheduler
            auth.require_any_role((auth.ADMIN, auth.SERVICE), "run.rerun=true")
        kwargs = validate_run_request(request.run, self.settings)
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
            yield evaluator_pb2.EvaluateEvent(result=record_to_result(stored))
            return
        async for event in self._follow(plan, request.run.batch_size, context):
            yield event

    async def _follow(self, plan: RunPlan, batch_size: int, context):
        """Join (or start) the execution of `plan`; yield Progress events, then the RunResult."""
        loop = asyncio.get_running_loop()
        flight = self._flights.get(plan.run_key)
        if flight is None:
            flight = self._flights[plan.run_key] = _Flight(plan, loop)
            flight.task = asyncio.ensure_future(self._run(flight, batch_size))
        queue: asyncio.Queue = asyncio.Queue()
        remaining_s = context.time_remaining()
        flight.join(queue, None if remaining_s is None else loop.time() + remaining_s)
        try:
            while (event := await queue.get()) is not _DONE:
                yield evaluator_pb2.EvaluateEvent(progress=event)
            record = flight.done.result()
            yield evaluator_pb2.EvaluateEvent(result=record_to_result(record))
        finally:
            # The caller went away or its deadline passed: when it was the last one, the run stops at
            # its next progress call and is recorded cancelled once it has returned.
            flight.leave(queue)

    async def _run(self, flight: _Flight, batch_size: int) -> None:
        """Execute the flight's run on a pooled executor and settle it (store, answer every caller)."""
        plan = flight.plan
        RUNS_WAITING.inc()
        try:
            executor = await self.pool.acquire()
        finally:
            RUNS_WAITING.dec()
        if flight.stop.is_set() or self._closing.is_set():  # every caller left, or shutting down
            self.pool.release(executor)
            self._settle(flight, _stopped_record(plan, "Cancelled", "Cancelled: stopped before it started"))
            return
        executor.batch_size_override = batch_size or None
        RUNS_IN_FLIGHT.inc()
        self.executions_started += 1
        try:
            record = await _in_daemon_thread(executor.execute, plan, self._progress_for(flight))
        except Exception as exc:  # execute() records a run's own failure; this is a bug
            log.exception("worker of run %s crashed", plan.run_key)
            record = _stopped_record(
                plan, INTERNAL_ERROR, f"internal error: {type(exc).__name__}", status=RunStatus.FAILED
            )
        finally:
            RUNS_IN_FLIGHT.dec()
            self.pool.release(executor)
        self._settle(flight, record)

    def _progress_for(self, flight: _Flight) -> Callable[[int, int, str], None]:
        """The run's progress callback (worker thread): raises to stop the run, forwards changes to
        every caller (a repeated message at most every `_PROGRESS_EVERY_S`)."""
        loop = asyncio.get_running_loop()
        last: list[Any] = [None, 0.0]

        def progress(done: int, total: int, message: str = "") -> None:
            key = flight.plan.run_key
            if flight.stop.is_set():
                raise Cancelled(f"run {key} cancelled by the caller")
            if self._closing.is_set():
                raise Cancelled(f"run {key} stopped: the evaluator is shutting down")
            deadline = flight.deadline
            if deadline is not None and loop.time() > deadline:
                flight.stop.set()  # every caller's deadline passed: recorded cancelled
                raise DeadlineExceeded(f"run {key} passed its deadline")
            now, tick = time.monotonic(), (int(done), int(total), str(message))
            if tick == last[0] and now - last[1] < _PROGRESS_EVERY_S:
                return
            last[0], last[1] = tick, now
            event = evaluator_pb2.Progress(done=tick[0], total=tick[1], message=tick[2])
            with contextlib.suppress(RuntimeError):  # the loop closed: the process is exiting
                loop.call_soon_threadsafe(flight.broadcast, event)

        return progress

    def _settle(self, flight: _Flight, record: RunRecord) -> None:
        """Store the flight's record (cancelled when every caller left before it finished) and answer
        its callers. Once per flight: whichever of the run or a bounded shutdown gets there first."""
        if flight.done.done():
            return
        if self._flights.get(flight.plan.run_key) is flight:
            del self._flights[flight.plan.run_key]
        if (flight.stop.is_set() or self._closing.is_set()) and not record.finished:
            record.status = RunStatus.CANCELLED
            record.metrics = {}
            if record.error_type not in ("Cancelled", "DeadlineExceeded"):
                error = "Cancelled: the caller cancelled or its deadline passed before the run ended"
                record.fail("Cancelled", error, RunStatus.CANCELLED)
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
        flight.done.set_result(record)
        flight.broadcast(_DONE)

    async def aclose(self) -> None:
        """After the grace period: stop runs still in flight at their next progress call and wait up
        to `stop_timeout_s` for them to be recorded (a run that still finished keeps its result, the
        rest are cancelled); a run that does not stop in time is recorded cancelled and left to its
        daemon thread. Then release everything."""
        self._closing.set()
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.stop_timeout_s)
            for flight in list(self._flights.values()):
                log.warning(
                    "run %s did not stop within %.1f s of shutdown", flight.plan.run_key, self.stop_timeout_s
                )
                self._settle(
                    flight,
                    _stopped_record(
                        flight.plan,
                        "Cancelled",
                        f"Cancelled: the evaluator shut down; the run did not stop within {self.stop_timeout_s:g} s",
                    ),
                )
            for task in late:
                task.cancel()
        self.close()

    def close(self) -> None:
        self._closing.set()
        self.pool.close()


_PROGRESS_EVERY_S = 0.5


def _stopped_record(
    plan: RunPlan, kind: str, error: str, status: RunStatus = RunStatus.CANCELLED
) -> RunRecord:
    """The record of a run that ended without running to its end (`kind`: its error_type)."""
    record = plan.new_record()
    record.fail(kind, error, status)
    record.started_at = record.finished_at = utc_now()
    return record


def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future:
    """`fn(*args)` in a new daemon thread; a future of its result on the running loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, future.set_exception, exc)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, future.set_result, result)

    threading.Thread(target=target, name="evaluate", daemon=True).start()
    return future


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
    """The service's flags. Defaults are None: a flag not given leaves the setting to the environment,
    the settings file and the default (`EvaluatorServiceSettings`, `Settings`); build it after
    `load_plugins`, so --embedder offers plugins' runtimes."""
    from bobench.embed import runtime_names

    p = argparse.ArgumentParser(prog="bobench-evaluator", description="bobench Evaluator gRPC service")
    p.add_argument(
        "--host",
        help="address to bind (default 127.0.0.1; env BOBENCH_EVALUATOR_HOST; 0.0.0.0 in containers)",
    )
    p.add_argument("--port", type=int, help="gRPC port, 0 = pick (default 50051; env BOBENCH_EVALUATOR_PORT)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port, 0 = pick; off when unset (env BOBENCH_METRICS_PORT)",
    )
    p.add_argument(
        "--results-dir",
        help="where results.jsonl lives (env BOBENCH_RESULTS_DIR; default CACHE_DIR/evaluator-results)",
    )
    p.add_argument(
        "--max-concurrent-runs",
        type=int,
        help="runs executed at once (default 1; env BOBENCH_MAX_CONCURRENT_RUNS)",
    )
    p.add_argument("--max-message-mb", type=int, default=64, help="largest gRPC message accepted")
    p.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    p.add_argument(
        "--stop-timeout-s",
        type=float,
        default=5.0,
        help="after the drain, how long runs in flight get to stop before they are recorded cancelled "
        "and the process exits",
    )
    p.add_argument(
        "--max-run-s",
        type=int,
        default=None,
        help="hard time limit of one protocol run (setting max_run_s, env BOBENCH_MAX_RUN_S; "
        "default 3600; 0 = none): a run past it fails with DeadlineExceeded at its next step",
    )
    p.add_argument("--config", help="settings file (YAML); env BOBENCH_CONFIG")
    p.add_argument("--cache-dir", help="feature/model cache (env BOBENCH_CACHE_DIR)")
    p.add_argument("--embedder", choices=runtime_names(), help="embedding runtime (env BOBENCH_EMBEDDER)")
    p.add_argument("--triton-url", help="Triton gRPC address for --embedder triton")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:1 (gpu = cuda); env BOBENCH_DEVICE")
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


def resolve(args: argparse.Namespace) -> tuple[Settings, EvaluatorServiceSettings]:
    """The process's settings from parsed flags, by the one precedence rule (flags > BOBENCH_* >
    settings file > defaults). Raises InvalidArgument naming a value that does not parse, and for a
    CUDA device on a machine without CUDA."""
    from bobench.embed import runtime_names

    settings = load_settings(
        args.config,
        runtimes=runtime_names(),
        cache_dir=args.cache_dir,
        embedder=args.embedder,
        triton_url=args.triton_url,
        batch_size=args.batch_size,
        threads=args.threads,
        max_run_s=args.max_run_s,
        device=args.device,
    )
    settings = dataclasses.replace(settings, device=check_device(settings.device))
    service = resolve_settings(
        EvaluatorServiceSettings,
        args.config,
        evaluator_host=args.host,
        evaluator_port=args.port,
        metrics_port=args.metrics_port,
        results_dir=args.results_dir,
        max_concurrent_runs=args.max_concurrent_runs,
    )
    return settings, service


def main(argv: list[str] | None = None) -> int:
    """Parse flags, build the servicer and serve until SIGTERM/SIGINT; a configuration error is a
    message and its `bobench.exit_codes` code (2), no traceback."""
    from bobench.errors import BobenchError
    from bobench.plugins import load_plugins

    try:
        load_plugins()  # before the parser: a plugin may add a runtime
        args = build_parser().parse_args(argv)
        settings, service = resolve(args)
    except BobenchError as exc:
        return report_exit(exc, "bobench-evaluator")
    return serve(args, settings, service)


def serve(args: argparse.Namespace, settings: Settings, service: EvaluatorServiceSettings) -> int:
    """Serve with resolved settings until SIGTERM/SIGINT."""
    from bobench.rpc.server import ServiceBinding, serve_forever

    setup_logging(settings.log_level)
    configure_data(settings, service=True)  # s3:// datasets; client paths only under data_roots
    results_dir = Path(service.results_dir or Path(settings.cache_dir) / "evaluator-results")
    servicer = EvaluatorServicer(
        settings, results_dir, service.max_concurrent_runs, stop_timeout_s=args.stop_timeout_s
    )
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
            service.evaluator_host,
            service.evaluator_port,
            max_message_mb=args.max_message_mb,
            metrics_port=service.metrics_port,
            grace_s=args.grace_s,
            on_stop=servicer.aclose,
            max_connection_age_s=args.max_connection_age_s or None,
            auth=auth.ServerAuth.from_settings(settings),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, "bobench-evaluator"))
