"""`bob protocols list`."""

from __future__ import annotations

import argparse

from bobench.cli.common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protocols", help="list the evaluation protocols and their defaults")
    s = p.add_subparsers(dest="protocols_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="name, task, primary metric, version and default config")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from bobench.protocols import PROTOCOLS

    rows = [
        {"name": name, "task": p.task, "primary_metric": p.primary_metric, "version": p.version,
         "defaults": p.defaults}
        for name, p in PROTOCOLS.items()
    ]  # fmt: skip
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        row["defaults"] = ", ".join(f"{k}={v}" for k, v in row["defaults"].items())
    print(table(rows, ["name", "task", "primary_metric", "version", "defaults"]))
    return 0
