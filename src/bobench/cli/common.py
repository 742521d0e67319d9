"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bobench.config import Settings, load_settings


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override settings (CLI > env BOBENCH_* > config file > defaults)."""
    p.add_argument("--embedder", choices=("onnxruntime", "torch", "triton"), help="embedding runtime")
    p.add_argument("--cache-dir", help="feature/model cache (env BOBENCH_CACHE_DIR)")
    p.add_argument("--batch-size", type=int, help="embedding batch size")
    p.add_argument("--threads", type=int, help="intra-op threads (0 = library default)")
    p.add_argument("--triton-url", help="Triton gRPC address for --embedder triton")
    p.add_argument("--device", help="torch device for --embedder torch (cpu, cuda, cuda:1)")
    p.add_argument(
        "--recompute",
        dest="recompute_features",
        action="store_const",
        const=True,
        help="compute every feature again instead of reading the cache, and re-run finished runs "
        "(env BOBENCH_RECOMPUTE_FEATURES)",
    )


def settings_from(args: argparse.Namespace, **spec_values: Any) -> Settings:
    """Resolve this command's settings (and hand them to the data context). `spec_values` (e.g. a battle spec's `settings`) rank like a config file: below
    CLI flags and BOBENCH_* environment variables, above the settings file and the defaults."""
    import os

    from bobench.config import ENV_PREFIX

    cli = {
        k: getattr(args, k, None)
        for k in ("embedder", "cache_dir", "batch_size", "threads", "triton_url", "recompute_features")
    }
    for key, value in spec_values.items():
        if value is not None and cli.get(key) is None and (ENV_PREFIX + key.upper()) not in os.environ:
            cli[key] = value
    from bobench.data import configure

    settings = load_settings(getattr(args, "config", None), **cli)
    configure(settings)  # s3:// dataset refs read through these store settings
    return settings


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
