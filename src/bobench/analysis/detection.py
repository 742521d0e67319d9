"""Detection in the report: AP per regime and backbone, the fine-tuned-minus-frozen gap per family, OOD.

Battle of the Backbones found that ViTs gain more than CNNs from end-to-end fine-tuning on dense
prediction. `summarize_detection(records)` answers that question on the user's own data from the
finished runs of the detection protocols:

- `regimes`: per (protocol, dataset, variant, backbone, regime) the primary metric (box `AP` for
  `detection`, `mask_AP` for `instance_segmentation`) averaged over seeds, with its bootstrap
  interval (the mean over seeds of the runs' `<metric>_ci_low/_ci_high`, as the leaderboards do)
  and the test images (`n_test`);
- `gaps`: per backbone evaluated both fine-tuned and frozen, `finetune - frozen` (higher: the backbone
  gains more from being trained end to end), and `families`: the mean gap per architecture family
  (the backbone's `family` in its BackboneSpec: cnn, vit, hierarchical-vit, hybrid);
- `ood`: per `ood_detection` (dataset, variant, backbone, regime) the in-domain `AP`, the shifted
  `shift_AP` and their `gap`, seed means, with intervals.

A *variant* is the digest of the run's config without `regime` (plus the dataset fingerprint): runs
with other schedules or detectors are never averaged or compared with each other; the label is shown
only when a (protocol, dataset) has several. Metrics that are missing (None: COCO leaves a figure
undefined) are skipped, and a row with no value is left out.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from bobench.analysis.aggregate import config_digest
from bobench.results import RunRecord

PRIMARY = {"detection": "AP", "instance_segmentation": "mask_AP"}
OOD_PROTOCOL = "ood_detection"
REGIME_ORDER = ("finetune", "frozen", "random")


@dataclass(frozen=True)
class RegimeRow:
    protocol: str
    dataset: str
    variant: str
    backbone: str
    family: str
    regime: str
    metric: str
    mean: float
    ci: tuple[float, float] | None
    n_seeds: int
    n_test: int | None


@dataclass(frozen=True)
class GapRow:
    protocol: str
    dataset: str
    variant: str
    backbone: str
    family: str
    finetune: float
    frozen: float

    @property
    def gap(self) -> float:
        return self.finetune - self.frozen


@dataclass(frozen=True)
class FamilyGap:
    protocol: str
    dataset: str
    variant: str
    family: str
    mean_gap: float
    backbones: tuple[str, ...]


@dataclass(frozen=True)
class OodRow:
    dataset: str
    variant: str
    backbone: str
    family: str
    regime: str
    ap: float | None
    ap_ci: tuple[float, float] | None
    shift_ap: float | None
    shift_ci: tuple[float, float] | None
    gap: float | None
    n_seeds: int


@dataclass
class DetectionSummary:
    regimes: list[RegimeRow] = field(default_factory=list)
    gaps: list[GapRow] = field(default_factory=list)
    families: list[FamilyGap] = field(default_factory=list)
    ood: list[OodRow] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.regimes or self.ood)

    def groups(self) -> list[tuple[str, str, str]]:
        """The (protocol, dataset, variant) of the regime rows, in order of first appearance."""
        return list(dict.fromkeys((r.protocol, r.dataset, r.variant) for r in self.regimes))

    def to_json(self) -> dict[str, Any]:
        return {
            "regimes": [asdict(r) for r in self.regimes],
            "gaps": [{**asdict(g), "gap": g.gap} for g in self.gaps],
            "families": [asdict(f) for f in self.families],
            "ood": [asdict(o) for o in self.ood],
        }


def _variant(rec: RunRecord) -> str:
    rest = {k: v for k, v in (rec.config or {}).items() if k != "regime"}
    data = f" data {rec.dataset_fingerprint[:8]}" if rec.dataset_fingerprint else ""
    return f"cfg {config_digest(rest)}{data}"


def _regime(rec: RunRecord) -> str:
    return str(rec.metrics.get("regime") or (rec.config or {}).get("regime") or "finetune")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _ci(runs: list[RunRecord], metric: str) -> tuple[float, float] | None:
    lows = [_number(r.metrics.get(f"{metric}_ci_low")) for r in runs]
    highs = [_number(r.metrics.get(f"{metric}_ci_high")) for r in runs]
    if any(v is None for v in lows + highs):
        return None
    return statistics.fmean(lows), statistics.fmean(highs)  # type: ignore[arg-type]


def summarize_detection(records: Iterable[RunRecord]) -> DetectionSummary:
    """The detection summary of the finished detection runs in `records` (see the module doc)."""
    grouped: dict[tuple[str, str, str, str, str], list[RunRecord]] = defaultdict(list)
    family: dict[str, str] = {}
    for rec in records:
        if not rec.finished or rec.protocol not in (*PRIMARY, OOD_PROTOCOL):
            continue
        grouped[(rec.protocol, rec.dataset, _variant(rec), rec.backbone, _regime(rec))].append(rec)
        family.setdefault(rec.backbone, str((rec.backbone_info or {}).get("family") or "unknown"))
    out = DetectionSummary()
    order = {r: i for i, r in enumerate(REGIME_ORDER)}
    for key in sorted(grouped, key=lambda k: (k[:4], order.get(k[4], len(order)), k[4])):
        protocol, dataset, variant, backbone, regime = key
        runs = grouped[key]
        if protocol == OOD_PROTOCOL:
            row = _ood_row(runs, dataset, variant, backbone, family[backbone], regime)
            if row is not None:
                out.ood.append(row)
            continue
        metric = PRIMARY[protocol]
        mean = _mean([_number(r.metrics.get(metric)) for r in runs])
        if mean is None:
            continue
        n_test = [_number(r.metrics.get("n_test")) for r in runs]
        out.regimes.append(
            RegimeRow(protocol, dataset, variant, backbone, family[backbone], regime, metric, mean,
                      _ci(runs, metric), len(runs), None if None in n_test else int(min(n_test)))  # type: ignore[type-var]
        )  # fmt: skip
    out.gaps = _gaps(out.regimes)
    out.families = _family_gaps(out.gaps)
    return out


def _ood_row(runs, dataset, variant, backbone, family, regime) -> OodRow | None:
    ap = _mean([_number(r.metrics.get("AP")) for r in runs])
    shift = _mean([_number(r.metrics.get("shift_AP")) for r in runs])
    if ap is None and shift is None:
        return None
    gap = _mean([_number(r.metrics.get("gap")) for r in runs])
    return OodRow(dataset, variant, backbone, family, regime, ap, _ci(runs, "AP"), shift,
                  _ci(runs, "shift_AP"), gap, len(runs))  # fmt: skip


def _gaps(rows: list[RegimeRow]) -> list[GapRow]:
    by_regime: dict[tuple[str, str, str, str], dict[str, RegimeRow]] = defaultdict(dict)
    for r in rows:
        by_regime[(r.protocol, r.dataset, r.variant, r.backbone)][r.regime] = r
    return [
        GapRow(*key, regimes["finetune"].family, regimes["finetune"].mean, regimes["frozen"].mean)
        for key, regimes in by_regime.items()
        if "finetune" in regimes and "frozen" in regimes
    ]


def _family_gaps(gaps: list[GapRow]) -> list[FamilyGap]:
    grouped: dict[tuple[str, str, str, str], list[GapRow]] = defaultdict(list)
    for g in gaps:
        grouped[(g.protocol, g.dataset, g.variant, g.family)].append(g)
    rows = [
        FamilyGap(*key, statistics.fmean(g.gap for g in gs), tuple(g.backbone for g in gs))
        for key, gs in grouped.items()
    ]
    return sorted(rows, key=lambda f: (f.protocol, f.dataset, f.variant, -f.mean_gap, f.family))
