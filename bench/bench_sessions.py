"""Work done once per backbone: ONNX exports, export verifications and ORT session opens of a battle.

Runs one spec cold twice in this process, each time with a fresh, empty cache: "before" with the
embedder policy the executor had until issue 13 (the battle-level latency step opened fresh
embedders and closed them again before the runs, which then opened their own: `FreshEmbedders`
below reproduces it), "after" with today's `LocalExecutor` (the latency step opens the embedders the
runs then take over: one session per backbone). Then, with `--warm`, the "after" battle a second
time on the warm export cache with `recompute_features`, so every run embeds again: nothing may be
exported or verified, one session per backbone is opened.

Counts come from `bobench.stage_timer` counters (`onnx_exports:NAME`, `onnx_verifications:NAME`,
`onnx_export_cache_hits:NAME`, `ort_sessions:NAME`; verification's own session is not counted as a
session open) and the entries of the `backbone_load` stage. It prints counts only, no timings:
the default spec (a toy net and ResNet-18 with random weights on the synthetic `toy` set) takes
seconds; `--spec examples/offline-battle.yaml` counts the demo (minutes per pass).

Run: python bench/bench_sessions.py [--spec SPEC] [--warm]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bobench import stage_timer
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.runner import run_battle
from bobench.battle.spec import BattleSpec, load_spec, parse_spec
from bobench.config import Settings

KINDS = ("onnx_exports", "onnx_verifications", "onnx_export_cache_hits", "ort_sessions")
EFFICIENCY = {"batch_sizes": [1], "warmup_steps": 1, "timed_steps": 3, "min_time_s": 0.0, "flops": False}
DEFAULT_SPEC = {
    "name": "bench-sessions",
    "backbones": ["toy", "resnet18-random"],
    "datasets": ["toy"],
    "protocols": ["knn", "linear_probe", {"name": "efficiency", "config": EFFICIENCY}],
    "seeds": [0],
    "report": False,
}


class FreshEmbedders(LocalExecutor):
    """The policy before issue 13: the latency step's embedders are fresh ones, closed before the
    first run, which opens its own."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._step_embedders: list[Any] = []

    def prepared_embedder(self, spec: Any, embedder_variant: str = "onnx"):
        embedder = self.new_embedder(spec, embedder_variant)
        self._step_embedders.append(embedder)
        return embedder

    def execute(self, plan, progress=None):
        step, self._step_embedders = self._step_embedders, []
        for embedder in step:
            embedder.close()
        return super().execute(plan, progress)


def session_counts(table: stage_timer.StageTable) -> dict[str, dict[str, int]]:
    """{backbone: {kind: count}} from a recording's counters."""
    out: dict[str, dict[str, int]] = {}
    for name, count in table.counts.items():
        kind, _, backbone = name.partition(":")
        if kind in KINDS and backbone:
            out.setdefault(backbone, dict.fromkeys(KINDS, 0))[kind] += count
    return out


def print_session_counts(tables: dict[str, stage_timer.StageTable]) -> None:
    """One row per backbone and pass: exports, verifications, export-cache hits, session opens."""
    print(f"{'backbone':<32} {'pass':<8} {'exports':>8} {'verified':>9} {'cache hit':>10} {'sessions':>9}")
    counts = {label: session_counts(table) for label, table in tables.items()}
    backbones = sorted({b for per_pass in counts.values() for b in per_pass})
    for backbone in backbones:
        for label in tables:
            row = counts[label].get(backbone, dict.fromkeys(KINDS, 0))
            print(f"{backbone:<32} {label:<8} " + " ".join(
                f"{row[k]:>{w}}" for k, w in zip(KINDS, (8, 9, 10, 9), strict=True)
            ))  # fmt: skip
    for label, table in tables.items():
        print(
            f"{label}: backbone loads (entries of the backbone_load stage) {table.entries.get('backbone_load', 0)}"
        )


def _run(spec: BattleSpec, cache: Path, out: Path, executor_class: type[LocalExecutor], **settings: Any):
    """One battle of `spec` into `out` on `cache` under a stage recording; its table."""
    config = Settings(cache_dir=str(cache), **settings)
    executor = executor_class(config)
    try:
        with stage_timer.recording() as table:
            outcome = run_battle(spec, out, config, executor=executor, progress=False)
    finally:
        executor.close()
    failed = [r for r in outcome.records if not r.finished]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed, e.g. {failed[0].error}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=None, help="battle spec (default: a toy spec)")
    parser.add_argument("--warm", action="store_true", help="also re-run 'after' on the warm export cache")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    spec = load_spec(args.spec) if args.spec else parse_spec(DEFAULT_SPEC)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    try:
        before, after = tmp / "before", tmp / "after"
        tables = {
            "before": _run(spec, before / "cache", before / "out", FreshEmbedders, threads=args.threads)
        }
        tables["after"] = _run(spec, after / "cache", after / "out", LocalExecutor, threads=args.threads)
        if args.warm:  # the same cache, every feature computed again
            tables["warm"] = _run(
                spec,
                after / "cache",
                after / "warm",
                LocalExecutor,
                threads=args.threads,
                recompute_features=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    passes = "before and after cold (fresh caches)" + (", warm: after's export cache" if args.warm else "")
    print(f"spec {args.spec or 'toy + resnet18-random on toy (knn, linear_probe, efficiency)'}: {passes}")
    print_session_counts(tables)


if __name__ == "__main__":
    main()
