"""`bob battle run`: plan a spec, skip finished run keys, execute the rest, append records, report.

Before the runs, the battle-level latency step (`battle.latency_step`) times the efficiency runs
that share this host interleaved and hands each its figures (embedded mode: a `LocalExecutor`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bobench.battle.executors.base import Executor
from bobench.battle.executors.local import LocalExecutor
from bobench.battle.latency_step import measure_battle_latency
from bobench.battle.plan import plan_battle
from bobench.battle.spec import BattleSpec
from bobench.config import Settings
from bobench.protocols.efficiency import handed_latency
from bobench.results import RunRecord, append_record, read_records
from bobench.stage_timer import stage

log = logging.getLogger(__name__)


@dataclass
class BattleOutcome:
    records: list[RunRecord] = field(default_factory=list)  # every run of the spec, reused or new
    executed: int = 0
    reused: int = 0
    failed: int = 0
    wall_s: float = 0.0
    report: dict[str, Path] = field(default_factory=dict)


class _Bars:
    """tqdm progress bars: one for runs, one (transient) for feature extraction."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.enabled = enabled
        self.runs = tqdm(total=total, desc="runs", unit="run", disable=not enabled, file=sys.stderr)
        self.inner = None
        self._label = None

    def feature(self, done: int, total: int, message: str = "") -> None:
        if not self.enabled:
            return
        if self.inner is None or message != self._label:
            if self.inner is not None:
                self.inner.close()
            self.inner = self._tqdm(total=total, desc=f"  {message}", unit="", leave=False, file=sys.stderr)
            self._label = message
        self.inner.n = done
        self.inner.refresh()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        self.runs.close()


def _reusable(prior: RunRecord | None, recompute: bool, rerun_failed: bool) -> bool:
    return prior is not None and not recompute and (prior.finished or not rerun_failed)


def write_battle_files(spec: BattleSpec, out_dir: Path, settings: Settings) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (out_dir / "config.json").write_text(json.dumps(settings.to_dict(), indent=2, sort_keys=True))


def run_battle(
    spec: BattleSpec,
    out_dir: str | Path,
    settings: Settings,
    *,
    executor: Executor | None = None,
    progress: bool | None = None,
    rerun_failed: bool = True,
    on_record: Callable[[RunRecord], None] | None = None,
) -> BattleOutcome:
    """Run every run of `spec` not already finished in `out_dir/results.jsonl`.

    Finished keys are reused (all re-run with `settings.recompute_features`); failed ones are retried
    when `rerun_failed`. `on_record` is called with each newly executed record. Returns what
    happened; the records of the whole spec are in `outcome.records`.
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    with stage("plan"):
        plans = plan_battle(spec)
    write_battle_files(spec, out, settings)
    existing = {r.run_key: r for r in read_records(out)}
    outcome = BattleOutcome()
    own_executor = executor is None
    executor = executor or LocalExecutor(settings)
    show = sys.stderr.isatty() if progress is None else progress
    bars = _Bars(len(plans), show)
    reusable = {
        p.run_key
        for p in plans
        if _reusable(existing.get(p.run_key), settings.recompute_features, rerun_failed)
    }
    try:
        to_run = [p for p in plans if p.run_key not in reusable]
        executor.plan_ahead(to_run)
        with stage("efficiency_latency_step"):
            measured = measure_battle_latency(executor, to_run)
        with handed_latency(measured):
            for plan in plans:
                if plan.run_key in reusable:
                    outcome.records.append(existing[plan.run_key])
                    outcome.reused += 1
                    bars.runs.update(1)
                    continue
                bars.runs.set_postfix_str(f"{plan.backbone} · {plan.dataset} · {plan.protocol}", refresh=True)
                record = executor.execute(plan, progress=bars.feature)
                append_record(out, record)
                outcome.records.append(record)
                outcome.executed += 1
                outcome.failed += int(not record.finished)
                if on_record is not None:
                    on_record(record)
                bars.runs.update(1)
    finally:
        bars.close()
        if own_executor:
            executor.close()
    outcome.wall_s = time.perf_counter() - t0
    log.info(
        "battle %s: %d runs (%d executed, %d reused, %d failed) in %.1f s",
        spec.name,
        len(plans),
        outcome.executed,
        outcome.reused,
        outcome.failed,
        outcome.wall_s,
    )
    return outcome
