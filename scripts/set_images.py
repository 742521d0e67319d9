"""Pin pushed bobench images into the deployment: kustomize `images:` entries and the Job configs.

`make push REGISTRY=... TAG=...` runs this after pushing. For every image it does what
`kustomize edit set image bobench/NAME=REGISTRY/bobench/NAME:TAG` does (kustomize is not needed): the
entry named `bobench/NAME` gets `newName: REGISTRY/bobench/NAME` and `newTag: TAG` (a `digest` it had is
dropped, since the tag now says which build), and an image without an entry gets one appended.

The scheduler's Job configs (`bobench.battle.executors.k8s_jobs.JobConfig` files, mounted from a ConfigMap) name
the Job image as plain data, which kustomize's `images:` never rewrites: their top-level `image:` is
set to REGISTRY/bobench/NAME:TAG when it names one of the pushed images (with or without a registry or
tag already).

Only the `images:` block (or the `image:` line) of each file is rewritten; comments and every other key
stay byte for byte. The new file is parsed back and must equal the old one with only that changed, else
nothing is written. Files that do not exist (e.g. the CPU overlay in a checkout that predates it) are
skipped and said so.

Errors (exit status 2, message on stderr): InvalidArgument for a malformed registry, tag or image name,
a file that is not a kustomization, or an `images:` value that is not a list of entries with `name`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from bobench.errors import BobenchError, InvalidArgument

log = logging.getLogger("set_images")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = (
    ROOT / "deploy" / "kustomization.yaml",
    ROOT / "deploy" / "overlays" / "cpu" / "kustomization.yaml",
    ROOT / "deploy" / "k8s" / "scheduler" / "jobs.yaml",
    ROOT / "deploy" / "overlays" / "cpu" / "jobs.yaml",
)
DEFAULT_IMAGES = ("bobench/embedder", "bobench/evaluator", "bobench/scheduler", "bobench/finetune-gpu")

# Docker reference grammar (distribution/reference), reduced to what a registry prefix and a tag may be.
_REGISTRY = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IMAGE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")
_TOP_LEVEL_KEY = re.compile(r"^[A-Za-z_][\w.-]*\s*:")
_JOB_IMAGE_VALUE = re.compile(r"^(image\s*:\s*)\S+", re.MULTILINE)  # keeps a trailing comment
_REPOSITORY_OF = re.compile(r"^(?:.+/)?(bobench/[a-z0-9-]+)(?::[\w.-]+)?$")


def check_reference(registry: str, tag: str, images: tuple[str, ...]) -> None:
    """Raise InvalidArgument unless registry, tag and image names are valid image reference parts."""
    if not _REGISTRY.match(registry):
        raise InvalidArgument(
            f"registry {registry!r}: expected host[:port][/path] in lower case, without a scheme "
            "(e.g. registry.example.com or localhost:5000/team)"
        )
    if not _TAG.match(tag):
        raise InvalidArgument(f"tag {tag!r}: expected up to 128 of [A-Za-z0-9_.-], not starting with . or -")
    for image in images:
        if not _IMAGE.match(image):
            raise InvalidArgument(f"image {image!r}: expected a repository name such as bobench/evaluator")


def pinned_entries(entries: list[dict[str, Any]], registry: str, tag: str, images: tuple[str, ...]) -> list:
    """The `images:` entries with each of `images` pointed at registry/image:tag (appended if absent)."""
    result = [dict(entry) for entry in entries]
    by_name = {entry["name"]: entry for entry in result}
    for image in images:
        entry = by_name.get(image)
        if entry is None:
            entry = {"name": image}
            result.append(entry)
        entry.pop("digest", None)
        entry["newName"] = f"{registry}/{image}"
        entry["newTag"] = tag
    return result


def _images_block_span(lines: list[str]) -> tuple[int, int] | None:
    """[start, end) line indexes of the top-level `images:` block, without comments that lead the next key."""
    start = next((i for i, line in enumerate(lines) if re.match(r"^images\s*:", line)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and not _TOP_LEVEL_KEY.match(lines[end]):
        end += 1
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return start, end


def render_images_block(entries: list[dict[str, Any]]) -> list[str]:
    """`images:` and its entries as YAML lines (2-space indented list, kustomize's own layout)."""
    body = yaml.safe_dump(entries, default_flow_style=False, sort_keys=False, width=1000)
    return ["images:\n"] + [f"  {line}\n" for line in body.splitlines()]


def _entries_of(doc: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or ("resources" not in doc and "kind" not in doc):
        raise InvalidArgument(f"{path}: not a kustomization (no `kind` or `resources`)")
    entries = doc.get("images") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise InvalidArgument(f"{path}: `images:` must be a list of entries that each have a `name`")
    return entries


def set_images(path: Path, registry: str, tag: str, images: tuple[str, ...] = DEFAULT_IMAGES) -> bool:
    """Pin `images` in the kustomization or Job config at `path`; return False when nothing changed.

    Raises InvalidArgument for bad arguments or a malformed file (the file is then left as it was).
    """
    check_reference(registry, tag, images)
    text = path.read_text()
    doc = yaml.safe_load(text)
    if isinstance(doc, dict) and isinstance(doc.get("image"), str) and "kind" not in doc:
        return _pin_job_config(path, text, doc, f"{registry}/{{}}:{tag}", images)
    entries = _entries_of(doc, path)
    new_entries = pinned_entries(entries, registry, tag, images)
    if new_entries == entries:
        return False
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    span = _images_block_span(lines)
    start, end = span if span else (len(lines), len(lines))
    prefix = lines[:start] + (["\n"] if span is None and lines and lines[-1].strip() else [])
    new_text = "".join(prefix + render_images_block(new_entries) + lines[end:])
    expected = {**doc, "images": new_entries}
    if yaml.safe_load(new_text) != expected:
        raise InvalidArgument(
            f"{path}: could not rewrite `images:` without changing other keys; edit it by hand"
        )
    path.write_text(new_text)
    return True


def _pin_job_config(path: Path, text: str, doc: dict, reference: str, images: tuple[str, ...]) -> bool:
    """Set the Job config's top-level `image:` to `reference` (with {} = bobench/NAME) if it names one of `images`."""
    match = _REPOSITORY_OF.match(doc["image"])
    if not match or match.group(1) not in images:
        log.info("%s: image %s is not one of the pushed images; left as it is", path, doc["image"])
        return False
    pinned = reference.format(match.group(1))
    if doc["image"] == pinned:
        return False
    new_text = _JOB_IMAGE_VALUE.sub(lambda m: m.group(1) + pinned, text, count=1)
    if yaml.safe_load(new_text) != {**doc, "image": pinned}:
        raise InvalidArgument(
            f"{path}: could not rewrite `image:` without changing other keys; edit it by hand"
        )
    path.write_text(new_text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry", required=True, help="where the images were pushed, e.g. registry.example.com"
    )
    parser.add_argument("--tag", required=True, help="the pushed tag, e.g. 0.1.0")
    parser.add_argument(
        "--image",
        action="append",
        dest="images",
        help=f"image to pin (repeatable; default: {', '.join(DEFAULT_IMAGES)})",
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="kustomizations and Job configs (default: deploy/, overlays/cpu and their jobs.yaml)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images = tuple(args.images or DEFAULT_IMAGES)
    files = args.files or list(DEFAULT_FILES)
    try:
        for path in files:
            if not path.is_file():
                log.info("skipped %s (no such file)", path)
                continue
            changed = set_images(path, args.registry, args.tag, images)
            log.info("%s %s", "pinned" if changed else "already pinned", path)
    except BobenchError as exc:
        log.error("set_images: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
