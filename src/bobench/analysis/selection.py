"""Which records a report covers: all of results.jsonl, one battle's plan, or the latest battle.

results.jsonl keeps the history of every battle run into a directory; a report covers a chosen part:

- `all`: every record (the last line per run key);
- `latest`: the runs of the plan of the battle last run into the directory (its `spec.yaml`);
- `battle`: the runs of the plan of a spec file, or the records whose `battle` field is that id
  (battles submitted to the scheduler carry their id).

Errors: NotFound when the selection is empty or `latest` finds no spec.yaml; the spec's own
InvalidArgument when it does not parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bobench.errors import NotFound
from bobench.results import RunRecord


@dataclass(frozen=True)
class Selection:
    """The chosen records and a sentence saying what they are (printed at the top of the report)."""

    records: list[RunRecord]
    scope: str


def select_all(records: list[RunRecord], source: Path) -> Selection:
    return Selection(records, f"every record in {source} ({len(records)} runs)")


def select_plan(records: list[RunRecord], spec_path: Path) -> Selection:
    """The records of the runs `spec_path` plans (run keys), in plan order."""
    from bobench.battle.plan import plan_battle
    from bobench.battle.spec import load_spec

    spec = load_spec(spec_path)
    keys = [p.run_key for p in plan_battle(spec)]
    by_key = {r.run_key: r for r in records}
    chosen = [by_key[k] for k in keys if k in by_key]
    if not chosen:
        raise NotFound(f"none of the {len(keys)} runs planned by {spec_path} has a record here")
    return Selection(chosen, f"battle {spec.name!r}: {len(chosen)} of the {len(keys)} runs its plan holds")


def select_latest(records: list[RunRecord], results_dir: Path) -> Selection:
    spec = results_dir / "spec.yaml"
    if not spec.is_file():
        raise NotFound(f"{results_dir}: no spec.yaml, so no latest battle (use --all or --battle)")
    return select_plan(records, spec)


def select_battle(records: list[RunRecord], battle: str) -> Selection:
    """A spec file's plan when `battle` names a file, else the records whose `battle` id it is."""
    if Path(battle).is_file():
        return select_plan(records, Path(battle))
    chosen = [r for r in records if r.battle == battle]
    if not chosen:
        ids = sorted({r.battle for r in records if r.battle})
        raise NotFound(f"no records of battle {battle!r} (neither a spec file nor a battle id; ids: {ids})")
    return Selection(chosen, f"battle {battle}: {len(chosen)} runs")
