"""WebDataset-style tar shards, local or in S3: `{"type": "webdataset", "path": ...}`.

`path` is a folder or `s3://bucket/prefix` (every `*.tar` below it), one `.tar`, or a brace pattern
(`shards/train-{000000..000009}.tar`, `{a,b}` lists too). Optional keys: `classes` (list of names),
`splits` (fractions, as for ImageFolder), `name`.

The convention (what `bob datasets upload --format webdataset` writes):
  * A shard is an uncompressed tar. A sample is the members sharing a key: the member path up to the
    first '.' of its file name (`cat/0001.png` + `cat/0001.cls` -> key `cat/0001`).
  * Each sample has one image (`.jpg`, `.jpeg`, `.png`, `.webp`) and one label: `.cls` (a class
    index, as text), else `.txt` (a class name), else `.json` (an object whose "label" is either).
    Other members are ignored.
  * Class names: the ref's `classes`, else `classes.txt` beside the shards (line i names class i),
    else the sorted names found in `.txt`/`.json` labels, else "0".."max" for bare indices.
  * Splits follow the shards: a shard in a folder `train/ val/ test/ query/ gallery/` under the root,
    or named `<split>-*.tar` / `<split>_*.tar`, holds that split (all shards carry a split or none
    do). Unsplit shards are split by class with seeded `splits` fractions, as ImageFolder trees are.

Building the dataset reads no shard: the fingerprint comes from the shard listing (etag and size in
S3, file digests locally), the shard names, the classes file and the ref's options, so planning
needs no image reads. Labels, splits and member offsets are indexed on first use (S3 shards are then
downloaded to the content-addressed cache of `bobench.data.s3_source`); items are read from the
shard file at their offset (`bobench.data.shards` finds the shards). A shard that is not a tar, a sample without an image or label, a bad
label, or a corrupt image are InvalidArgument naming the shard and the member.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bobench.config import Settings
from bobench.data.base import Dataset, fingerprint_arrays
from bobench.data.fingerprint import (
    FINGERPRINT_VERSION,
    ContentDigest,
    LazyFingerprintDataset,
    cached_digest,
    files_digest,
    stat_signature,
)
from bobench.data.images import decode_image_file
from bobench.data.registry import check_ref_keys, register_source
from bobench.data.shards import Shard, local_shards, s3_shards, shard_split
from bobench.data.splits import KNOWN_SPLITS, RETRIEVAL_SPLITS, check_fractions, stratified_split
from bobench.errors import InvalidArgument

SAMPLE_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTENSIONS = ("cls", "txt", "json")  # in order of preference


def sample_key(member_name: str) -> tuple[str, str]:
    """(key, extension) of a member: `a/b.c.d` -> (`a/b`, `c.d`) (the WebDataset rule)."""
    folder, base = posixpath.split(member_name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


@dataclass
class _Indexed:
    classes: list[str]
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    sources: list[str]
    members: list[tuple[int, int, int]]  # (shard, offset, size) of each item's image


class ShardIndex:
    """Labels, splits and image offsets of a set of shards, read once on first use (thread-safe).

    Also the dataset's `load`: item index -> decoded image, read at its offset in its shard."""

    def __init__(
        self, ref: dict, shards: list[Shard], classes_file: object, settings: Settings | None, seed: int
    ):
        self.ref, self.shards, self.classes_file = ref, shards, classes_file
        self.settings, self.seed = settings, seed
        self._lock = threading.Lock()
        self._indexed: _Indexed | None = None

    def __getstate__(self) -> dict:
        self.get()
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def get(self) -> _Indexed:
        with self._lock:
            if self._indexed is None:
                self._indexed = self._build()
            return self._indexed

    def __call__(self, index: int) -> np.ndarray:
        indexed = self.get()
        if not 0 <= index < len(indexed.members):
            raise InvalidArgument(f"item {index} out of range (dataset of {len(indexed.members)} samples)")
        shard_no, offset, size = indexed.members[index]
        with self.shards[shard_no].path(self.settings).open("rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        return decode_image_file(io.BytesIO(data), where=indexed.sources[index])

    def _build(self) -> _Indexed:
        samples = []  # (shard_no, key, image member, label)
        for shard_no, shard in enumerate(self.shards):
            samples += [(shard_no, *s) for s in _read_shard(shard.path(self.settings), shard.where)]
        if not samples:
            raise InvalidArgument(f"webdataset {self.ref['path']}: the shards hold no samples")
        classes = self._classes([s[3] for s in samples])
        labels = np.asarray([self._label_index(s, classes) for s in samples], dtype=np.int64)
        names = [self.shards[s[0]].name for s in samples]
        return _Indexed(
            classes=classes,
            labels=labels,
            splits=self._splits(names, labels, classes),
            sources=[f"{self.shards[s[0]].where}: member {s[2].name}" for s in samples],
            members=[(s[0], s[2].offset_data, s[2].size) for s in samples],
        )

    def _classes(self, labels: list[int | str]) -> list[str]:
        if "classes" in self.ref:
            given = self.ref["classes"]
            if not isinstance(given, list) or not all(isinstance(c, str) and c for c in given):
                raise InvalidArgument(f"webdataset {self.ref['path']}: 'classes' must be a list of names")
            return list(given)
        if self.classes_file is not None:
            path = self.classes_file
            if not isinstance(path, Path):
                from bobench.data.s3_source import fetch_object

                path = fetch_object(path, self.settings)
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        names = sorted({v for v in labels if isinstance(v, str)})
        if names and any(isinstance(v, int) for v in labels):
            raise InvalidArgument(
                f"webdataset {self.ref['path']}: labels mix class names and indices; give 'classes'"
            )
        return names or [str(i) for i in range(max(int(v) for v in labels) + 1)]

    def _label_index(self, sample: tuple, classes: list[str]) -> int:
        shard_no, key, _, label = sample
        where = f"webdataset shard {self.shards[shard_no].where}: sample {key!r}"
        if isinstance(label, int):
            if not 0 <= label < len(classes):
                raise InvalidArgument(f"{where}: class index {label} out of range ({len(classes)} classes)")
            return label
        if label not in classes:  # the label is file content: never quoted
            raise InvalidArgument(f"{where}: its label names none of the {len(classes)} classes")
        return classes.index(label)

    def _splits(self, names: list[str], labels: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
        where = f"webdataset {self.ref['path']}"
        per_shard = {s.name: shard_split(s.name) for s in self.shards}
        given = {v for v in per_shard.values() if v is not None}
        if not given:
            fractions = check_fractions(self.ref.get("splits"), where=f"{where}: splits")
            return stratified_split(labels, fractions, self.seed, class_names=classes)
        unsplit = sorted(n for n, v in per_shard.items() if v is None)
        if unsplit:
            raise InvalidArgument(f"{where}: shards {unsplit[:5]} carry no split while others do")
        if "splits" in self.ref:
            raise InvalidArgument(f"{where}: the shards are already split ({sorted(given)}); drop 'splits'")
        split_of = np.asarray([per_shard[n] for n in names])
        return {s: np.flatnonzero(split_of == s).astype(np.int64) for s in KNOWN_SPLITS if s in given}


def _read_shard(path: Path, where: str) -> list[tuple[str, tarfile.TarInfo, int | str]]:
    """(key, image member, label) of each sample of one shard, in member order."""
    images: dict[str, tarfile.TarInfo] = {}
    labels: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = sample_key(member.name)
                if ext in SAMPLE_IMAGE_EXTENSIONS:
                    if key in images:
                        raise InvalidArgument(f"webdataset shard {where}: sample {key!r} has two images")
                    images[key] = member
                elif ext in LABEL_EXTENSIONS:
                    labels.setdefault(key, {})[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(f"webdataset shard {where}: not a readable tar ({exc})") from None
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise InvalidArgument(f"webdataset shard {where}: sample {orphans[0]!r} has no image member")
    out = []
    for key, member in images.items():
        if key not in labels:
            raise InvalidArgument(
                f"webdataset shard {where}: sample {key!r} (member {member.name}) has no .cls/.txt/.json label"
            )
        out.append((key, member, _parse_label(labels[key], f"webdataset shard {where}: sample {key!r}")))
    return out


_LABEL_EXPECTED = {
    "cls": "a class index as decimal text",
    "txt": "a class name as UTF-8 text",
    "json": 'a JSON object {"label": name or index}',
}


def _parse_label(members: dict[str, bytes], where: str) -> int | str:
    """The sample's label; errors say what was expected, never what the member holds."""
    ext = next(e for e in LABEL_EXTENSIONS if e in members)
    try:
        text = members[ext].decode("utf-8").strip()
        if ext == "cls":
            return int(text)
        if ext == "txt":
            if not text:
                raise ValueError("empty class name")
            return text
        value = json.loads(text).get("label")
    except (UnicodeDecodeError, ValueError, AttributeError):
        raise InvalidArgument(f"{where}: bad .{ext} label (expected {_LABEL_EXPECTED[ext]})") from None
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise InvalidArgument(
            f"{where}: .json label needs 'label' (a class name or index), got a {type(value).__name__}"
        )
    return value


class _FromIndex:
    """A Dataset field read from the dataset's ShardIndex; Dataset.__init__'s placeholder is dropped."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return getattr(obj.index.get(), self.name)

    def __set__(self, obj, value) -> None:
        return None


class ShardDataset(LazyFingerprintDataset):
    """A Dataset over shards whose classes, labels, splits and sources are indexed on first access."""

    classes = _FromIndex()
    labels = _FromIndex()
    splits = _FromIndex()
    sources = _FromIndex()

    def __init__(self, *, index: ShardIndex, **fields) -> None:
        self.index = index
        super().__init__(classes=[], labels=np.zeros(0, np.int64), splits={}, load=index, **fields)


def _content_digest(shards: list[Shard], classes_file: object, content_digest: ContentDigest) -> str:
    if all(s.local is not None for s in shards):
        paths = [s.local for s in shards] + ([str(classes_file)] if classes_file is not None else [])
        if content_digest is not files_digest:
            return content_digest(paths)
        return cached_digest(("webdataset", tuple(paths)), lambda: files_digest(paths), stat_signature(paths))
    from bobench.data.s3_source import objects_digest

    extra = f"classes:{classes_file.etag}:{classes_file.size_bytes}" if classes_file is not None else ""
    return objects_digest([s.obj for s in shards], extra)


@register_source("webdataset")
def webdataset(ref: dict, *, seed: int = 0, content_digest: ContentDigest = files_digest) -> Dataset:
    """The dataset of the shards `ref["path"]` names; see the module docstring for the convention.
    `content_digest` hashes local shards for the fingerprint (`bobench.data.fingerprint`)."""
    check_ref_keys(ref, {"path", "classes", "splits", "name"}, "webdataset")
    if "path" not in ref:
        raise InvalidArgument("webdataset: missing 'path'")
    path = str(ref["path"])
    settings = None
    if path.startswith("s3://"):
        from bobench.data.context import data_settings

        settings = data_settings(f"webdataset {path}")
        shards, classes_file = s3_shards(path, settings)
    else:
        shards, classes_file = local_shards(str(Path(path).expanduser()) if "{" not in path else path)
        if not shards:
            raise InvalidArgument(f"webdataset {path}: no *.tar shards")
    names = [s.name for s in shards]
    given = {shard_split(n) for n in names}
    task = "retrieval" if None not in given and given <= set(RETRIEVAL_SPLITS) else "classification"
    options = {k: ref[k] for k in ("classes", "splits") if k in ref}

    def fingerprint() -> str:
        content = _content_digest(shards, classes_file, content_digest)
        return fingerprint_arrays(
            FINGERPRINT_VERSION,
            "webdataset",
            content,
            json.dumps(names),
            json.dumps(options, sort_keys=True),
            f"seed:{seed}",
        )

    root = path.split("{", 1)[0].rstrip("/")
    return ShardDataset(
        index=ShardIndex(ref, shards, classes_file, settings, seed),
        name=str(ref.get("name") or posixpath.basename(root.removesuffix(".tar")) or "webdataset"),
        meta={"task": task, "seed": seed, "source": "webdataset", "path": path, "shards": len(shards)},
        fingerprint_fn=fingerprint,
    )


def write_shard(path: Path, samples: list[tuple[str, str, bytes, int]]) -> None:
    """Write samples `(key, image extension, image bytes, class index)` as one shard at `path`.

    Members carry no time or owner, so the same samples always give the same bytes (and etag)."""

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, ext, data, label in samples:
            add(tar, f"{key}.{ext}", data)
            add(tar, f"{key}.cls", str(label).encode())
