"""Pin the base images of the Dockerfiles by digest, and check that they are pinned.

`python scripts/pin_base_images.py` resolves every `FROM image:tag` of services/*/Dockerfile and
services/evaluator/finetune-gpu.Dockerfile to the digest of its manifest (the manifest list / OCI
index when the tag is multi-platform, so every platform stays buildable) through the registry's HTTP
API (distribution spec `GET /v2/<repository>/manifests/<tag>`; on 401 the bearer token is fetched from
the realm named in `WWW-Authenticate`, as Docker Hub and NGC require even for public images), rewrites
the line to `FROM image:tag@sha256:...` and records the result in services/base-images.lock.

A tag that cannot be resolved (no registry reachable, unknown tag, auth refused) keeps its `FROM`
line and is written to the lock as `unresolved` with the reason: the lock is the documented allow-list
of unpinned bases, and `--check` (also run by tests/integration/test_base_image_pins.py) fails on any `FROM`
without a digest that the lock does not list, on a lock entry no Dockerfile uses, and on a digest that
differs between a Dockerfile and the lock.

Lock format, one base image per line (`#` starts a comment):
    <image:tag>  sha256:<64 hex>
    <image:tag>  unresolved  <why, free text>

Exit status: 0 every base pinned (or the check passed), 1 the check failed, 2 bad arguments or an
unreadable file, 3 some bases stayed unresolved (each recorded in the lock with its reason).
`--registry HOST=URL` points a registry host at another base URL (a mirror; the tests' fake registry).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "services" / "base-images.lock"
DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# FROM [--platform=...] image [AS name]
_FROM = re.compile(r"^(\s*FROM\s+(?:--\S+\s+)*)(\S+)(.*)$", re.IGNORECASE)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def dockerfiles(root: Path = ROOT) -> list[Path]:
    """Every Dockerfile the images are built from (the same set `make images` builds)."""
    return sorted(p for p in (root / "services").rglob("*Dockerfile") if p.is_file())


@dataclass(frozen=True)
class Reference:
    """An image reference split the way a registry is asked: host, repository, tag, digest."""

    text: str  # as written, without the digest
    registry: str
    repository: str
    tag: str
    digest: str | None

    @classmethod
    def parse(cls, image: str) -> Reference:
        name, _, digest = image.partition("@")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, name
        if registry in ("docker.io", "index.docker.io"):
            registry = DOCKER_HUB
        path, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        return cls(name, registry, path, tag, digest or None)


def from_images(dockerfile: Path) -> list[str]:
    """The image of every FROM line that names an image (not an earlier stage, not `scratch`)."""
    stages: set[str] = set()
    images = []
    for line in dockerfile.read_text().splitlines():
        match = _FROM.match(line)
        if not match:
            continue
        image, tail = match.group(2), match.group(3).split()
        if image.lower() not in stages and image != "scratch":
            images.append(image)
        if len(tail) >= 2 and tail[0].lower() == "as":
            stages.add(tail[1].lower())
    return images


# --- the lock -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockEntry:
    image: str  # image:tag, no digest
    digest: str | None
    reason: str = ""  # why it is unresolved


def read_lock(path: Path = LOCK) -> dict[str, LockEntry]:
    """{image:tag: entry}; raises ValueError naming the line for a malformed entry."""
    entries: dict[str, LockEntry] = {}
    if not path.exists():
        return entries
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split(None, 2)
        if len(words) == 2 and DIGEST.match(words[1]):
            entries[words[0]] = LockEntry(words[0], words[1])
        elif len(words) == 3 and words[1] == "unresolved" and words[2].strip():
            entries[words[0]] = LockEntry(words[0], None, words[2].strip())
        else:
            raise ValueError(
                f"{path.name}:{number}: expected '<image:tag> sha256:<64 hex>' or "
                "'<image:tag> unresolved <reason>'"
            )
    return entries


LOCK_HEADER = """\
# Base images of services/*/Dockerfile, pinned by digest (scripts/pin_base_images.py writes this file).
# <image:tag>  sha256:<digest of the manifest list or manifest>   the Dockerfile says image:tag@digest
# <image:tag>  unresolved  <why>   an allow-listed base without a digest: the Dockerfile keeps the tag
# Re-run `python scripts/pin_base_images.py` where the registries answer to pin the unresolved ones;
# tests/integration/test_base_image_pins.py fails on an unpinned FROM that is not listed here.
"""


def write_lock(entries: Iterable[LockEntry], path: Path = LOCK) -> None:
    lines = [LOCK_HEADER]
    for e in sorted(entries, key=lambda e: e.image):
        lines.append(f"{e.image}  {e.digest}\n" if e.digest else f"{e.image}  unresolved  {e.reason}\n")
    path.write_text("".join(lines))


# --- resolving through the registry API ----------------------------------------------------------------


class ResolveError(Exception):
    """A tag that could not be resolved; the message is the lock's reason."""


