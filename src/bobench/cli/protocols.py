"""`bob protocols list` and `bob protocols show NAME`."""

from __future__ import annotations

import argparse
import json

from bobench.cli.common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protocols", help="list the evaluation protocols and their defaults")
    s = p.add_subparsers(dest="protocols_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="name, task, primary metric, version and default config")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    show = s.add_parser("show", help="one protocol: task, version, metrics, config keys and their defaults")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)


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


def protocol_details(name: str) -> dict:
    """What `bob protocols show` prints: the registered metadata, no evaluation code."""
    from bobench.protocols import get_protocol

    p = get_protocol(name)  # an unknown name is InvalidArgument with close matches
    return {
        "name": p.name,
        "version": p.version,
        "task": p.task,
        "description": p.description,
        "primary_metric": p.primary_metric,
        "higher_is_better": dict(p.higher_is_better),
        "seeded": p.seeded,
        "needs_features": p.needs_features,
        "config": dict(p.defaults),
    }


def cmd_show(args: argparse.Namespace) -> int:
    details = protocol_details(args.name)
    if args.json:
        print_json(details)
        return 0
    for key in ("name", "version", "task", "primary_metric", "seeded", "needs_features"):
        print(f"{key + ':':16} {details[key]}")
    if details["description"]:
        print(f"{'description:':16} {details['description']}")
    for label, wanted in (("higher better:", True), ("lower better:", False)):
        metrics = [m for m, hib in details["higher_is_better"].items() if hib is wanted]
        if metrics:
            print(f"{label:16} {', '.join(metrics)}")
    print("config (key: default; set them under the protocol's config: in a battle spec):")
    for key, value in details["config"].items():
        print(f"  {key}: {json.dumps(value)}")
    if not details["config"]:
        print("  (none)")
    return 0
