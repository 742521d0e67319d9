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


def add_global_flags(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-v, -q and --config, on the top-level parser (`bob -q battle run ...`) and on every subcommand
    (`bob battle run SPEC -q`): a subcommand's copy has no default (SUPPRESS), so it only overrides
    what was given before the subcommand; -v counts go to their own dest and are added up."""
    default = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument(
        "-v",
        "--verbose",
        dest="verbose" if top else "sub_verbose",
        action="count",
        **({"default": 0} if top else default),
        help="debug logs of bobench (-vv: of the libraries it uses too)",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="only errors: no info or warning logs", **default
    )
    p.add_argument("--config", metavar="FILE", help="settings file (YAML); env BOBENCH_CONFIG", **default)


class BobParser(argparse.ArgumentParser):
    """The `bob` parser class: subparsers are made of the parser's class, so every (sub)command
    gets the global flags."""

    def __init__(self, *args, top: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        add_global_flags(self, top=top)


def build_parser() -> argparse.ArgumentParser:
    """The `bob` parser; call it after `load_plugins` (choices such as --embedder list plugins' names)."""
    parser = BobParser(
        prog="bob",
        description="bobench: put vision backbones through the Battle of the Backbones.",
        top=True,
    )
    parser.add_argument("--version", action="version", version=f"bobench {__version__}")
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


NOISY_LOGGERS = (
    "matplotlib",
    "PIL",
    "urllib3",
    "torch.onnx",
    "onnxscript",
    "filelock",
    "faiss",
    "faiss.loader",
)


def setup_logging(verbose: int, quiet: bool) -> None:
    """-q: errors only (warnings such as a probe's grid-edge one are silenced, Python warnings
    included); default: info; -v: debug logs of bobench; -vv: debug logs of every library."""
    if quiet:
        level = logging.ERROR
    else:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger().setLevel(level)  # basicConfig keeps an earlier level (tests, an embedding host)
    logging.captureWarnings(True)  # warnings.warn goes through logging, so -q silences it too
    logging.getLogger("bobench").setLevel(logging.DEBUG if verbose and not quiet else logging.NOTSET)
    if verbose < 2:
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    try:
        from bobench.plugins import load_plugins

        load_plugins()  # before the parser: plugins may add runtimes (--embedder choices) and names
    except BobenchError as exc:
        print(f"bob: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.verbose += getattr(args, "sub_verbose", 0)
    setup_logging(args.verbose, args.quiet)
    try:
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
