"""`bob battle`: `run SPEC --out DIR` (embedded) here; the remote actions (submit, watch, ...) are
added to this group by cli/remote.py's `register_battle_actions`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bobench.cli.common import add_settings_flags, out_dir, run_title, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("battle", help="run or submit a battle (backbones x datasets x protocols x seeds)")
    s = p.add_subparsers(dest="battle_command", metavar="ACTION", required=True)
    run = s.add_parser("run", help="run a battle spec in this process (embedded mode)")
    run.add_argument("spec", help="battle spec (YAML)")
    run.add_argument(
        "-o", "--out", required=True, type=out_dir, help="output directory (results.jsonl, report)"
    )
    add_settings_flags(run)
    run.add_argument("--no-report", action="store_true", help="skip writing report.html/report.md")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--keep-failed", action="store_true", help="do not retry runs that failed before")
    run.add_argument(
        "--max-latency-ms", type=float, help="recommendation limit (overrides the spec's recommend:)"
    )
    run.add_argument(
        "--max-params", type=float, help="recommendation limit (overrides the spec's recommend:)"
    )
    run.set_defaults(func=cmd_run)
    from bobench.cli.remote import register_battle_actions

    register_battle_actions(s)  # submit, watch, results, get, list, cancel: against a scheduler


def cmd_run(args: argparse.Namespace) -> int:
    from bobench.battle.runner import run_battle
    from bobench.battle.spec import load_spec

    spec = load_spec(args.spec)
    settings = settings_from(args, spec={"embedder": spec.embedder, **spec.settings})
    out = Path(args.out)
    outcome = run_battle(
        spec,
        out,
        settings,
        progress=False if args.no_progress else None,
        rerun_failed=not args.keep_failed,
        on_record=_print_record,
    )
    print(
        f"battle {spec.name!r}: {len(outcome.records)} runs — {outcome.executed} executed, "
        f"{outcome.reused} reused from {out / 'results.jsonl'}, {outcome.failed} failed ({outcome.wall_s:.1f} s)"
    )
    print_leaderboard(outcome.records)
    if spec.report and not args.no_report:
        from bobench.analysis.report import write_report
        from bobench.analysis.selection import Selection

        scope = f"battle {spec.name!r}: the {len(outcome.records)} runs of its plan (history stays in results.jsonl)"
        paths = write_report(
            out,
            selection=Selection(outcome.records, scope),
            limits=report_limits(args, spec),
            prices=settings.price_per_hour,
        )
        print(f"report: {paths['report.html']}  (also report.md, plots/*.png)")
    failed = [r for r in outcome.records if r.status == "failed"]
    for r in failed[:10]:
        print(f"FAILED {r.backbone} / {r.dataset} / {r.protocol}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def report_limits(args: argparse.Namespace, spec) -> dict[str, float]:
    """The report's recommendation limits: the spec's `recommend:` mapping, overridden by the CLI."""
    cli = {"max_latency_ms": args.max_latency_ms, "max_params": args.max_params}
    return {**spec.recommend, **{k: v for k, v in cli.items() if v is not None}}


def _print_record(record) -> None:
    """One line per finished run, written above the progress bars."""
    from tqdm.auto import tqdm

    where = run_title(record)
    if record.status == "finished":
        value = record.metrics.get(record.primary_metric)
        shown = (
            f"{record.primary_metric}={value:.4g}" if isinstance(value, int | float) else "no primary metric"
        )
        tqdm.write(f"  ok    {where}: {shown} ({record.duration_s:.1f} s)")
    else:
        tqdm.write(f"  FAIL  {where}: {record.error}")


def print_leaderboard(records: list) -> None:
    from bobench.analysis import analyze, format_leaderboard

    finished = [r for r in records if r.status == "finished"]
    if finished:
        print()
        print(format_leaderboard(analyze(finished)))
