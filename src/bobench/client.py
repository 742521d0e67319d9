"""Python clients of the bobench services: plain synchronous gRPC with a deadline on every call.

    with EvaluatorClient("127.0.0.1:50051") as ev:
        record = ev.evaluate("toy", "toy", "knn", {"k": 10}).record     # blocks; RunRecord
        for event in ev.evaluate_events("toy", "toy", "knn"): ...       # Started, Progress..., RunResult
    with SchedulerClient("127.0.0.1:50052") as sch:
        battle_id = sch.submit(spec_yaml=Path("battle.yaml").read_text()).battle_id
        for event in sch.watch(battle_id): ...

Credentials: `auth=ClientAuth(token=..., ca=..., cert=..., key=...)` (bobench.auth_client), e.g.
`ClientAuth.from_settings(settings)`; without it a client presents what the environment names
(BOBENCH_AUTH_TOKEN or BOBENCH_AUTH_TOKEN_FILE, BOBENCH_TLS_CA, BOBENCH_TLS_CLIENT_CERT/_KEY), like
the S3 credentials a process gets from its environment.

gRPC failures are raised as bobench errors (INVALID_ARGUMENT -> InvalidArgument, NOT_FOUND ->
NotFound, UNAVAILABLE -> Unavailable, ...: the one table, `bobench.status_codes`), so callers handle one
family of exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from bobench import errors
from bobench.auth_client import ClientAuth
from bobench.battle.spec import BattleSpec
from bobench.results import RunRecord
from bobench.results.convert import result_to_record, run_request
from bobench.rpc import convert
from bobench.status_codes import error_class
from bobench.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

DEFAULT_TIMEOUT_S = 30.0  # unary calls
DEFAULT_RUN_TIMEOUT_S = 3600.0  # a whole Evaluate stream


def error_from_rpc(exc: grpc.RpcError, address: str, method: str) -> errors.BobenchError:
    """The bobench error for a failed call; the message names the server and the method."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    cls = error_class(code)
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    return cls(f"{method} on {address}: {code.name}: {detail}")


@dataclass
class EvaluateOutcome:
    """What a blocking `evaluate` returns: the final record and the events seen on the way."""

    record: RunRecord
    result: common_pb2.RunResult
    reused: bool
    progress_events: int


class _Client:
    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_mb: int = 64,
        auth: ClientAuth | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        limit = max_message_mb * 1024 * 1024
        auth = auth if auth is not None else ClientAuth.from_env()
        self._channel = auth.channel(
            address,
            [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )

    def _call(self, method: str, fn, request, timeout_s: float | None = None):
        try:
            return fn(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address, method) from None

    def _stream(self, method: str, fn, request, timeout_s: float | None) -> Iterator[Any]:
        call = fn(request, timeout=timeout_s)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address, method) from None
        finally:
            call.cancel()  # a no-op when the stream ended; stops the server when the caller broke off

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel connects; Unavailable after `timeout_s`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise errors.Unavailable(
                f"no server answered at {self.address} within {timeout_s:.0f} s"
            ) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EvaluatorClient(_Client):
    """Client of bobench.v1.Evaluator."""

    def __init__(self, address: str, **options: Any) -> None:
        super().__init__(address, **options)
        self._stub = evaluator_pb2_grpc.EvaluatorStub(self._channel)

    def evaluate_request(
        self, request: common_pb2.RunRequest, *, timeout_s: float | None = DEFAULT_RUN_TIMEOUT_S
    ) -> Iterator[evaluator_pb2.EvaluateEvent]:
        """Stream the events of one run (Started, Progress..., RunResult). Closing the iterator early
        cancels the call, and the server records the run as cancelled."""
        return self._stream(
            "Evaluate", self._stub.Evaluate, evaluator_pb2.EvaluateRequest(run=request), timeout_s
        )

    def evaluate_events(
        self,
        backbone: str,
        dataset: str | dict,
        protocol: str,
        config: dict | None = None,
        seed: int = 0,
        *,
        timeout_s: float | None = DEFAULT_RUN_TIMEOUT_S,
        **request_options: Any,
    ) -> Iterator[evaluator_pb2.EvaluateEvent]:
        """Like `evaluate_request`, building the request (see run_request for options)."""
        request = run_request(backbone, dataset, protocol, config, seed, **request_options)
        return self.evaluate_request(request, timeout_s=timeout_s)

    def evaluate(
        self,
        backbone: str,
        dataset: str | dict,
        protocol: str,
        config: dict | None = None,
        seed: int = 0,
        *,
        timeout_s: float | None = DEFAULT_RUN_TIMEOUT_S,
        progress=None,
        **request_options: Any,
    ) -> EvaluateOutcome:
        """Run and wait for the final record. `progress(done, total, message)` sees Progress events.

        Raises a bobench error for a rejected request; a run that fails returns a record with
        status "failed" and its error.
        """
        request = run_request(backbone, dataset, protocol, config, seed, **request_options)
        return self.evaluate_plan_request(request, timeout_s=timeout_s, progress=progress)

    def evaluate_plan_request(
        self,
        request: common_pb2.RunRequest,
        *,
        timeout_s: float | None = DEFAULT_RUN_TIMEOUT_S,
        progress=None,
    ) -> EvaluateOutcome:
        """Blocking form of `evaluate_request` (the gRPC executor builds the request with plan_to_request)."""
        reused, n_progress, result = False, 0, None
        for event in self.evaluate_request(request, timeout_s=timeout_s):
            kind = event.WhichOneof("event")
            if kind == "started":
                reused = event.started.reused
            elif kind == "progress":
                n_progress += 1
                if progress is not None:
                    progress(event.progress.done, event.progress.total, event.progress.message)
            elif kind == "result":
                result = event.result
        if result is None:
            raise errors.Unavailable(f"Evaluate on {self.address}: the stream ended without a result")
        return EvaluateOutcome(result_to_record(result), result, reused, n_progress)

    def get_result(self, run_key: str, *, timeout_s: float | None = None) -> RunRecord:
        """The stored record of `run_key`; NotFound when the evaluator has none."""
        result = self._call(
            "GetResult", self._stub.GetResult, evaluator_pb2.GetResultRequest(run_key=run_key), timeout_s
        )
        return result_to_record(result)


