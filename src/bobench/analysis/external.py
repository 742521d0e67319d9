"""External (published or user-supplied) scores, merged into an analysis as extra settings/backbones.

The file is a long CSV, one score per row::

    backbone,task,dataset,protocol,metric,value,higher_is_better
    convnext_base_in22k,classification,cifar100,linear_probe,top1,0.912,true

Optional columns describe the backbone for the RQ2/RQ4 breakdowns: `family`, `pretraining_method`,
`pretraining_data`, `num_params`. Rows whose task is a cost task ("efficiency", "serving") feed the
latency/params columns instead of the ranking, exactly like measured efficiency/serving runs.
Repeated rows for the same (backbone, setting) are treated as seeds and averaged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bobench.errors import InvalidArgument, NotFound

REQUIRED_COLUMNS = ("backbone", "task", "dataset", "protocol", "metric", "value", "higher_is_better")
OPTIONAL_COLUMNS = ("family", "pretraining_method", "pretraining_data", "num_params")
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


@dataclass(frozen=True)
class ExternalScore:
    """One externally reported score; `source` is "<file> row <n>" for error messages."""

    backbone: str
    task: str
    dataset: str
    protocol: str
    metric: str
    value: float
    higher_is_better: bool
    source: str = "external"
    info: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def load_external_csv(path: str | Path) -> list[ExternalScore]:
    """Read an external-results CSV.

    Returns one ExternalScore per data row. Raises NotFound when the file does not exist and
    InvalidArgument naming the file, row (1-based, header = row 1) and field for a bad header, a
    missing/extra field, an empty name, a non-finite value or an unreadable boolean.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"external results file {p} does not exist")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InvalidArgument(f"{p}: empty file; expected the header {','.join(REQUIRED_COLUMNS)}")
        columns = _check_header([h.strip() for h in header], p)
        return [_parse_row(cells, columns, f"{p} row {row_no}") for row_no, cells in _data_rows(reader)]


def _data_rows(reader: Iterable[list[str]]) -> Iterable[tuple[int, list[str]]]:
    for row_no, cells in enumerate(reader, start=2):
        if any(c.strip() for c in cells):  # blank lines are not rows
            yield row_no, cells


def _check_header(header: list[str], path: Path) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InvalidArgument(
            f"{path} row 1 (header): missing column(s) {missing}; expected {','.join(REQUIRED_COLUMNS)}"
        )
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InvalidArgument(
            f"{path} row 1 (header): unknown column(s) {unknown}; optional columns are {list(OPTIONAL_COLUMNS)}"
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InvalidArgument(f"{path} row 1 (header): duplicated column(s) {duplicated}")
    return header


def _parse_row(cells: list[str], columns: list[str], where: str) -> ExternalScore:
    if len(cells) != len(columns):
        raise InvalidArgument(f"{where}: has {len(cells)} fields, the header has {len(columns)}")
    row = {c: v.strip() for c, v in zip(columns, cells, strict=True)}
    for name in REQUIRED_COLUMNS:
        if not row[name]:
            raise InvalidArgument(f"{where}: field {name!r} is empty")
    return ExternalScore(
        backbone=row["backbone"],
        task=row["task"],
        dataset=row["dataset"],
        protocol=row["protocol"],
        metric=row["metric"],
        value=_parse_value(row["value"], where),
        higher_is_better=_parse_bool(row["higher_is_better"], where),
        source=where,
        info=_parse_info(row, where),
    )


def _parse_value(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"{where}: field 'value' is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidArgument(f"{where}: field 'value' must be finite, got {raw!r}")
    return value


def _parse_bool(raw: str, where: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InvalidArgument(f"{where}: field 'higher_is_better' must be true or false, got {raw!r}")


def _parse_info(row: dict[str, str], where: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        k: row[k] for k in ("family", "pretraining_method", "pretraining_data") if row.get(k)
    }
    raw = row.get("num_params", "")
    if raw:
        try:
            num_params = float(raw)
        except ValueError:
            raise InvalidArgument(f"{where}: field 'num_params' is not a number: {raw!r}") from None
        if not math.isfinite(num_params) or num_params <= 0:
            raise InvalidArgument(f"{where}: field 'num_params' must be a positive number, got {raw!r}")
        info["num_params"] = int(num_params)
    return info
