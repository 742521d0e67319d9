"""`bob report DIR`, `bob analyze [DIR]`, `bob results export DIR --csv`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bobench.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="write report.html + report.md (+ PNG plots) for a results directory")
    rep.add_argument("results_dir")
    rep.add_argument("--out", help="where to write (default: the results directory)")
    rep.add_argument("--external", action="append", default=[], metavar="CSV", help="merge external scores")
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
    an.add_argument("--json", action="store_true", help="print JSON: {overall: [...], per_task: {...}}")
    an.add_argument("--min-coverage", type=float, default=None, help="share of settings a backbone needs")
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


def _records(results_dir: str | None) -> list:
    from bobench.battle.records import read_records
    from bobench.errors import InvalidArgument

    if results_dir is None:
        return []
    path = Path(results_dir)
    if not (path / "results.jsonl").exists() and not path.is_file():
        raise InvalidArgument(f"{path}: no results.jsonl here (run `bob battle run SPEC --out {path}` first)")
    return read_records(path)


def cmd_report(args: argparse.Namespace) -> int:
    from bobench.analysis.report import write_report

    _records(args.results_dir)
    paths = write_report(Path(args.results_dir), out_dir=args.out, external=args.external)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from bobench.analysis import analyze, format_leaderboard, load_external_csv
    from bobench.errors import InvalidArgument

    if not args.results_dir and not args.external:
        raise InvalidArgument("give a results directory and/or --external CSV")
    records = _records(args.results_dir)  # analysis ranks finished runs and lists the failed ones
    kwargs = {} if args.min_coverage is None else {"min_coverage": args.min_coverage}
    external = [row for path in args.external for row in load_external_csv(path)]
    result = analyze(records, external=external, **kwargs)
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