class SchedulerClient(_Client):
    """Client of bobench.v1.Scheduler."""

    def __init__(self, address: str, **options: Any) -> None:
        super().__init__(address, **options)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    def submit(
        self,
        spec: BattleSpec | None = None,
        *,
        spec_yaml: str | None = None,
        battle_id: str | None = None,
        timeout_s: float | None = None,
    ) -> scheduler_pb2.SubmitBattleResponse:
        """Submit a battle given as a BattleSpec or as YAML text (exactly one)."""
        if (spec is None) == (spec_yaml is None):
            raise errors.InvalidArgument("submit: give exactly one of spec or spec_yaml")
        request = scheduler_pb2.SubmitBattleRequest(battle_id=battle_id or "")
        if spec is not None:
            request.spec.CopyFrom(convert.battle_spec_to_proto(spec))
        else:
            request.spec_yaml = spec_yaml
        return self._call("SubmitBattle", self._stub.SubmitBattle, request, timeout_s)

    def watch(self, battle_id: str, *, timeout_s: float | None = None) -> Iterator[scheduler_pb2.BattleEvent]:
        """Stream the battle's events until it ends (no deadline unless `timeout_s`)."""
        return self._stream(
            "WatchBattle",
            self._stub.WatchBattle,
            scheduler_pb2.WatchBattleRequest(battle_id=battle_id),
            timeout_s,
        )

    def get(self, battle_id: str, *, timeout_s: float | None = None) -> scheduler_pb2.Battle:
        return self._call(
            "GetBattle", self._stub.GetBattle, scheduler_pb2.GetBattleRequest(battle_id=battle_id), timeout_s
        )

    def list(self, *, page_size: int = 0, timeout_s: float | None = None) -> list[scheduler_pb2.Battle]:
        """Every battle, newest first (follows page tokens)."""
        battles, token = [], ""
        while True:
            page = self._call(
                "ListBattles",
                self._stub.ListBattles,
                scheduler_pb2.ListBattlesRequest(page_size=page_size, page_token=token),
                timeout_s,
            )
            battles.extend(page.battles)
            token = page.next_page_token
            if not token:
                return battles

    def cancel(
        self, battle_id: str, reason: str = "", *, timeout_s: float | None = None
    ) -> scheduler_pb2.Battle:
        return self._call(
            "CancelBattle",
            self._stub.CancelBattle,
            scheduler_pb2.CancelBattleRequest(battle_id=battle_id, reason=reason),
            timeout_s,
        )

    def results(
        self, battle_id: str, *, finished_only: bool = False, timeout_s: float | None = DEFAULT_RUN_TIMEOUT_S
    ) -> list[RunRecord]:
        """The battle's run records, in plan order."""
        request = scheduler_pb2.ListResultsRequest(battle_id=battle_id, finished_only=finished_only)
        return [
            result_to_record(r)
            for r in self._stream("ListResults", self._stub.ListResults, request, timeout_s)
        ]
