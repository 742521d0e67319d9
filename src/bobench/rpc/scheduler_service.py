"""The Scheduler gRPC service: a thin adapter over `bobench.battle.scheduler.Scheduler`.

Run it with `python -m bobench.rpc.scheduler_service --port 50052 --store s3://bobench/artifacts
--evaluators 127.0.0.1:50051` (no --evaluators = runs execute in this process; `--job-config FILE` =
the file's protocols, e.g. finetune, run as Kubernetes Jobs, `bobench.battle.executors.kubernetes`). Prometheus metrics:
runs by state, queue depth, retries, dispatch latency (queue wait) and run duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import threading
from pathlib import Path

from google.protobuf import timestamp_pb2
from prometheus_client import Counter, Gauge, Histogram

from bobench.battle.client_settings import check_client_settings
from bobench.battle.scheduler import Scheduler
from bobench.battle.scheduler_state import RUN_STATES, BattleEvent, BattleStatus
from bobench.battle.spec import load_spec_yaml, parse_spec
from bobench.config import SchedulerServiceSettings, Settings
from bobench.errors import InvalidArgument, NotFound
from bobench.exit_codes import report_exit, run_main
from bobench.logs import setup_logging
from bobench.results.convert import STATUS_TO_PROTO, record_to_result
from bobench.rpc import auth, convert, limits
from bobench.store.base import ArtifactStore
from bobench.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

RUNS = Gauge("bobench_scheduler_runs", "Runs of all known battles by state.", ["state"])
QUEUE_DEPTH = Gauge("bobench_scheduler_queue_depth", "Runs waiting in the dispatch queue (incl. backoff).")
RETRIES = Counter("bobench_scheduler_retries", "Transient run failures that were retried.")
DISPATCH_LATENCY = Histogram(
    "bobench_scheduler_dispatch_latency_seconds",
    "Time from a run becoming ready to its dispatch to an executor.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
)
RUN_DURATION = Histogram(
    "bobench_scheduler_run_duration_seconds",
    "Executor round trip of one run attempt, by outcome.",
    ["outcome"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200),
)

BATTLE_STATE_TO_PROTO = {
    "queued": scheduler_pb2.BATTLE_STATE_QUEUED,
    "running": scheduler_pb2.BATTLE_STATE_RUNNING,
    "finished": scheduler_pb2.BATTLE_STATE_FINISHED,
    "failed": scheduler_pb2.BATTLE_STATE_FAILED,
    "cancelled": scheduler_pb2.BATTLE_STATE_CANCELLED,
}
DEFAULT_PAGE_SIZE = 50


def instrument(scheduler: Scheduler) -> None:
    """Wire the scheduler's hooks and gauges to this module's Prometheus metrics."""
    for state in RUN_STATES:
        RUNS.labels(state).set_function(lambda s=state: scheduler.counts_by_state().get(s, 0))
    QUEUE_DEPTH.set_function(scheduler.queue_depth)
    scheduler.on_retry = RETRIES.inc
    scheduler.on_dispatch = DISPATCH_LATENCY.observe
    scheduler.on_run_done = lambda outcome, s: RUN_DURATION.labels(outcome).observe(s)


def _ts(iso: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if iso:
        ts.FromJsonString(iso.replace("+00:00", "Z"))
    return ts


def _counts(c: dict[str, int]) -> scheduler_pb2.RunCounts:
    return scheduler_pb2.RunCounts(**{k: c.get(k, 0) for k in ("total", *RUN_STATES)})


def battle_to_proto(status: BattleStatus) -> scheduler_pb2.Battle:
    msg = scheduler_pb2.Battle(
        id=status.id,
        name=status.name,
        state=BATTLE_STATE_TO_PROTO[status.state],
        counts=_counts(status.counts),
        created_at=_ts(status.created_at),
        updated_at=_ts(status.updated_at),
        error=status.error or "",
        owner=status.owner,
    )
    if status.spec:
        msg.spec.CopyFrom(convert.battle_spec_to_proto(parse_spec(status.spec)))
    return msg


def event_to_proto(e: BattleEvent) -> scheduler_pb2.BattleEvent:
    state = STATUS_TO_PROTO.get(e.state, common_pb2.RUN_STATUS_UNSPECIFIED) if e.run_key else 0
    return scheduler_pb2.BattleEvent(
        battle_id=e.battle_id,
        run_key=e.run_key,
        backbone=e.backbone,
        dataset=e.dataset,
        protocol=e.protocol,
        state=state,
        error=e.error or "",
        counts=_counts(e.counts),
        battle_state=BATTLE_STATE_TO_PROTO[e.battle_state],
        time=_ts(e.time),
        seed=e.seed,
    )


def _required(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{field}: is required")
    return value


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    """Validates requests, converts proto <-> domain and calls the Scheduler in worker threads."""

    def __init__(
        self, scheduler: Scheduler, base_dir: Path | None = None, settings: Settings | None = None
    ) -> None:
        self.scheduler = scheduler
        self.base_dir = base_dir or Path.cwd()
        self.limits = settings or Settings()
        self.quota = limits.BattleQuota(self.limits, self._state_of)
        self.quota.adopt((b.owner, b.id) for b in scheduler.list())  # battles resumed from the store

    def _state_of(self, battle_id: str) -> str | None:
        try:
            return self.scheduler.get(battle_id).state
        except NotFound:
            return None

    async def SubmitBattle(self, request, context):
        which = request.WhichOneof("spec_source")
        if which == "spec":
            spec = convert.battle_spec_from_proto(request.spec)
        elif which == "spec_yaml":
            spec = load_spec_yaml(request.spec_yaml, "spec_yaml", base_dir=self.base_dir, limits=self.limits)
        else:
            raise InvalidArgument("spec or spec_yaml: one is required")
        check_client_settings(spec.settings)  # cache_dir, triton_url, device: the operator's
        battle_id = limits.check_battle_id(request.battle_id) if request.battle_id else None
        limits.check_runs_per_battle(spec, self.limits)
        with self.quota.reserve(limits.caller_identity()) as bind:
            bid = await asyncio.to_thread(self.scheduler.submit, spec, battle_id, owner=auth.caller_name())
            bind(bid)
        status = self.scheduler.get(bid)
        return scheduler_pb2.SubmitBattleResponse(
            battle_id=bid, total_runs=status.counts["total"], reused_runs=status.reused, owner=status.owner
        )

    async def GetBattle(self, request, context):
        return battle_to_proto(self.scheduler.get(_required(request.battle_id, "battle_id")))

    async def ListBattles(self, request, context):
        if request.page_size < 0:
            raise InvalidArgument(f"page_size: must be >= 0, got {request.page_size}")
        size = request.page_size or DEFAULT_PAGE_SIZE
        start = limits.check_page_token(request.page_token)
        battles = self.scheduler.list()
        page = [battle_to_proto(b) for b in battles[start : start + size]]
        page = page[: limits.page_by_bytes(page, lambda m: m.ByteSize(), self.limits.max_list_page_bytes)]
        nxt = str(start + len(page)) if start + len(page) < len(battles) else ""
        return scheduler_pb2.ListBattlesResponse(battles=page, next_page_token=nxt)

    async def CancelBattle(self, request, context):
        bid = _required(request.battle_id, "battle_id")
        auth.require_owner_or_admin(self.scheduler.get(bid).owner, f"battle {bid!r}")
        return battle_to_proto(await asyncio.to_thread(self.scheduler.cancel, bid, request.reason))

    async def ListResults(self, request, context):
        bid = _required(request.battle_id, "battle_id")
        records = await asyncio.to_thread(self.scheduler.results, bid, request.finished_only)
        for record in records:
            yield record_to_result(record)

    async def WatchBattle(self, request, context):
        bid = _required(request.battle_id, "battle_id")
        self.scheduler.get(bid)  # NOT_FOUND before the stream starts
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        active = threading.Event()
        active.set()
        done = object()

        def pump() -> None:  # a thread of its own follows the scheduler's events
            try:
                for event in self.scheduler.watch(bid, is_active=active.is_set):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
                    loop.call_soon_threadsafe(queue.put_nowait, done)

        # Not the default executor: open watches would take every thread SubmitBattle, CancelBattle
        # and ListResults run on (asyncio.to_thread). The thread ends within 0.5 s of `active` clearing.
        threading.Thread(target=pump, name=f"watch-{bid[:32]}", daemon=True).start()
        try:
            while (event := await queue.get()) is not done:
                yield event_to_proto(event)
        finally:
            active.clear()


def build_parser() -> argparse.ArgumentParser:
    """The service's flags. Defaults of settings are None: a flag not given leaves the setting to the
    environment, the settings file and the default (`SchedulerServiceSettings`, `Settings`)."""
    p = argparse.ArgumentParser(prog="bobench-scheduler", description="bobench Scheduler gRPC service")
    p.add_argument("--host", help="bind address (default 127.0.0.1; env BOBENCH_SCHEDULER_HOST)")
    p.add_argument("--port", type=int, help="gRPC port, 0 = pick (default 50052; env BOBENCH_SCHEDULER_PORT)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port, 0 = pick; off when unset (env BOBENCH_METRICS_PORT)",
    )
    p.add_argument(
        "--store",
        default=None,
        help="artifact store URL: a directory or s3://bucket/prefix (env BOBENCH_STORE)",
    )
    p.add_argument(
        "--evaluators",
        help="host:port,... of Evaluator services; empty = run in this process (env BOBENCH_EVALUATORS)",
    )
    p.add_argument(
        "--runs-per-evaluator",
        type=int,
        help="runs sent to one evaluator at once (match its --max-concurrent-runs; default 1; env "
        "BOBENCH_RUNS_PER_EVALUATOR)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        help="runs in flight (default 4; env BOBENCH_SCHEDULER_CONCURRENCY)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=None,
        help="most retries of a transient run failure (default: as many as the retry window allows)",
    )
    p.add_argument("--backoff-s", type=float, default=1.0, help="first retry delay; doubles each retry")
    p.add_argument(
        "--retry-window-s",
        type=int,
        default=None,
        help="retry a transient failure for this long after the run's first one (setting "
        "retry_window_s, env BOBENCH_RETRY_WINDOW_S; default 120)",
    )
    p.add_argument(
        "--max-backoff-s",
        type=int,
        default=None,
        help="longest retry delay (setting retry_max_backoff_s; default 15)",
    )
    p.add_argument(
        "--breaker-failures",
        type=int,
        default=None,
        help="an evaluator failing this many calls in a row is skipped for the cool-down (default 3)",
    )
    p.add_argument(
        "--breaker-cooldown-s",
        type=int,
        default=None,
        help="how long an evaluator whose circuit opened is skipped (default 10)",
    )
    p.add_argument(
        "--readiness-interval-s",
        type=float,
        default=2.0,
        help="how often health re-checks the workers and the store",
    )
    p.add_argument("--run-timeout-s", type=float, default=3600.0, help="deadline of one remote run")
    p.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    p.add_argument("--config", help="settings file (YAML); env BOBENCH_CONFIG")
    p.add_argument("--cache-dir", help="cache for the in-process executor (env BOBENCH_CACHE_DIR)")
    p.add_argument(
        "--job-config",
        metavar="FILE",
        help="JobConfig YAML: run its protocols (e.g. finetune) as Kubernetes Jobs; unset = no Jobs "
        "(env BOBENCH_JOB_CONFIG)",
    )
    return p


def build_job_executor(job_config: str | None, settings: Settings, store: ArtifactStore):
    """(KubernetesExecutor, protocols) from a JobConfig file, or (None, ()) without one. The Jobs use
    the scheduler's store and S3 endpoint unless the file names others; the store must be s3://
    (a Job's pod sees no scheduler disk). Raises InvalidArgument naming the file for bad values."""
    if not job_config:
        return None, ()
    import dataclasses

    from bobench.battle.executors.k8s_jobs import load_job_config
    from bobench.battle.executors.kubernetes import KubernetesExecutor

    config = load_job_config(job_config)
    config = dataclasses.replace(
        config,
        store=config.store or settings.store,
        s3_endpoint=config.s3_endpoint or settings.s3_endpoint,
    )
    if not config.store.startswith("s3://"):
        raise InvalidArgument(
            f"job config file {job_config}: Jobs need an s3:// store (got {config.store!r}); set "
            "'store' there or run the scheduler with --store s3://..."
        )
    return KubernetesExecutor(config, store), config.protocols


def build_publish_step(job_executor, settings: Settings):
    """The scheduler's publish step: publish Jobs when the job config says `publish_jobs: true`
    (the cluster), else in this process when BOBENCH_PUBLISH_TO is set (local stack), else none."""
    if job_executor is not None and job_executor.config.publish_jobs:
        from bobench.battle.k8s_publish import publish_step_for_jobs

        return publish_step_for_jobs(job_executor.config, settings)
    from bobench.battle.publish_step import publish_step_from_settings

    return publish_step_from_settings(settings)


def resolve(args: argparse.Namespace) -> tuple[Settings, SchedulerServiceSettings]:
    """The process's settings from parsed flags, by the one precedence rule (flags > BOBENCH_* >
    settings file > defaults). Raises InvalidArgument naming a value that does not parse."""
    from bobench.config import load_settings, resolve_settings

    settings = load_settings(
        args.config,
        cache_dir=args.cache_dir,
        store=args.store,
        retry_window_s=args.retry_window_s,
        retry_max_backoff_s=args.max_backoff_s,
        breaker_failures=args.breaker_failures,
        breaker_cooldown_s=args.breaker_cooldown_s,
    )
    service = resolve_settings(
        SchedulerServiceSettings,
        args.config,
        scheduler_host=args.host,
        scheduler_port=args.port,
        metrics_port=args.metrics_port,
        evaluators=args.evaluators,
        runs_per_evaluator=args.runs_per_evaluator,
        scheduler_concurrency=args.concurrency,
        job_config=args.job_config,
    )
    return settings, service


def build_scheduler(args: argparse.Namespace, settings: Settings, service: SchedulerServiceSettings):
    """The scheduler of resolved settings (and the flags that are not settings): the store, the
    executors and the retry policy."""
    from bobench.auth_client import ClientAuth
    from bobench.battle.executors.grpc import GrpcExecutor
    from bobench.battle.executors.local import LocalExecutor
    from bobench.battle.result_signing import ResultSigner
    from bobench.data import configure as configure_data
    from bobench.store import open_store

    configure_data(settings, service=True)  # s3:// listings; client paths only under data_roots
    store = open_store(settings, create_bucket=True)
    if service.evaluators.strip():
        executors = [
            GrpcExecutor(
                service.evaluators,
                runs_per_address=service.runs_per_evaluator,
                timeout_s=args.run_timeout_s,
                auth=ClientAuth.from_settings(settings),  # the scheduler's service identity
                breaker_failures=settings.breaker_failures,
                breaker_cooldown_s=settings.breaker_cooldown_s,
            )
        ]
    else:
        executors = [LocalExecutor(settings)]
    job_executor, job_protocols = build_job_executor(service.job_config or None, settings, store)
    scheduler = Scheduler(
        store,
        executors,
        concurrency=service.scheduler_concurrency,
        max_retries=args.max_retries,
        backoff_s=args.backoff_s,
        max_backoff_s=settings.retry_max_backoff_s,
        retry_window_s=settings.retry_window_s,
        signer=ResultSigner(settings.result_signing_key),
        preparer=build_publish_step(job_executor, settings),
        job_executor=job_executor,
        job_protocols=job_protocols,  # () without a job executor: every run stays in process
    )
    return scheduler


def main(argv: list[str] | None = None) -> int:
    """Parse flags, resume stored battles and serve until SIGTERM/SIGINT; a configuration error is a
    message and its `bobench.exit_codes` code, no traceback."""
    from bobench.errors import BobenchError
    from bobench.plugins import load_plugins

    try:
        load_plugins()  # plugins' backbones, datasets and protocols are known when specs are planned
        args = build_parser().parse_args(argv)
        settings, service = resolve(args)
        scheduler = build_scheduler(args, settings, service)
    except BobenchError as exc:  # 3 when the store did not answer, 2 for a bad setting (exit_codes)
        return report_exit(exc, "bobench-scheduler")
    return serve(args, scheduler, settings, service)


def serve(
    args: argparse.Namespace, scheduler: Scheduler, settings: Settings, service: SchedulerServiceSettings
) -> int:
    """Resume stored battles and serve until SIGTERM/SIGINT."""
    from bobench.rpc.server import ServiceBinding, serve_forever

    setup_logging(settings.log_level)
    instrument(scheduler)
    scheduler.start()
    log.info(
        "scheduler: store %s, executors %s",
        scheduler.store.url,
        [type(e).__name__ for e in scheduler.executors],
    )
    if scheduler.job_executor is not None:
        log.info("protocols %s run as Kubernetes Jobs", sorted(scheduler.job_protocols))

    async def ready() -> bool:  # NOT_SERVING while a worker is dead or the store does not answer
        return scheduler.healthy()

    binding = ServiceBinding.of(
        scheduler_pb2_grpc.add_SchedulerServicer_to_server,
        SchedulerServicer(scheduler, settings=settings),
        readiness=ready,
        readiness_interval_s=args.readiness_interval_s,
    )
    asyncio.run(
        serve_forever(
            [binding],
            service.scheduler_host,
            service.scheduler_port,
            metrics_port=service.metrics_port,
            grace_s=args.grace_s,
            on_stop=lambda: scheduler.close(args.grace_s),
            auth=auth.ServerAuth.from_settings(settings),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, "bobench-scheduler"))
