"""`bob evaluate` (one run, remote or embedded) and the remote battle commands
(`bob battle submit|watch|results|get|list|cancel --server HOST:PORT`).

Credentials come from the settings (auth_token / auth_token_file, tls_ca, tls_client_cert/_key: env
BOBENCH_* or the config file); a battle command that finds the local stack's scheduler itself uses
the stack's token (its secrets file) unless one is configured. The server address is
`bobench.config.ClientSettings`: --server > env BOBENCH_EVALUATOR / BOBENCH_SCHEDULER > the settings
file's `evaluator` / `scheduler` key."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bobench.cli.common import add_settings_flags, out_dir, print_json, run_title, settings_from, table
from bobench.errors import InvalidArgument

EVALUATOR_ENV = "BOBENCH_EVALUATOR"
SCHEDULER_ENV = "BOBENCH_SCHEDULER"
_BATTLE_EXIT = {"BATTLE_STATE_FINISHED": 0}


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="evaluate one backbone on one dataset with one protocol")
    ev.add_argument(
        "backbone",
        help="registered backbone name, or a user-defined backbone as JSON, like a battle spec's backbones "
        'entry: \'{"name": "my-r18", "source": "timm", "model_id": "resnet18", "weights": "ckpt.pth"}\'',
    )
    ev.add_argument(
        "dataset",
        help='registered dataset name, or a JSON ref such as \'{"type": "imagefolder", "path": "d"}\'',
    )
    ev.add_argument("protocol", help="registered protocol name")
    ev.add_argument(
        "--protocol-config",
        default="{}",
        metavar="JSON",
        help="protocol config overrides (--config is the settings file, as everywhere)",
    )
    ev.add_argument("--seed", type=int, default=0, help="run seed (>= 0)")
    ev.add_argument(
        "--server", help=f"evaluator HOST:PORT (env {EVALUATOR_ENV}); without it the run is embedded"
    )
    ev.add_argument("--rerun", action="store_true", help="execute even if the server has a finished result")
    ev.add_argument("--timeout-s", type=float, default=3600.0, help="deadline of the remote call")
    ev.add_argument("--json", action="store_true", help="print the run record as JSON")
    ev.add_argument(
        "-o",
        "--out",
        type=out_dir,
        help="also append the record to DIR/results.jsonl (as `bob battle run` does; then `bob report DIR`)",
    )
    add_settings_flags(ev)
    ev.set_defaults(func=cmd_evaluate)


def register_battle_actions(actions: argparse._SubParsersAction) -> None:
    """The remote actions of `bob battle` (submit, watch, results, get, list, cancel), added to the
    group that cli/battle.py owns."""
    server = {"help": f"scheduler HOST:PORT (env {SCHEDULER_ENV})"}
    submit = actions.add_parser("submit", help="submit a battle spec to a scheduler")
    submit.add_argument("spec", help="battle spec (YAML)")
    submit.add_argument("--server", **server)
    submit.add_argument("--battle-id", help="id to use (default: generated)")
    submit.add_argument("--wait", action="store_true", help="stream progress until the battle ends")
    submit.set_defaults(func=cmd_submit)
    watch = actions.add_parser("watch", help="stream a submitted battle's progress until it ends")
    watch.add_argument("battle_id")
    watch.add_argument("--server", **server)
    watch.set_defaults(func=cmd_watch)
    results = actions.add_parser("results", help="a submitted battle's run results")
    results.add_argument("battle_id")
    results.add_argument("--server", **server)
    results.add_argument("--json", action="store_true", help="one JSON record per line")
    results.add_argument(
        "-o",
        "--out",
        type=out_dir,
        help="also write DIR/results.jsonl and the report there (as `bob battle run` does)",
    )
    results.set_defaults(func=cmd_results)
    get = actions.add_parser("get", help="a submitted battle's state and counts")
    get.add_argument("battle_id")
    get.add_argument("--server", **server)
    get.set_defaults(func=cmd_get)
    listing = actions.add_parser("list", help="battles on a scheduler, newest first")
    listing.add_argument("--server", **server)
    listing.set_defaults(func=cmd_list)
    cancel = actions.add_parser("cancel", help="cancel a submitted battle")
    cancel.add_argument("battle_id")
    cancel.add_argument("--reason", default="cancelled from the command line")
    cancel.add_argument("--server", **server)
    cancel.set_defaults(func=cmd_cancel)


def _client_auth(args: argparse.Namespace, stack_dir=None):
    """The ClientAuth of the settings; with `stack_dir` and no token configured, the stack's token."""
    import dataclasses

    from bobench.auth_client import ClientAuth

    auth = ClientAuth.from_settings(settings_from(args))
    if stack_dir is not None and not auth.bearer_token():
        from bobench.stack import stack_env

        auth = dataclasses.replace(auth, token=stack_env(stack_dir).get("BOBENCH_AUTH_TOKEN", ""))
    return auth


