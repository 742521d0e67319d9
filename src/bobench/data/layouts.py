"""How a class-folder tree or a CSV manifest becomes (items, labels, classes, splits).

One set of rules wherever the files live: `bobench.data.files` applies them to local folders and
CSV files, `bobench.data.s3_source` to S3 listings, `bobench.data.relevance` reads the same manifest
rows for retrieval ground truth. Every error is an InvalidArgument naming `where` (and the CSV row).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bobench.data.splits import KNOWN_SPLITS, check_fractions, stratified_split
from bobench.errors import InvalidArgument


def tree_layout(
    groups: dict[str | None, dict[str, list[str]]], ref: dict, seed: int, *, where: str
) -> tuple[list[str], np.ndarray, list[str], dict[str, np.ndarray]]:
    """(items, labels, classes, splits) of an ImageFolder tree given as split -> class -> sorted items.

    The split key is None for a tree of class folders (split with `ref["splits"]` fractions and
    `seed`); otherwise the tree is split on disk and fractions are an InvalidArgument naming `where`.
    """
    pre_split = None not in groups
    if pre_split and "splits" in ref:
        raise InvalidArgument(f"{where}: already split on disk ({', '.join(groups)}); drop 'splits'")
    classes = sorted({c for by_class in groups.values() for c in by_class})
    index = {c: i for i, c in enumerate(classes)}
    items: list[str] = []
    labels: list[int] = []
    split_of: list[str] = []
    for split, by_class in groups.items():
        for class_name, members in sorted(by_class.items()):
            items += members
            labels += [index[class_name]] * len(members)
            split_of += [split or ""] * len(members)
    label_arr = np.asarray(labels, dtype=np.int64)
    if pre_split:
        names = np.asarray(split_of)
        splits = {s: np.flatnonzero(names == s).astype(np.int64) for s in groups}
    else:
        fractions = check_fractions(ref.get("splits"), where=f"{where}: splits")
        splits = stratified_split(label_arr, fractions, seed, class_names=classes)
    return items, label_arr, classes, splits


def read_manifest(csv_path: Path, where: str) -> tuple[list[dict[str, str]], list[int], bool]:
    """Rows (stripped), their line numbers, and whether a `split` column exists; errors name `where`."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            for column in ("path", "label"):
                if column not in header:
                    raise InvalidArgument(
                        f"{where}: row 1 (header): missing column {column!r} "
                        "(expected a header row naming the columns path,label[,split])"
                    )
            reader.fieldnames = header
            rows, lines = [], []
            for row in reader:
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # blank line
                rows.append({k: (v or "").strip() for k, v in row.items() if isinstance(k, str)})
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{where}: not UTF-8 text (an invalid byte at offset {exc.start})") from None
    except csv.Error as exc:
        raise InvalidArgument(f"{where}: malformed CSV: {exc}") from None
    if not rows:
        raise InvalidArgument(f"{where}: no data rows")
    return rows, lines, "split" in header


def _manifest_classes(ref: dict, where: str, labels: list[str]) -> list[str]:
    given = ref.get("classes")
    if given is None:
        return sorted(set(labels))
    if not isinstance(given, list) or not all(isinstance(c, str) and c for c in given):
        raise InvalidArgument(f"{where}: 'classes' must be a list of non-empty strings")
    duplicates = sorted({c for c in given if given.count(c) > 1})
    if duplicates:
        raise InvalidArgument(f"{where}: 'classes' lists {duplicates} more than once")
    return list(given)


def manifest_layout(
    csv_path: Path, ref: dict, seed: int, resolve: Callable[[str, int], str], *, where: str
) -> tuple[list[str], np.ndarray, list[str], dict[str, np.ndarray]]:
    """(items, labels, classes, splits) of the manifest in the local file `csv_path`.

    `resolve(path_field, line)` turns a row's path into its item (raising InvalidArgument naming the
    row when it does not exist); every message names `where`.
    """
    rows, lines, has_split = read_manifest(csv_path, where)
    if has_split and "splits" in ref:
        raise InvalidArgument(f"{where}: has a 'split' column; drop 'splits' from the ref")
    for row, line in zip(rows, lines, strict=True):
        for field in ("path", "label"):
            if not row.get(field):
                raise InvalidArgument(f"{where}: row {line}: field {field!r} is empty")
    classes = _manifest_classes(ref, where, [r["label"] for r in rows])
    index = {c: i for i, c in enumerate(classes)}
    items: list[str] = []
    labels: list[int] = []
    for row, line in zip(rows, lines, strict=True):
        if row["label"] not in index:
            raise InvalidArgument(
                f"{where}: row {line}: field 'label': not one of the ref's classes {classes}"
            )
        items.append(resolve(row["path"], line))
        labels.append(index[row["label"]])
    label_arr = np.asarray(labels, dtype=np.int64)
    if has_split:
        splits = _manifest_splits(where, rows, lines)
    else:
        fractions = check_fractions(ref.get("splits"), where=f"{where}: splits")
        splits = stratified_split(label_arr, fractions, seed, class_names=classes)
    return items, label_arr, classes, splits


def _manifest_splits(where: str, rows: list[dict[str, str]], lines: list[int]) -> dict[str, np.ndarray]:
    values = [r.get("split", "") for r in rows]
    for value, line in zip(values, lines, strict=True):
        if not value:
            raise InvalidArgument(
                f"{where}: row {line}: field 'split' is empty (give every row a split, or drop the column)"
            )
        if value not in KNOWN_SPLITS:
            raise InvalidArgument(
                f"{where}: row {line}: field 'split': not a known split (known: {', '.join(KNOWN_SPLITS)})"
            )
    names = np.asarray(values)
    order = [s for s in KNOWN_SPLITS if s in set(values)]
    return {s: np.flatnonzero(names == s).astype(np.int64) for s in order}
