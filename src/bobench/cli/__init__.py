"""The `bob` command: a thin adapter over the library. Subcommands live in sibling modules, each with
`register(subparsers)`; they parse, call one library function, and print."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bobench import __version__
from bobench.cli.common import quiet_broken_pipe
from bobench.errors import BobenchError
from bobench.exit_codes import USAGE_ERROR, report_exit
from bobench.logs import setup_logging as setup_process_logging

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
        importlib.import_module(f"bobench.cli.{name}").register(sub)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    """-q: errors only (warnings such as a probe's grid-edge one are silenced, Python warnings
    included); default: info; -v: debug logs of bobench; -vv: debug logs of every library. The format
    is the one of every front end (`bobench.logs`)."""
    if quiet:
        level = logging.ERROR
    else:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    setup_process_logging(level, quiet_libraries=verbose < 2)
    logging.captureWarnings(True)  # warnings.warn goes through logging, so -q silences it too
    logging.getLogger("bobench").setLevel(logging.DEBUG if verbose and not quiet else logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    try:
        from bobench.plugins import load_plugins

        load_plugins()  # before the parser: plugins may add runtimes (--embedder choices) and names
    except BobenchError as exc:
        return report_exit(exc, "bob")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE_ERROR
    args.verbose += getattr(args, "sub_verbose", 0)
    setup_logging(args.verbose, args.quiet)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left early (`| head`) shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except (BobenchError, KeyboardInterrupt) as exc:  # one line and the code of bobench.exit_codes
        return report_exit(exc, "bob")


if __name__ == "__main__":
    sys.exit(main())