def _scheduler_client(args: argparse.Namespace):
    """A SchedulerClient of --server, else $BOBENCH_SCHEDULER, else the local stack's scheduler from
    the nearest .bobench/stack.json from here upwards (make up writes it in the repository root)."""
    from bobench.client import SchedulerClient

    server = _server(args, "scheduler")
    if server:
        return SchedulerClient(server, auth=_client_auth(args))
    from pathlib import Path

    from bobench.stack import read_state

    here = Path.cwd().resolve()
    state_dir = next(
        (d / ".bobench" for d in (here, *here.parents) if (d / ".bobench" / "stack.json").is_file()), None
    )
    state = (read_state(state_dir) if state_dir else None) or {}
    for service in state.get("services", []):
        if service.get("name") == "scheduler":
            return SchedulerClient(service["address"], auth=_client_auth(args, state_dir))
    raise InvalidArgument(
        f"--server HOST:PORT is required (or set {SCHEDULER_ENV}, or start the local stack with `make up`)"
    )


def _server(args: argparse.Namespace, which: str) -> str:
    """The `which` ("evaluator" or "scheduler") address of ClientSettings: --server, else its env
    variable, else its settings-file key; "" when none is given."""
    from bobench.config import ClientSettings, resolve_settings

    client = resolve_settings(ClientSettings, getattr(args, "config", None), **{which: args.server})
    return getattr(client, which)


def _dataset_arg(text: str) -> str | dict[str, Any]:
    if text.lstrip().startswith("{"):
        try:
            ref = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"DATASET: not valid JSON ({exc.msg} at position {exc.pos})") from None
        return ref
    return text


def _backbone_arg(text: str) -> str | dict[str, Any]:
    """A registered name, or a user-defined backbone given as a JSON object of BackboneSpec fields
    (checked like a battle spec's entry; relative weight/model paths resolve against the working
    directory)."""
    if not text.lstrip().startswith("{"):
        return text
    from pathlib import Path

    from bobench.battle.spec import custom_backbone_entry

    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"BACKBONE: not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(item, dict):
        raise InvalidArgument(
            "BACKBONE: a user-defined backbone must be a JSON object of BackboneSpec fields"
        )
    return custom_backbone_entry(item, "BACKBONE", Path.cwd())


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bobench.rpc.convert import parse_json_object

    config = parse_json_object(args.protocol_config, "--protocol-config")
    dataset = _dataset_arg(args.dataset)
    backbone = _backbone_arg(args.backbone)
    server = _server(args, "evaluator")
    if server:
        from bobench.client import EvaluatorClient
        from bobench.results.convert import run_request

        name = backbone["name"] if isinstance(backbone, dict) else backbone
        request = run_request(name, dataset, args.protocol, config, args.seed, rerun=args.rerun)
        if isinstance(backbone, dict):  # the evaluator registers it before the run
            request.backbone.spec_json = json.dumps(backbone, sort_keys=True)
        with EvaluatorClient(server, auth=_client_auth(args)) as client:
            record = client.evaluate_plan_request(request, timeout_s=args.timeout_s).record
    else:
        from bobench.battle.executors.local import LocalExecutor
        from bobench.battle.single_run import plan_single_run

        executor = LocalExecutor(settings_from(args))
        try:
            plan = plan_single_run(
                backbone, dataset, args.protocol, config, args.seed, dataset_loader=executor.dataset
            )
            record = executor.execute(plan)
        finally:
            executor.close()
    if args.out:
        from pathlib import Path

        from bobench.results import RESULTS_FILE, append_record

        append_record(Path(args.out), record)
        print(f"record appended to {Path(args.out) / RESULTS_FILE}", file=sys.stderr)
    if args.json:
        sys.stdout.write(record.to_json() + "\n")
    else:
        print(
            f"run {record.run_key}: {run_title(record)} (protocol v{record.protocol_version}): "
            f"{record.status} ({record.duration_s} s)"
        )
        rows = [
            {"metric": k, "value": v}
            for k, v in sorted(record.metrics.items())
            if not isinstance(v, list | dict)
        ]
        if rows:
            print(table(rows, ["metric", "value"]))
        if record.error:
            print(f"error: {record.error}", file=sys.stderr)
    return 0 if record.finished else 1