Opener = Callable[[urllib.request.Request, float], object]


def _open(request: urllib.request.Request, timeout_s: float):
    return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - https or a --registry URL


def _bearer_token(challenge: str, repository: str, timeout_s: float, opener: Opener) -> str:
    """The token the realm of a `Bearer realm=...,service=...` challenge hands out for a pull."""
    if not challenge.lower().startswith("bearer "):
        raise ResolveError(f"registry asks for unsupported authentication ({challenge.split()[0]})")
    params = dict(_CHALLENGE_PARAM.findall(challenge))
    if "realm" not in params:
        raise ResolveError("registry's bearer challenge names no realm")
    query = {"scope": params.get("scope") or f"repository:{repository}:pull"}
    if params.get("service"):
        query["service"] = params["service"]
    url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
    try:
        with opener(urllib.request.Request(url), timeout_s) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ResolveError(f"token service {urllib.parse.urlsplit(url).netloc} failed: {_why(exc)}") from exc
    token = body.get("token") or body.get("access_token")
    if not token:
        raise ResolveError("token service answered without a token")
    return token


def resolve(
    ref: Reference,
    base_urls: dict[str, str] | None = None,
    timeout_s: float = 20.0,
    opener: Opener = _open,
) -> str:
    """The `sha256:...` digest `ref`'s tag points at; raises ResolveError saying why not."""
    if not ref.tag:
        raise ResolveError("no tag to resolve")
    base = (base_urls or {}).get(ref.registry, f"https://{ref.registry}")
    url = f"{base.rstrip('/')}/v2/{ref.repository}/manifests/{ref.tag}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    for attempt in range(2):
        request = urllib.request.Request(url, headers=headers)
        try:
            with opener(request, timeout_s) as response:
                body = response.read()
                digest = response.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code == 401 and attempt == 0 and challenge:
                headers["Authorization"] = "Bearer " + _bearer_token(
                    challenge, ref.repository, timeout_s, opener
                )
                continue
            raise ResolveError(
                f"{ref.registry} answered HTTP {exc.code} for {ref.repository}:{ref.tag}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ResolveError(
                f"no registry reachable from the build machine ({ref.registry}: {_why(exc)})"
            ) from exc
        computed = "sha256:" + hashlib.sha256(body).hexdigest()
        if digest and digest != computed and digest.startswith("sha256:"):
            raise ResolveError(f"{ref.registry}: Docker-Content-Digest does not match the manifest it sent")
        return digest or computed
    raise ResolveError(f"{ref.registry} refused the token it issued")  # pragma: no cover - loop exits above


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, OSError) and getattr(reason, "errno", None) in (-2, -3, -5):
        return "DNS lookup failed"
    return type(reason).__name__ if not str(reason) else str(reason).splitlines()[0][:120]


# --- rewriting and checking ------------------------------------------------------------------------------


