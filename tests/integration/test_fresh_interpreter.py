"""Checks that need a fresh Python interpreter (a subprocess): what an import or a listing pulls in
(no torch, timm, ONNX Runtime...), first-use warnings, and the catalogue the package registers by itself
(other tests register more in this process)."""

from __future__ import annotations

import json
import subprocess
import sys

from bobench.backbones import list_specs


def fresh_python(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=check, timeout=300)


def test_importing_and_listing_backbones_does_not_import_torch_timm_or_onnx():
    code = (
        "import sys, bobench.backbones as b; from bobench.cli.backbones import backbone_table;"
        "rows = backbone_table(); b.get_spec('toy');"
        "print(len(rows), [m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'open_clip') if m in sys.modules])"
    )
    count, heavy = fresh_python("-c", code).stdout.strip().split(" ", 1)
    assert int(count) >= 40
    assert heavy == "[]"


def test_first_use_of_corruptions_emits_no_pkg_resources_warning():
    code = (
        "import numpy as np; from bobench.data.corruptions import corrupt;"
        "corrupt(np.zeros((32, 32, 3), np.uint8), 'gaussian_blur', 1)"
    )
    proc = fresh_python("-W", "error::UserWarning", "-c", code, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pkg_resources" not in proc.stderr


def test_every_builtin_backbone_declares_its_license_and_weights_source():
    offline = [s for s in list_specs() if s.weights == "random" or s.weights.startswith("package:")]
    assert {"efficientnet_lite0", "open_nsfw", "resnet18-random", "toy"} <= {s.name for s in offline}
    # Only what the package registers itself: other tests register user backbones (no license) in
    # this process, so the catalogue is read in a fresh interpreter.
    code = (
        "import json; from bobench.backbones import list_specs; "
        "print(json.dumps([[s.name, s.license, s.weights] for s in list_specs()]))"
    )
    fresh = json.loads(fresh_python("-c", code).stdout)
    assert {"efficientnet_lite0", "open_nsfw", "resnet18-random", "toy"} <= {name for name, _, _ in fresh}
    for name, license, weights in fresh:
        assert license and license != "unknown", name
        assert weights, name


def test_listing_protocols_backbones_datasets_and_runtimes_imports_no_runtime_code():
    code = (
        "import sys\n"
        "from bobench.backbones import BACKBONES\n"
        "from bobench.data import DATASETS, SOURCES\n"
        "from bobench.embed import runtime_names\n"
        "from bobench.protocols import PROTOCOLS\n"
        "assert len(PROTOCOLS) >= 11 and len(BACKBONES) > 10 and 'toy' in DATASETS and 'imagefolder' in SOURCES\n"
        "assert runtime_names() == ('onnxruntime', 'torch', 'triton')\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'tritonclient', 'faiss', 'timm') if m in sys.modules))\n"
    )
    out = fresh_python("-c", code, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
