"""Finding WebDataset shards: a local folder, an `s3://` prefix, one `.tar`, or a brace pattern.

Shards are listed, never read, here: each comes back with its name relative to the dataset root (the
split it holds follows from that name, `shard_split`) and where its `classes.txt` is. Missing shards,
an empty prefix and a bad brace range are InvalidArgument naming the path.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from bobench.config import Settings
from bobench.data.roots import check_path, is_restricted
from bobench.data.splits import KNOWN_SPLITS
from bobench.errors import InvalidArgument

CLASSES_FILE = "classes.txt"
_BRACE = re.compile(r"\{([^{}]*)\}")
_SPLIT_NAME = re.compile(rf"^({'|'.join(KNOWN_SPLITS)})[-_.]")


@dataclass(frozen=True)
class Shard:
    """One shard file: its name relative to the dataset root, and a local path or an S3 object."""

    name: str
    where: str  # full path or URL, for messages
    local: str | None = None
    obj: object | None = None  # bobench.data.s3_source.S3Object

    def path(self, settings: Settings | None) -> Path:
        """A local file holding the shard (S3 shards are fetched into the blob cache)."""
        if self.local is not None:
            return Path(self.local)
        from bobench.data.s3_source import fetch_object

        return fetch_object(self.obj, settings)


def expand_braces(pattern: str) -> list[str]:
    """`x-{000..002}.tar` -> `x-000.tar`, `x-001.tar`, `x-002.tar`; `{a,b}` lists; nested in order."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    if ".." in body:
        first, _, last = body.partition("..")
        if not (first.isdigit() and last.isdigit()) or int(first) > int(last):
            raise InvalidArgument(f"webdataset pattern {pattern!r}: bad range {{{body}}}")
        values = [str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
    else:
        values = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [path for value in values for path in expand_braces(head + value + tail)]


def shard_split(name: str) -> str | None:
    """The split a shard holds by its folder (`train/x.tar`) or name (`train-0001.tar`), or None."""
    first = name.split("/", 1)[0]
    if "/" in name and first in KNOWN_SPLITS:
        return first
    match = _SPLIT_NAME.match(posixpath.basename(name))
    return match.group(1) if match else None


def local_shards(path: str) -> tuple[list[Shard], Path | None]:
    """Local shards and their classes file; every file is checked against the data roots
    (`bobench.data.roots`) before it is read, symlinks included."""
    if "{" in path:
        root = Path(posixpath.dirname(path.split("{", 1)[0]) or ".")
        files = [Path(p) for p in expand_braces(path)]
        for file in files:
            check_path(file, f"webdataset {path}: shard {file}")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise InvalidArgument(f"webdataset {path}: shard(s) {missing[:5]} do not exist")
    else:
        check_path(path, f"webdataset {path}")
        if Path(path).is_file():
            root, files = Path(path).parent, [Path(path)]
        elif Path(path).is_dir():
            root = Path(path)
            files = sorted(
                p for p in root.rglob("*.tar") if p.is_file() and not _hidden(p.relative_to(root).as_posix())
            )
            if is_restricted():  # a symlinked shard inside a data root may point out of it
                for file in files:
                    check_path(file, f"webdataset {path}: shard {file}")
        else:
            raise InvalidArgument(f"webdataset: {path} does not exist")
    shards = [Shard(p.relative_to(root).as_posix(), str(p), local=str(p)) for p in files]
    found = [
        Path(d) / CLASSES_FILE for d in _classes_dirs(root.as_posix()) if (Path(d) / CLASSES_FILE).is_file()
    ]
    if found:
        check_path(found[0], f"webdataset {path}: {found[0]}")
    return shards, Path(found[0]) if found else None


def _classes_dirs(root: str) -> list[str]:
    """Where `classes.txt` may be: the root, and its parent when the root is a split folder."""
    parent, name = posixpath.split(root.rstrip("/"))
    return [root, parent] if name in KNOWN_SPLITS and parent else [root]


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def s3_shards(url: str, settings: Settings) -> tuple[list[Shard], object | None]:
    from bobench.data.s3_source import ObjectIndex, list_dataset
    from bobench.store.resolve import parse_s3_url

    index = ObjectIndex(settings)
    if "{" in url or url.endswith(".tar"):
        root = posixpath.dirname(url.split("{", 1)[0])
        objects = []
        for shard_url in expand_braces(url):
            bucket, key = parse_s3_url(shard_url)
            obj = index.get(bucket, key)
            if obj is None:
                raise InvalidArgument(f"webdataset {url}: shard {shard_url} does not exist")
            objects.append(obj)
        found = []
        for folder in _classes_dirs(root):
            bucket, folder_key = parse_s3_url(folder)
            found.append(index.get(bucket, posixpath.join(folder_key, CLASSES_FILE)))
        classes_obj = next((o for o in found if o is not None), None)
    else:
        root = url.rstrip("/")
        listed = list_dataset(root, settings)
        objects = [o for o in listed if o.key.endswith(".tar")]
        if not objects:
            raise InvalidArgument(f"webdataset {url}: no *.tar shards under it")
        bucket, root_key = parse_s3_url(root)
        wanted = posixpath.join(root_key, CLASSES_FILE)
        classes_obj = next((o for o in listed if o.key == wanted), None)
    cut = len(root) + 1
    return [Shard(o.url[cut:], o.url, obj=o) for o in objects], classes_obj