def rewrite(dockerfile: Path, digests: dict[str, str]) -> bool:
    """Set `FROM image:tag@digest` for every image in `digests`; True when the file changed."""
    text = dockerfile.read_text()
    out = []
    for line in text.splitlines(keepends=True):
        match = _FROM.match(line.rstrip("\n"))
        if match:
            ref = Reference.parse(match.group(2))
            if ref.text in digests:
                line = f"{match.group(1)}{ref.text}@{digests[ref.text]}{match.group(3)}\n"
        out.append(line)
    new = "".join(out)
    if new != text:
        dockerfile.write_text(new)
    return new != text


def check(files: list[Path], lock: dict[str, LockEntry], root: Path = ROOT) -> list[str]:
    """Problems: an unpinned FROM the lock does not allow, digests that disagree, stale lock entries."""
    problems, used = [], set()
    for dockerfile in files:
        name = dockerfile.relative_to(root) if dockerfile.is_relative_to(root) else dockerfile
        for image in from_images(dockerfile):
            ref = Reference.parse(image)
            used.add(ref.text)
            entry = lock.get(ref.text)
            if ref.digest:
                if not DIGEST.match(ref.digest):
                    problems.append(f"{name}: FROM {image}: the digest is not sha256:<64 hex>")
                elif entry is None or entry.digest != ref.digest:
                    problems.append(
                        f"{name}: FROM {image}: the lock records {entry.digest if entry else 'nothing'}"
                    )
            elif entry is None:
                problems.append(
                    f"{name}: FROM {image} has no digest and is not allow-listed in {LOCK.name} "
                    "(run scripts/pin_base_images.py)"
                )
            elif entry.digest:
                problems.append(f"{name}: FROM {image} has no digest but the lock pins {entry.digest}")
    problems += [f"{LOCK.name}: {image} is used by no Dockerfile" for image in sorted(set(lock) - used)]
    return problems


def pin(files: list[Path], base_urls: dict[str, str], lock_path: Path, timeout_s: float) -> int:
    lock = read_lock(lock_path)
    digests: dict[str, str] = {}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for image in sorted({Reference.parse(i).text for f in files for i in from_images(f)}):
        ref = Reference.parse(image)
        try:
            digests[image] = resolve(ref, base_urls, timeout_s)
            lock[image] = LockEntry(image, digests[image])
            print(f"{image}: {digests[image]}")
        except ResolveError as exc:
            known = lock.get(image)
            if known is not None and known.digest:  # keep a pin made earlier where the registry answered
                digests[image] = known.digest
                print(f"{image}: kept {known.digest} from the lock ({exc})", file=sys.stderr)
            else:
                lock[image] = LockEntry(image, None, f"{exc} [{today}]")
                print(f"{image}: unresolved: {exc}", file=sys.stderr)
    for dockerfile in files:
        if rewrite(dockerfile, digests):
            print(f"rewrote {dockerfile}")
    used = {Reference.parse(i).text for f in files for i in from_images(f)}
    write_lock([e for image, e in lock.items() if image in used], lock_path)
    return 3 if len(digests) < len(used) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the pins (exit 1 on a problem)")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose services/ to read")
    parser.add_argument("--lock", type=Path, help="lock file (default: <root>/services/base-images.lock)")
    parser.add_argument("--registry", action="append", default=[], metavar="HOST=URL",
                        help="base URL for a registry host (a mirror); repeatable")  # fmt: skip
    parser.add_argument("--timeout-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    base_urls = {}
    for item in args.registry:
        host, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            parser.error(f"--registry wants HOST=http(s)://..., got {item!r}")
        base_urls[DOCKER_HUB if host in ("docker.io", "index.docker.io") else host] = url
    files = dockerfiles(args.root)
    lock_path = args.lock or args.root / "services" / LOCK.name
    try:
        if args.check:
            problems = check(files, read_lock(lock_path), args.root)
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        return pin(files, base_urls, lock_path, args.timeout_s)
    except (OSError, ValueError) as exc:
        print(f"pin_base_images: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
