"""`bob serve embedder ...`: the Triton embedder service.

Same flags as `python -m bobench.serving.embedder_service`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from bobench.serving.embedder_service import add_arguments

    p = sub.add_parser("serve", help="run a service in the foreground")
    s = p.add_subparsers(dest="serve_command", metavar="SERVICE", required=True)
    emb = s.add_parser(
        "embedder",
        help="Triton on a generated model repository (port 0 = pick; the ports are printed as one JSON line)",
    )
    add_arguments(emb)
    emb.set_defaults(func=cmd_embedder)


def cmd_embedder(args: argparse.Namespace) -> int:
    from bobench.serving.embedder_service import run

    return run(args)
