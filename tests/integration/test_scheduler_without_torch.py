"""The scheduler needs no torch: its module imports, and a battle of bundled and folder datasets over
every built-in protocol plans, in a fresh interpreter where importing torch fails (the scheduler
image installs none: `pyproject.toml` `schedule` extra, `services/scheduler/Dockerfile`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

REFUSE_TORCH = textwrap.dedent(
    """
    import sys

    class RefuseTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test (importing {name})")
            return None

    sys.meta_path.insert(0, RefuseTorch())
    """
)


def run_python(code: str, tmp_path: Path) -> dict:
    env = {**os.environ, "BOBENCH_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_scheduler_service_imports_no_torch(tmp_path):
    code = "import sys, json; import bobench.rpc.scheduler_service; print(json.dumps('torch' in sys.modules))"
    assert run_python(code, tmp_path) is False


def test_the_scheduler_plans_bundled_and_folder_datasets_with_torch_blocked(tmp_path):
    root = tmp_path / "photos"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    spec = {
        "name": "no-torch",
        "backbones": ["toy", "resnet18-random"],
        "datasets": [
            "toy",
            {"name": "fashion", "ref": {"name": "fashion_mnist", "train_per_class": 2}},
            "lfw",
            "tree_crowns",
            {"name": "photos", "ref": {"type": "imagefolder", "path": str(root)}},
        ],
        "protocols": [
            "linear_probe", "knn", "fewshot", "ood", "efficiency", "finetune",
            {"name": "detection", "datasets": ["tree_crowns"]},
            {"name": "instance_segmentation", "datasets": ["tree_crowns"]},
            {"name": "ood_detection", "datasets": ["tree_crowns"]},
            {"name": "serving_latency", "datasets": ["toy"]},
            {"name": "retrieval", "datasets": ["toy"]},
        ],
        "seeds": [0, 1],
    }  # fmt: skip
    code = REFUSE_TORCH + textwrap.dedent(
        f"""
        import json
        import bobench.rpc.scheduler_service  # noqa: F401
        from bobench.battle.plan import plan_battle
        from bobench.battle.spec import parse_spec

        plans = plan_battle(parse_spec(json.loads({json.dumps(json.dumps(spec))})))
        print(json.dumps({{
            "runs": len(plans),
            "errors": [p.error for p in plans if p.error],
            "fingerprints": sorted({{p.dataset: p.dataset_fingerprint for p in plans}}.items()),
            "torch": "torch" in sys.modules,
        }}))
        """
    )
    result = run_python(code, tmp_path)
    assert result["torch"] is False
    assert result["errors"] == []
    assert result["runs"] > 20
    assert all(fingerprint for _, fingerprint in result["fingerprints"])
