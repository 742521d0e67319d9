"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from bobench.config import Settings, load_settings
from bobench.exit_codes import BROKEN_PIPE

# the Settings fields that add_settings_flags' flags set (dest = field name)
SETTINGS_FLAGS = (
    "embedder",
    "cache_dir",
    "batch_size",
    "threads",
    "triton_url",
    "device",
    "recompute_features",
)


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override settings (CLI > env BOBENCH_* > config file > defaults). `--embedder`
    offers every registered runtime, plugins' included: build the parser after `load_plugins`."""
    from bobench.embed import runtime_names

    p.add_argument("--embedder", choices=runtime_names(), help="embedding runtime (env BOBENCH_EMBEDDER)")
    p.add_argument("--cache-dir", help="feature/model cache (env BOBENCH_CACHE_DIR)")
    p.add_argument("--batch-size", type=int, help="embedding batch size")
    p.add_argument("--threads", type=int, help="intra-op threads (0 = library default)")
    p.add_argument("--triton-url", help="Triton gRPC address for --embedder triton")
    p.add_argument(
        "--device",
        help="torch device for --embedder torch and training protocols: cpu, cuda, cuda:1 (gpu = cuda); "
        "a CUDA device on a machine without CUDA is refused (env BOBENCH_DEVICE)",
    )
    p.add_argument(
        "--recompute",
        dest="recompute_features",
        action="store_const",
        const=True,
        help="compute every feature again instead of reading the cache, and re-run finished runs "
        "(env BOBENCH_RECOMPUTE_FEATURES)",
    )
    p.set_defaults(settings_flags=True)


def settings_from(args: argparse.Namespace, spec: dict[str, Any] | None = None) -> Settings:
    """This command's Settings, resolved once (and handed to the data context): its settings flags
    > BOBENCH_* environment > `spec` (a battle spec's `embedder`/`settings`, ranked like the file,
    just above it) > the --config file > defaults. A command with the settings flags (it runs
    models) has its device checked: CUDA asked for where there is none is an InvalidArgument."""
    from bobench.config import check_device
    from bobench.data import configure
    from bobench.embed import runtime_names

    runs_models = getattr(args, "settings_flags", False)  # else e.g. `bob finetune --device` is its recipe's
    cli = {k: getattr(args, k, None) for k in SETTINGS_FLAGS} if runs_models else {}
    cli["cache_dir"] = getattr(args, "cache_dir", None)  # the same setting wherever a command offers it
    settings = load_settings(getattr(args, "config", None), spec=spec, runtimes=runtime_names(), **cli)
    if runs_models:
        settings = dataclasses.replace(settings, device=check_device(settings.device))
    configure(settings)  # s3:// dataset refs read through these store settings
    return settings


def quiet_broken_pipe() -> int:
    """The reader of standard output went away (`bob backbones list --json | head`): stop quietly.

    Points stdout at /dev/null so the interpreter's final flush does not fail again ("Exception
    ignored ... BrokenPipeError"), and returns BROKEN_PIPE.
    """
    # stdout that is not a file (captured by a test, already closed) has nothing to redirect
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return BROKEN_PIPE


def out_dir(value: str) -> str:
    """argparse `type` of an output-directory flag: `value` may be missing (it is created) or a
    directory, never a file (or under one). ArgumentTypeError says so before any work starts."""
    path = Path(value)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                what = "is a file" if existing == path else f"is under {existing}, which is a file"
                raise argparse.ArgumentTypeError(
                    f"{value} {what}; give a directory (it is created if missing)"
                )
            break
    return value


SHORT_CONFIG_CHARS = 60


def short_config(protocol: str, config: dict[str, Any]) -> str:
    """A run's config for a one-line summary: the `key=value` pairs that differ from the protocol's
    defaults ("defaults" when none do; every pair for an unknown protocol), cut to SHORT_CONFIG_CHARS."""
    from bobench.errors import BobenchError
    from bobench.protocols import get_protocol

    try:
        defaults = get_protocol(protocol).defaults
    except BobenchError:
        defaults = {}

    def text(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)

    changed = [
        f"{k}={text(v)}" for k, v in config.items() if k not in defaults or text(defaults[k]) != text(v)
    ]
    shown = " ".join(changed) or "defaults"
    return shown if len(shown) <= SHORT_CONFIG_CHARS else shown[: SHORT_CONFIG_CHARS - 3] + "..."


def run_title(record: Any) -> str:
    """`backbone · dataset · protocol · seed N · config` of a run record (progress and summary lines)."""
    return (
        f"{record.backbone} · {record.dataset} · {record.protocol} · seed {record.seed} · "
        f"{short_config(record.protocol, record.config)}"
    )


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(rows: list[dict[str, Any]], columns: list[str], headers: list[str] | None = None) -> str:
    """A plain aligned text table (no colours, safe in pipes and CI logs)."""
    headers = headers or columns
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v / 1e6:.2f}M"
    return str(v)
