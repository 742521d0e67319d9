"""GrpcExecutor: runs a plan on remote evaluators through the Evaluator `Evaluate` RPC.

Status codes map back to the executor contract (the one table, `bobench.status_codes`): UNAVAILABLE,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (unless its message says a configured limit was reached) and
ABORTED raise the transient bobench errors (the scheduler retries them, with backoff, on the next
evaluator in turn); a run the evaluator reports as cancelled (it was draining) is transient too; any
other code is the run's own failure and becomes a failed record carrying the evaluator's message.

Evaluators are given either as a list of `host:port` addresses (one channel each, runs dealt round
robin, `runs_per_address` in flight on each) or as ONE gRPC target URI such as
`dns:///evaluator-headless.bobench.svc.cluster.local:50051` or `ipv4:127.0.0.1:5001,127.0.0.1:5002`:
gRPC resolves it (DNS re-resolved as pods come and go) and spreads the calls over every resolved
address with its `round_robin` policy, skipping addresses that are not connected. Then
`runs_per_address` bounds the runs in flight on the whole target: set it to replicas x each
evaluator's `--max-concurrent-runs` (an evaluator that gets more than it runs at once queues them).

Circuit breaker per address: after `breaker_failures` transient failures in a row an address is
skipped for `breaker_cooldown_s` (its runs go to the others); then it gets calls again, and one more
failure opens it again. When every address is open a run fails fast with Unavailable, which the
scheduler retries after its backoff. `cancel(run_key)` cancels the run's streaming call: the
evaluator stops the run at its next step and the run ends with a "cancelled" record.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time

import grpc

from bobench.auth_client import ClientAuth
from bobench.battle.context import ProgressFn
from bobench.battle.executors.base import Executor, utc_now
from bobench.battle.plan import RunPlan
from bobench.errors import INTERNAL_ERROR, TRANSIENT_ERRORS, BobenchError, InvalidArgument, Unavailable
from bobench.results import RunRecord, RunStatus
from bobench.results.convert import result_to_record, run_request
from bobench.status_codes import error_class, is_retryable
from bobench.v1 import common_pb2

log = logging.getLogger(__name__)


def _transient_error(code: grpc.StatusCode) -> type[BobenchError]:
    """The error a retryable code raises: its own class when the scheduler retries it, else Unavailable
    (an overloaded evaluator's RESOURCE_EXHAUSTED, ABORTED)."""
    cls = error_class(code)
    return cls if issubclass(cls, TRANSIENT_ERRORS) else Unavailable


def plan_to_request(plan: RunPlan, *, rerun: bool = False, batch_size: int = 0) -> common_pb2.RunRequest:
    """The RunRequest that makes an evaluator execute `plan` (it checks the run key matches).
    A user-defined backbone travels with its BackboneSpec fields so the evaluator can register it."""
    from bobench.battle.plan import CUSTOM_BACKBONES

    request = run_request(
        plan.backbone,
        plan.dataset_ref,
        plan.protocol,
        plan.config,
        plan.seed,
        dataset_name=plan.dataset,
        battle_id=plan.battle,
        batch_size=batch_size,
        expected_run_key=plan.run_key,
        rerun=rerun,
        embedder_variant=plan.embedder_variant,
    )
    if plan.backbone in CUSTOM_BACKBONES:
        request.backbone.spec_json = json.dumps(CUSTOM_BACKBONES[plan.backbone], sort_keys=True)
    return request


def _failure(code: grpc.StatusCode) -> tuple[str, str]:
    """(error_type, message prefix) of a failed record for `code` (what LocalExecutor would write)."""
    cls = error_class(code)
    if cls is BobenchError:
        return INTERNAL_ERROR, f"internal error: {code.name}"
    return cls.__name__, cls.__name__


TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:")  # gRPC name-resolver URIs: one load-balanced target
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def is_target_uri(addresses: str | list[str]) -> bool:
    """True when `addresses` is one gRPC target URI (dns:///h:p, ipv4:a:p,b:p, ...)."""
    return isinstance(addresses, str) and addresses.strip().startswith(TARGET_SCHEMES)


def parse_addresses(addresses: str | list[str]) -> list[str]:
    """'h1:p1,h2:p2' or a list -> ['h1:p1', 'h2:p2']; a target URI -> [that URI].

    Raises InvalidArgument naming a bad entry (a target URI must end in :port)."""
    if is_target_uri(addresses):
        target = addresses.strip()
        if not target.rpartition(":")[2].isdigit():
            raise InvalidArgument(f"evaluator target {target!r} must end with :port (e.g. dns:///host:50051)")
        return [target]
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    out = []
    for item in (a.strip() for a in items):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidArgument(f"evaluator address {item!r} must be host:port")
        out.append(item)
    if not out:
        raise InvalidArgument("no evaluator addresses given")
    return out


class CircuitBreaker:
    """Consecutive transient failures of one address; open (skip it) for a cool-down after too many.
    Not thread-safe: the executor calls it under its lock."""

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.threshold, self.cooldown_s = max(1, failures), cooldown_s
        self.failures = 0
        self.open_until = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def failed(self, now: float) -> bool:
        """Count a transient failure; True when it (re)opens the breaker."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown_s
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.open_until = 0, 0.0


class GrpcExecutor(Executor):
    """Sends each run to one of `addresses` (round robin) or through one load-balanced target URI
    (module docstring). `runs_per_address` bounds what the scheduler sends each address (or the whole
    target) at once; `timeout_s` is the deadline of one run (None = no deadline). Thread-safe: the
    scheduler calls it from several workers."""

    def __init__(
        self,
        addresses: str | list[str],
        *,
        runs_per_address: int = 1,
        timeout_s: float | None = 3600.0,
        max_message_mb: int = 64,
        auth: ClientAuth | None = None,  # None: the process's BOBENCH_AUTH_* / BOBENCH_TLS_* env
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 10.0,
    ) -> None:
        from bobench.v1 import evaluator_pb2_grpc

        self.addresses = parse_addresses(addresses)
        if runs_per_address < 1:
            raise InvalidArgument(f"runs_per_address must be >= 1, got {runs_per_address}")
        self.slots = len(self.addresses) * runs_per_address
        self.timeout_s = timeout_s
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if is_target_uri(addresses):
            options.append(("grpc.service_config", _ROUND_ROBIN))
        auth = auth if auth is not None else ClientAuth.from_env()
        self._channels = [auth.channel(a, options) for a in self.addresses]
        self._stubs = [evaluator_pb2_grpc.EvaluatorStub(c) for c in self._channels]
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._breakers = [CircuitBreaker(breaker_failures, breaker_cooldown_s) for _ in self.addresses]
        self._calls: dict[str, grpc.Future] = {}  # run key -> its Evaluate call in flight
        self._cancelled: set[str] = set()  # run keys whose call `cancel` stopped
        self.reused = 0  # runs an evaluator answered from its stored results

    def _pick(self) -> int:
        """The next address in turn whose breaker allows a call; Unavailable when all are open."""
        now = time.monotonic()
        with self._lock:
            start = next(self._next)
            for step in range(len(self.addresses)):
                i = (start + step) % len(self.addresses)
                if self._breakers[i].allows(now):
                    return i
        raise Unavailable(
            f"every evaluator failed {self._breakers[0].threshold} calls in a row; retrying after "
            f"their cool-down ({', '.join(self.addresses)})"
        )

    def _outcome(self, i: int, transient: bool) -> None:
        with self._lock:
            if not transient:
                self._breakers[i].succeeded()
            elif self._breakers[i].failed(time.monotonic()):
                log.warning(
                    "evaluator %s failed %d calls in a row: skipped for %.1f s",
                    self.addresses[i],
                    self._breakers[i].failures,
                    self._breakers[i].cooldown_s,
                )

    def cancel(self, run_key: str) -> None:
        """Cancel the run's Evaluate call (if in flight): the evaluator stops it at its next step."""
        with self._lock:
            call = self._calls.get(run_key)
            if call is not None:
                self._cancelled.add(run_key)
        if call is not None:
            call.cancel()

    def execute(self, plan: RunPlan, progress: ProgressFn | None = None) -> RunRecord:
        """Run `plan` remotely. Raises Unavailable / DeadlineExceeded for transient failures."""
        from bobench.v1 import evaluator_pb2

        i = self._pick()
        address, stub = self.addresses[i], self._stubs[i]
        request = evaluator_pb2.EvaluateRequest(run=plan_to_request(plan))
        started_at = utc_now()
        record = None
        call = stub.Evaluate(request, timeout=self.timeout_s)
        with self._lock:
            self._calls[plan.run_key] = call
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "started" and event.started.reused:
                    with self._lock:
                        self.reused += 1
                elif kind == "progress" and progress is not None:
                    progress(event.progress.done, event.progress.total, event.progress.message)
                elif kind == "result":
                    record = result_to_record(event.result)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            with self._lock:
                stopped = plan.run_key in self._cancelled
            if stopped and code == grpc.StatusCode.CANCELLED:
                record = plan.new_record()
                record.started_at, record.finished_at = started_at, utc_now()
                error = f"Cancelled: the run's battle was cancelled (evaluator {address})"
                record.fail("Cancelled", error, RunStatus.CANCELLED)
                return record
            retryable = is_retryable(code, details)
            self._outcome(i, retryable)
            if retryable:
                raise _transient_error(code)(f"evaluator {address}: {code.name}: {details}") from None
            record = plan.new_record()
            record.started_at, record.finished_at = started_at, utc_now()
            kind, prefix = _failure(code)
            record.fail(kind, f"{prefix}: evaluator {address}: {details}")
            log.error("run %s failed on %s: %s", plan.run_key, address, record.error)
            return record
        finally:
            with self._lock:
                self._calls.pop(plan.run_key, None)
                self._cancelled.discard(plan.run_key)
        self._outcome(i, record is None)
        if record is None:
            raise Unavailable(
                f"evaluator {address}: Evaluate stream for run {plan.run_key} ended without a result"
            )
        if record.status == RunStatus.CANCELLED:
            raise Unavailable(f"evaluator {address} cancelled run {plan.run_key}: {record.error}")
        record.battle = plan.battle
        return record

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
