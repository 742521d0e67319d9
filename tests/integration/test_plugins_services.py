"""BOBENCH_PLUGINS reaches the services too: an evaluator process started with a plugin file path
(no PYTHONPATH) evaluates the backbone the plugin registers."""

from __future__ import annotations

from bobench.stack.procs import stop_pid
from services import start_evaluator

PLUGIN = """
from bobench.backbones import register_backbone
from bobench.backbones.spec import BackboneSpec


@register_backbone
def svc_plugin_r18():
    return BackboneSpec(name="svc-plugin-r18", source="timm", model_id="resnet18", weights="random",
                        family="cnn", pretraining_method="random", pretraining_data="none", input_size=64,
                        crop_pct=1.0)
"""


def test_an_evaluator_started_with_a_plugin_file_serves_its_backbone(tmp_path):
    from bobench.client import EvaluatorClient

    plugin = tmp_path / "plugins" / "svc_plugins.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    env = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_EMBEDDER": "torch",
           "BOBENCH_PLUGINS": str(plugin)}  # fmt: skip
    evaluator = start_evaluator(tmp_path, env)
    try:
        with EvaluatorClient(evaluator.address) as client:
            record = client.evaluate("svc-plugin-r18", "toy", "knn", {"ks": [5]}, timeout_s=300).record
        assert record.status == "finished", record.error
        assert record.backbone == "svc-plugin-r18" and record.metrics["top1_k5"] is not None
    finally:
        stop_pid(evaluator.pid)