def _state_name(value: int) -> str:
    from bobench.v1 import scheduler_pb2

    return scheduler_pb2.BattleState.Name(value)


def _counts(c) -> str:
    return (
        f"{c.finished + c.failed + c.cancelled}/{c.total} done (finished {c.finished}, failed {c.failed}, "
        f"cancelled {c.cancelled}, running {c.running})"
    )


def _follow(client, battle_id: str) -> int:
    """Print the battle's events until it ends; the exit code says whether every run finished."""
    from bobench.v1 import common_pb2

    state = "BATTLE_STATE_UNSPECIFIED"
    for event in client.watch(battle_id):
        state = _state_name(event.battle_state)
        if event.run_key:
            run_state = common_pb2.RunStatus.Name(event.state).removeprefix("RUN_STATUS_").lower()
            line = f"{run_state:9s} {event.backbone} / {event.dataset} / {event.protocol} seed {event.seed}"
            print(line + (f": {event.error}" if event.error else ""))
        print(f"  {battle_id}: {state.removeprefix('BATTLE_STATE_').lower()} — {_counts(event.counts)}")
    final = client.get(battle_id)
    state = _state_name(final.state)
    print(f"battle {battle_id}: {state.removeprefix('BATTLE_STATE_').lower()} — {_counts(final.counts)}")
    return _BATTLE_EXIT.get(state, 1)


def cmd_submit(args: argparse.Namespace) -> int:
    from bobench.battle.spec import load_spec

    spec = load_spec(args.spec)  # validated here first: a bad spec fails before any network call
    with _scheduler_client(args) as client:
        response = client.submit(spec, battle_id=args.battle_id)
        owner = f", owner {response.owner}" if response.owner else ""
        print(
            f"battle {response.battle_id}: {response.total_runs} runs ({response.reused_runs} reused){owner}"
        )
        return _follow(client, response.battle_id) if args.wait else 0


def cmd_watch(args: argparse.Namespace) -> int:
    with _scheduler_client(args) as client:
        return _follow(client, args.battle_id)


def _write_results_dir(records: list, out: str) -> None:
    """results.jsonl (replaced, not appended: it mirrors the scheduler's store) plus the report."""
    from pathlib import Path

    from bobench.analysis.report import write_report
    from bobench.results import replace_records

    path = Path(out)
    done = [r for r in records if r.status in ("finished", "failed", "cancelled")]  # not pending/running
    written = replace_records(path, done)
    if any(r.status == "finished" for r in done):
        report = write_report(path)
        print(
            f"wrote {len(records)} records to {written}; report: {report['report.html']}",
            file=sys.stderr,
        )


def cmd_results(args: argparse.Namespace) -> int:
    with _scheduler_client(args) as client:
        records = client.results(args.battle_id)
    if args.out:
        _write_results_dir(records, args.out)
    if args.json:
        for r in records:
            sys.stdout.write(r.to_json() + "\n")
        return 0
    rows = [
        {
            "backbone": r.backbone,
            "dataset": r.dataset,
            "protocol": r.protocol,
            "seed": r.seed,
            "status": r.status,
            "metric": r.primary_metric,
            "value": r.metrics.get(r.primary_metric) if r.primary_metric else None,
            "run_key": r.run_key,
        }
        for r in records
    ]
    print(table(rows, ["backbone", "dataset", "protocol", "seed", "status", "metric", "value", "run_key"]))
    return 0


def _battle_row(b) -> dict[str, Any]:
    return {
        "id": b.id,
        "name": b.name,
        "owner": b.owner or None,
        "state": _state_name(b.state).removeprefix("BATTLE_STATE_").lower(),
        "total": b.counts.total,
        "finished": b.counts.finished,
        "failed": b.counts.failed,
        "created": b.created_at.ToJsonString() if b.HasField("created_at") else None,
    }


def cmd_get(args: argparse.Namespace) -> int:
    with _scheduler_client(args) as client:
        battle = client.get(args.battle_id)
    print_json({**_battle_row(battle), "error": battle.error or None, "counts": _counts(battle.counts)})
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _scheduler_client(args) as client:
        rows = [_battle_row(b) for b in client.list()]
    print(table(rows, ["id", "name", "owner", "state", "total", "finished", "failed", "created"]))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _scheduler_client(args) as client:
        battle = client.cancel(args.battle_id, args.reason)
    print(f"battle {battle.id}: {_state_name(battle.state).removeprefix('BATTLE_STATE_').lower()}")
    return 0
