"""`bob backbones list|show`."""

from __future__ import annotations

import argparse
from typing import Any

from bobench.cli.common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list and inspect registered backbones")
    s = p.add_subparsers(dest="backbones_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="the catalog, marking which backbones have weights available here")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument(
        "--available", action="store_true", help="only backbones whose weights are available here"
    )
    ls.set_defaults(func=cmd_list)
    show = s.add_parser("show", help="one backbone's full spec")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    rows = backbone_table()
    if args.available:
        rows = [r for r in rows if r.get("available")]
    if args.json:
        print_json(rows)
        return 0
    cols = ["name", "family", "method", "data", "params", "input_size", "embed_dim", "weights", "available"]
    print(
        table(
            rows, cols, ["name", "family", "method", "data", "params", "size", "dim", "weights", "available"]
        )
    )
    n_avail = sum(bool(r.get("available")) for r in rows)
    print(f"\n{len(rows)} backbones, {n_avail} with weights available here")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bobench.backbones import get_spec
    from bobench.backbones.weights import weights_available

    spec = get_spec(args.name)
    print_json({**spec.to_dict(), "available": weights_available(spec), "digest": spec.digest()})
    return 0


def backbone_table() -> list[dict[str, Any]]:
    """One row per backbone for `bob backbones list` (params and embed dim as declared; None if unknown)."""
    from bobench.backbones import list_specs
    from bobench.backbones.weights import weights_available, weights_source

    return [
        {
            "name": s.name,
            "family": s.family,
            "method": s.pretraining_method,
            "data": s.pretraining_data,
            "params": s.num_params,
            "input_size": s.input_size,
            "embed_dim": s.embed_dim,
            "weights": weights_source(s),
            "available": weights_available(s),
        }
        for s in list_specs()
    ]
