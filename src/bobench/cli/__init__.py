"""The `bob` command: a thin adapter over the library. Subcommands live in sibling modules, each with
`register(subparsers)`; they parse, call one library function, and print."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bobench import __version__
from bobench.errors import BobenchError, DeadlineExceeded, Unavailable

COMMAND_MODULES = (
    "backbones",
    "datasets",
    "protocols",
    "battle",
    "analysis",
    "export",
    "publish",
    "serve",
    "finetune",
    "jobs",
    "remote",
    "auth",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bob",
        description="bobench: put vision backbones through the Battle of the Backbones.",
    )
    parser.add_argument("--version", action="version", version=f"bobench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--config", metavar="FILE", help="settings file (YAML); env BOBENCH_CONFIG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"bobench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bobench.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if verbose < 2:
        for noisy in (
            "matplotlib",
            "PIL",
            "urllib3",
            "torch.onnx",
            "onnxscript",
            "filelock",
            "faiss",
            "faiss.loader",
        ):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    try:
        from bobench.plugins import load_plugins

        load_plugins()
        return int(args.func(args) or 0)
    except (Unavailable, DeadlineExceeded) as exc:  # transient: 1, not the config-error code 2 that
        print(f"bob: error: {exc}", file=sys.stderr)  # makes a publish Job fail at once for good
        return 1
    except BobenchError as exc:
        print(f"bob: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bob: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
