"""Per-query relevance (positives and junk) for retrieval manifests: revisited Oxford/Paris style ground truth.

By default a gallery item is relevant to a query when their labels match. A CSV manifest
(`bobench.data.files`) with `query` and `gallery` rows in its `split` column may instead list each
query's ground truth in two optional columns:

* `positives`: the gallery items that count as correct for this query;
* `junk`: gallery items removed from this query's ranking before any metric is computed (revisitop's
  junk images: neither right nor wrong).

Each is a `;`-separated list of gallery row ids; a row's id is its `id` column when the manifest has
one (ids must then be unique), otherwise its `path` exactly as written in the CSV. Only query rows
may fill these columns; an empty `positives` cell is a query without positives (excluded from the
metrics, counted in `n_queries_without_positives`, and scoring 0 in MRR). When the `positives`
column exists every query's positives come from it and labels no longer define relevance.

ROxford5k / RParis6k protocols (revisitop `gnd[q]` has `easy`, `hard` and `junk` lists), one manifest
per protocol:

    Easy:    positives = easy          junk = junk + hard
    Medium:  positives = easy + hard   junk = junk
    Hard:    positives = hard          junk = junk + easy

The parsed relevance is stored in `Dataset.meta["relevance"]` as
`{"queries": [source, ...], "positives": [[source, ...], ...], "junk": [[...], ...]}`, where a source
is the item's `Dataset.sources` entry (its resolved file): JSON-serialisable, and still right after a
subset (`max_per_class`) re-indexes the items. It is part of the dataset fingerprint. Errors
(InvalidArgument) name the manifest, the CSV row and the field; the rows a relevance list names must
be distinct files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from bobench.data.layouts import read_manifest
from bobench.errors import InvalidArgument

RELEVANCE_COLUMNS = ("positives", "junk")
SEPARATOR = ";"


def manifest_relevance(
    csv_path: Path, splits: dict[str, np.ndarray], items: list[str], *, where: str
) -> dict | None:
    """The manifest's per-query relevance (module docstring), or None when it has no `positives` column.

    `splits` and `items` are the manifest's splits and resolved items (in row order, as
    `manifest_layout` built them).
    """
    rows, lines, _ = read_manifest(csv_path, where)
    if "positives" not in rows[0]:
        if "junk" in rows[0]:
            raise InvalidArgument(f"{where}: has a 'junk' column but no 'positives' column")
        return None
    if "query" not in splits or "gallery" not in splits:
        raise InvalidArgument(
            f"{where}: per-query 'positives' need a 'split' column with 'query' and 'gallery' rows"
        )
    ids = _row_ids(rows, lines, where)
    split_of = np.empty(len(rows), dtype=object)
    for name, members in splits.items():
        split_of[members] = name
    relevance: dict[str, list] = {"queries": [], "positives": [], "junk": []}
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        lists = {c: _ids(row.get(c, "")) for c in RELEVANCE_COLUMNS}
        if split_of[i] != "query":
            filled = [c for c, v in lists.items() if v]
            if filled:
                raise InvalidArgument(f"{where}: row {line}: field {filled[0]!r} is set on a non-query row")
            continue
        resolved = {c: _resolve(v, ids, split_of, lines, where, line, c) for c, v in lists.items()}
        both = sorted(set(resolved["positives"]) & set(resolved["junk"]))
        if both:
            raise InvalidArgument(
                f"{where}: row {line}: the gallery row(s) on line(s) {[lines[j] for j in both[:3]]} "
                "are both positive and junk"
            )
        relevance["queries"].append(items[i])
        relevance["positives"].append([items[j] for j in resolved["positives"]])
        relevance["junk"].append([items[j] for j in resolved["junk"]])
    _check_distinct(relevance, items, lines, where)
    return relevance


def _check_distinct(relevance: dict[str, list], items: list[str], lines: list[int], where: str) -> None:
    counts = Counter(items)
    named = set(relevance["queries"]) | {
        s for key in RELEVANCE_COLUMNS for group in relevance[key] for s in group
    }
    repeated = sorted(s for s in named if counts[s] > 1)
    if repeated:
        on = [line for item, line in zip(items, lines, strict=True) if item == repeated[0]]
        raise InvalidArgument(
            f"{where}: rows {on[:3]} name the same file; the rows per-query ground truth names "
            "must be distinct files"
        )


def _ids(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(SEPARATOR) if part.strip()]


def _row_ids(rows: list[dict[str, str]], lines: list[int], where: str) -> dict[str, int]:
    column = "id" if "id" in rows[0] else "path"
    ids: dict[str, int] = {}
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        value = row.get(column, "")
        if not value:
            raise InvalidArgument(f"{where}: row {line}: field {column!r} is empty")
        if value in ids:
            raise InvalidArgument(
                f"{where}: row {line}: field {column!r}: the same value as row {lines[ids[value]]} (must be unique)"
            )
        ids[value] = i
    return ids


def _resolve(
    names: list[str],
    ids: dict[str, int],
    split_of: np.ndarray,
    lines: list[int],
    where: str,
    line: int,
    field: str,
) -> list[int]:
    """Row indices of a relevance list; messages give list positions and line numbers, never the ids."""
    out = []
    for position, name in enumerate(names, start=1):
        if name not in ids:
            raise InvalidArgument(f"{where}: row {line}: field {field!r}: entry {position} names no row")
        if split_of[ids[name]] != "gallery":
            raise InvalidArgument(
                f"{where}: row {line}: field {field!r}: entry {position} names row {lines[ids[name]]}, "
                "which is not a gallery row"
            )
        out.append(ids[name])
    return sorted(set(out))
