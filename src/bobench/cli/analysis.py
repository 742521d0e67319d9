"""`bob report DIR`, `bob analyze [DIR]`, `bob results export DIR --csv`.

`report` and `analyze` cover every record in DIR/results.jsonl by default (`--all`); `--latest` takes
the plan of the battle last run into DIR (its spec.yaml), `--battle SPEC|ID` a spec file's plan or a
scheduler battle id (see `bobench.analysis.selection`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bobench.cli.common import out_dir, print_json


def register(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="write report.html + report.md (+ PNG plots) for a results directory")
    rep.add_argument("results_dir")
    rep.add_argument(
        "-o",
        "--out",
        type=out_dir,
        help="directory for report.html, report.md, analysis.json, runs.csv and plots/ "
        "(created if missing; default: RESULTS_DIR/report)",
    )
    rep.add_argument("--external", action="append", default=[], metavar="CSV", help="merge external scores")
    add_selection_flags(rep)
    rep.add_argument("--max-latency-ms", type=float, help="your latency limit for the recommendations")
    rep.add_argument("--max-params", type=float, help="your parameter-count limit for the recommendations")
    rep.add_argument(
        "--max-cost-per-million", type=float, help="your budget, $ per million images (needs price_per_hour)"
    )
    rep.add_argument("--min-qps", type=float, help="the Server-scenario QPS a backbone must sustain")
    rep.add_argument("--max-p99-ms", type=float, help="the p99 bound for --min-qps (default 30 ms)")
    rep.set_defaults(func=cmd_report)

    an = sub.add_parser("analyze", help="print overall and per-task rankings (BoB z-score aggregation)")
    an.add_argument("results_dir", nargs="?", help="results directory (optional with --external)")
    an.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="CSV",
        help="long CSV: backbone,task,dataset,protocol,metric,value,higher_is_better",
    )
    an.add_argument(
        "--json",
        action="store_true",
        help="print JSON: {overall: [...], per_task: {...}, ood_mce: {setting: {...}}, ...}",
    )
    an.add_argument("--min-coverage", type=float, default=None, help="share of settings a backbone needs")
    add_selection_flags(an)
    an.set_defaults(func=cmd_analyze)

    res = sub.add_parser("results", help="work with stored run records")
    rs = res.add_subparsers(dest="results_command", metavar="ACTION", required=True)
    ex = rs.add_parser("export", help="export one row per run")
    ex.add_argument("results_dir")
    ex.add_argument("--csv", action="store_true", help="CSV output (the only format, and the default)")
    ex.add_argument(
        "-o", "--out", help="file to write, or - for standard output (default: RESULTS_DIR/results.csv)"
    )
    ex.set_defaults(func=cmd_export)


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", dest="select_all", action="store_true", help="every record (the default)")
    which.add_argument(
        "--latest", action="store_true", help="the plan of the battle last run into the directory"
    )
    which.add_argument("--battle", metavar="SPEC|ID", help="a battle spec's plan, or a scheduler battle id")
    p.add_argument(
        "--task-map",
        choices=("records", "bob"),
        default="records",
        help="records: each run's task (default); bob: linear probe and fine-tune are classification",
    )


def _select(args: argparse.Namespace, records: list):
    from bobench.analysis import selection

    where = Path(args.results_dir)
    if args.latest:
        return selection.select_latest(records, where if where.is_dir() else where.parent)
    if args.battle:
        return selection.select_battle(records, args.battle)
    return selection.select_all(records, where)


def _records(results_dir: str | None) -> list:
    from bobench.errors import InvalidArgument
    from bobench.results import read_records, results_path

    if results_dir is None:
        return []
    path = Path(results_dir)
    if not results_path(path).is_file():
        raise InvalidArgument(f"{path}: no results.jsonl here (run `bob battle run SPEC --out {path}` first)")
    return read_records(path)


def cmd_report(args: argparse.Namespace) -> int:
    from bobench.analysis.report import write_report
    from bobench.cli.common import settings_from

    chosen = _select(args, _records(args.results_dir))
    paths = write_report(
        Path(args.results_dir),
        out_dir=args.out,
        external=args.external,
        selection=chosen,
        task_map=args.task_map,
        limits={
            "max_latency_ms": args.max_latency_ms,
            "max_params": args.max_params,
            "max_cost_per_million": args.max_cost_per_million,
            "min_server_qps": args.min_qps,
            "max_server_p99_ms": args.max_p99_ms,
        },
        prices=settings_from(args).price_per_hour,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from bobench.analysis import analyze, format_leaderboard, load_external_csv
    from bobench.errors import InvalidArgument

    if not args.results_dir and not args.external:
        raise InvalidArgument("give a results directory and/or --external CSV")
    records = _records(args.results_dir)  # analysis ranks finished runs and lists the failed ones
    if args.results_dir:
        records = _select(args, records).records
    kwargs = {} if args.min_coverage is None else {"min_coverage": args.min_coverage}
    external = [row for path in args.external for row in load_external_csv(path)]
    result = analyze(records, external=external, task_map=args.task_map, **kwargs)
    if args.json:
        print_json(result.to_json())
    else:
        print(format_leaderboard(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bobench.analysis import export_csv

    records = _records(args.results_dir)
    if args.out == "-":
        import sys
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            sys.stdout.write(export_csv(records, Path(tmp) / "results.csv").read_text())
        return 0
    out = Path(args.out) if args.out else Path(args.results_dir) / "results.csv"
    export_csv(records, out)
    print(f"wrote {len(records)} rows to {out}")
    return 0
