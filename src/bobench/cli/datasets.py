"""`bob datasets list`."""

from __future__ import annotations

import argparse

from bobench.cli.common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the bundled datasets")
    s = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="named datasets (use imagefolder/manifest refs for your own)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from bobench.data import list_datasets

    rows = list_datasets()
    if args.json:
        print_json(rows)
    else:
        cols = [
            c for c in ("name", "task", "classes", "size", "source", "licence") if any(c in r for r in rows)
        ]
        print(table(rows, cols))
    return 0
