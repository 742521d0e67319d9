"""mCE and relative mCE of every OOD setting against a reference backbone (ImageNet-C's normalisation).

ImageNet-C divides a model's error under each corruption by a reference model's (AlexNet in the paper),
so the figures need every backbone's record of one setting and belong here, not in the protocol. A
record takes part when it finished and carries `corruption_grid_complete` (the ood protocol, version 2,
records it with `err_<corruption>` and `id_err`). For each setting (same task, dataset, protocol,
version, config digest and dataset fingerprint, as in `bobench.analysis.aggregate`) and each split seed:

- The reference backbone is the config's `mce_reference`; when null, the first backbone in plan order
  among the records (any status) of that protocol, version and config on that dataset — records are in
  plan order in results.jsonl and every selection keeps that order.
- A seed whose reference has no finished record is skipped with a note; so is a backbone whose record
  and the reference's cannot be compared (no shared corruption, zero reference error:
  `bobench.analysis.corruption_error.corruption_errors` raises InvalidArgument).
- mCE and relative mCE are lower-is-better and the reference scores 1.0 on both; relative mCE is
  None when the reference's error does not rise under some corruption (its drop is the divisor). A setting is
  "complete" only when every record in it ran the full ImageNet-C grid (`corruption_grid_complete`
  1.0); otherwise it is labelled "partial grid": the same arithmetic over fewer corruptions or
  severities, not comparable with published mCE.

mCE does not join the z-score ranking: settings are ranked on the protocol's primary metric (accuracy,
as Battle of the Backbones ranks OOD); mCE is reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bobench.analysis.aggregate as agg
from bobench.analysis.corruption_error import corruption_errors
from bobench.errors import InvalidArgument
from bobench.results import RunRecord

GRID_FLAG = "corruption_grid_complete"
CONFIG_KEY = "mce_reference"
REFERENCE_CONFIGURED = "configured (mce_reference)"
REFERENCE_FIRST = "first backbone in plan order"
PARTIAL = "partial grid"


@dataclass(frozen=True)
class MceRow:
    """One backbone's figures at one split seed; mca is `mca` (full grid) or `mca_partial`."""

    backbone: str
    seed: int
    mca: float | None
    mce: float
    relative_mce: float | None


@dataclass(frozen=True)
class MceTable:
    """One OOD setting: its reference, how it was chosen, whether the grid is full, rows and notes."""

    key: agg.SettingKey
    label: str
    reference: str
    reference_source: str
    complete: bool
    rows: list[MceRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def grid(self) -> str:
        return "complete" if self.complete else PARTIAL

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "reference_source": self.reference_source,
            "grid": self.grid,
            "ranked_on": self.key.metric,
            "rows": [
                {
                    "backbone": r.backbone,
                    "seed": r.seed,
                    "mca": r.mca,
                    "mCE": r.mce,
                    "relative_mCE": r.relative_mce,
                    "reference": self.reference,
                }
                for r in self.rows
            ],
            "notes": list(self.notes),
        }


def ood_mce(
    records: Sequence[RunRecord],
    labels: Mapping[agg.SettingKey, str],
    task_map: str = agg.DEFAULT_TASK_MAP,
) -> list[MceTable]:
    """One MceTable per setting with per-corruption errors, in setting order (module docstring).

    `records` must be in plan order (as read from results.jsonl); `labels` maps a setting key to the
    label the report uses for it (the key's own label plus its variant otherwise).
    """
    groups: dict[agg.SettingKey, list[RunRecord]] = defaultdict(list)
    for rec in records:
        if rec.finished and GRID_FLAG in rec.metrics:
            groups[agg.setting_key(rec, task_map)].append(rec)
    if not groups:
        return []
    order = _plan_order(records)
    return [
        _table(key, groups[key], labels.get(key) or f"{key.label()} [{key.variant()}]", order)
        for key in sorted(groups)
    ]


def _plan_key(rec: RunRecord) -> tuple[str, str, str, str]:
    return rec.dataset, rec.protocol, str(rec.protocol_version or ""), agg.config_digest(rec.config or {})


def _plan_order(records: Sequence[RunRecord]) -> dict[tuple[str, str, str, str], list[str]]:
    """Backbones in first-seen order per (dataset, protocol, version, config digest), any status."""
    order: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for rec in records:
        seen = order[_plan_key(rec)]
        if rec.backbone not in seen:
            seen.append(rec.backbone)
    return order


def _table(
    key: agg.SettingKey, recs: list[RunRecord], label: str, order: Mapping[tuple, list[str]]
) -> MceTable:
    configured = (recs[0].config or {}).get(CONFIG_KEY)
    if configured:
        reference, source = str(configured), REFERENCE_CONFIGURED
    else:
        reference, source = order[_plan_key(recs[0])][0], REFERENCE_FIRST
    complete = all(r.metrics.get(GRID_FLAG) == 1.0 for r in recs)
    table = MceTable(key, label, reference, source, complete)
    for seed in dict.fromkeys(r.seed for r in recs):
        at_seed = [r for r in recs if r.seed == seed]
        ref = next((r for r in at_seed if r.backbone == reference), None)
        if ref is None:
            table.notes.append(
                f"seed {seed}: the reference backbone {reference!r} has no finished record in this "
                "setting, so no mCE is computed"
            )
            continue
        for rec in at_seed:
            _add_row(table, rec, ref)
    return table


def _add_row(table: MceTable, rec: RunRecord, ref: RunRecord) -> None:
    try:
        ce = corruption_errors(rec.metrics, ref.metrics)
    except InvalidArgument as exc:
        table.notes.append(f"seed {rec.seed}, {rec.backbone} (run {rec.run_key}): {exc}")
        return
    mca = rec.metrics.get("mca" if rec.metrics.get(GRID_FLAG) == 1.0 else "mca_partial")
    mca = float(mca) if isinstance(mca, int | float) else None
    table.rows.append(MceRow(rec.backbone, rec.seed, mca, float(ce["mCE"]), ce["relative_mCE"]))
