"""Base images pinned by digest: every FROM of the Dockerfiles carries `@sha256:...` or is allow-listed,
with its reason, in services/base-images.lock; `scripts/pin_base_images.py` resolves tags through a
registry's HTTP API with bearer-token auth (a fake registry on loopback here: no registry is reachable
from the development machines) and rewrites the FROM lines.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("pin_base_images", ROOT / "scripts" / "pin_base_images.py")
pins = importlib.util.module_from_spec(_spec)
sys.modules["pin_base_images"] = pins
_spec.loader.exec_module(pins)

TOKEN = "pull-token-for-tests"
INDEX = json.dumps({"schemaVersion": 2, "mediaType": pins.MANIFEST_TYPES[0], "manifests": []}).encode()


def test_every_from_of_the_repository_is_pinned_or_allow_listed_with_a_reason():
    lock = pins.read_lock(ROOT / "services" / "base-images.lock")
    assert pins.check(pins.dockerfiles(ROOT), lock, ROOT) == []
    for dockerfile in pins.dockerfiles(ROOT):
        for image in pins.from_images(dockerfile):
            entry = lock[pins.Reference.parse(image).text]
            assert entry.digest or entry.reason, image  # unresolved entries say why


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag"),
    [
        ("python:3.11.9-slim-bookworm", "registry-1.docker.io", "library/python", "3.11.9-slim-bookworm"),
        ("nvcr.io/nvidia/tritonserver:24.10-py3", "nvcr.io", "nvidia/tritonserver", "24.10-py3"),
        ("docker.io/bitnami/redis:7.2", "registry-1.docker.io", "bitnami/redis", "7.2"),
        ("localhost:5000/team/app:1", "localhost:5000", "team/app", "1"),
    ],
)
def test_references_split_the_way_a_registry_is_asked(image, registry, repository, tag):
    ref = pins.Reference.parse(image + "@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag, ref.text) == (registry, repository, tag, image)
    assert ref.digest == "sha256:" + "a" * 64


class FakeRegistry(BaseHTTPRequestHandler):
    """Docker Hub's protocol in miniature: manifests need a bearer token from /token."""

    scopes: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            query = urllib.parse.parse_qs(url.query)
            type(self).scopes.append(query["scope"][0])
            return self._send(200, json.dumps({"token": TOKEN}).encode(), {})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://127.0.0.1:{self.server.server_port}/token"
            repository = url.path.split("/v2/", 1)[1].rsplit("/manifests/", 1)[0]
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:{repository}:pull"'
            return self._send(401, b"{}", {"WWW-Authenticate": challenge})
        if url.path.endswith("/manifests/no-such-tag"):
            return self._send(404, b"{}", {})
        assert pins.MANIFEST_TYPES[0] in self.headers.get("Accept", "")
        digest = "sha256:" + hashlib.sha256(INDEX).hexdigest()
        return self._send(200, INDEX, {"Docker-Content-Digest": digest})

    def _send(self, status: int, body: bytes, headers: dict[str, str]):
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def registry():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    FakeRegistry.scopes = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def checkout(tmp_path):
    """A copy of the repository's Dockerfiles and lock, to rewrite."""
    for dockerfile in pins.dockerfiles(ROOT):
        target = tmp_path / dockerfile.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dockerfile, target)
    shutil.copy(ROOT / "services" / "base-images.lock", tmp_path / "services" / "base-images.lock")
    return tmp_path


def test_pin_resolves_tags_with_a_bearer_token_and_rewrites_every_from(checkout, registry):
    args = [
        "--root",
        str(checkout),
        "--registry",
        f"docker.io={registry}",
        "--registry",
        f"nvcr.io={registry}",
    ]
    assert pins.main(args) == 0
    digest = "sha256:" + hashlib.sha256(INDEX).hexdigest()
    assert sorted(set(FakeRegistry.scopes)) == [
        "repository:library/python:pull",
        "repository:nvidia/tritonserver:pull",
    ]
    evaluator = (checkout / "services/evaluator/Dockerfile").read_text()
    assert f"\nFROM python:3.11.9-slim-bookworm@{digest}\n" in evaluator
    embedder = (checkout / "services/embedder/Dockerfile").read_text()
    assert f"\nFROM nvcr.io/nvidia/tritonserver:24.10-py3@{digest}\n" in embedder
    lock = pins.read_lock(checkout / "services" / "base-images.lock")
    assert {e.digest for e in lock.values()} == {digest}
    assert pins.main(["--check", "--root", str(checkout)]) == 0
    # a second run changes nothing (the digest is not appended twice)
    before = evaluator
    assert pins.main(args) == 0
    assert (checkout / "services/evaluator/Dockerfile").read_text() == before


def test_pin_records_unreachable_registries_as_unresolved_with_the_reason(checkout, registry):
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    code = pins.main(
        ["--root", str(checkout), "--registry", f"docker.io={closed}", "--registry", f"nvcr.io={registry}"]
    )
    assert code == 3
    lock = pins.read_lock(checkout / "services" / "base-images.lock")
    python = lock["python:3.11.9-slim-bookworm"]
    assert python.digest is None and "no registry reachable" in python.reason
    assert lock["nvcr.io/nvidia/tritonserver:24.10-py3"].digest
    assert "\nFROM python:3.11.9-slim-bookworm\n" in (checkout / "services/scheduler/Dockerfile").read_text()
    assert pins.main(["--check", "--root", str(checkout)]) == 0  # allow-listed, with its reason


def test_unknown_tag_is_reported_with_the_registry_status(registry):
    ref = pins.Reference.parse("python:no-such-tag")
    with pytest.raises(pins.ResolveError, match="HTTP 404"):
        pins.resolve(ref, {"registry-1.docker.io": registry})


def test_check_fails_on_an_unpinned_base_the_lock_does_not_list(checkout, capsys):
    dockerfile = checkout / "services/scheduler/Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace("FROM python:3.11.9-slim-bookworm", "FROM python:3.12-slim")
    )
    assert pins.main(["--check", "--root", str(checkout)]) == 1
    assert "FROM python:3.12-slim has no digest and is not allow-listed" in capsys.readouterr().err


def test_check_fails_on_a_digest_the_lock_does_not_record_and_on_stale_entries(checkout):
    dockerfile = checkout / "services/evaluator/Dockerfile"
    other = "sha256:" + "b" * 64
    dockerfile.write_text(dockerfile.read_text().replace("slim-bookworm\n", f"slim-bookworm@{other}\n", 1))
    lock = pins.read_lock(checkout / "services" / "base-images.lock")
    lock["alpine:3.20"] = pins.LockEntry("alpine:3.20", None, "not used")
    problems = pins.check(pins.dockerfiles(checkout), lock, checkout)
    assert any(
        "services/evaluator/Dockerfile: FROM python" in p and "the lock records" in p for p in problems
    )
    assert any("alpine:3.20 is used by no Dockerfile" in p for p in problems)


def test_lock_entries_without_a_digest_need_a_reason(tmp_path):
    lock = tmp_path / "base-images.lock"
    lock.write_text("# comment\npython:3.11  unresolved\n")
    with pytest.raises(ValueError, match="base-images.lock:2"):
        pins.read_lock(lock)
    lock.write_text("python:3.11  sha256:abc\n")
    with pytest.raises(ValueError, match="base-images.lock:1"):
        pins.read_lock(lock)


def test_stage_names_and_scratch_are_not_base_images(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM --platform=linux/amd64 python:3.11 AS build\nRUN true\nFROM build AS test\nFROM scratch\n"
    )
    assert pins.from_images(dockerfile) == ["python:3.11"]
