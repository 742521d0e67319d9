"""A user-defined backbone (a mapping in the spec) works through scheduler -> evaluator processes,
with the same run keys and metrics as the embedded run; a conflicting definition is refused."""

from __future__ import annotations

import pytest

from bobench.battle.runner import run_battle
from bobench.battle.spec import parse_spec
from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.stack.procs import stop_pid
from services import start_evaluator, start_scheduler

pytestmark = pytest.mark.integration

ENV = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_BATCH_SIZE": "16"}
CUSTOM = {"name": "wire-resnet18", "source": "timm", "model_id": "resnet18", "weights": "random", "seed": 7,
          "input_size": 64, "crop_pct": 1}  # fmt: skip
SPEC = {"name": "custom-remote", "backbones": ["toy", CUSTOM], "datasets": ["toy"],
        "protocols": [{"name": "knn", "config": {"ks": [5]}}]}  # fmt: skip


def test_custom_backbone_runs_remotely_with_the_embedded_results(tmp_path):
    from bobench.client import EvaluatorClient, SchedulerClient
    from bobench.results.convert import run_request

    embedded = run_battle(parse_spec(SPEC), tmp_path / "local", Settings(cache_dir=str(tmp_path / "c1"),
                          threads=1, batch_size=16), progress=False)  # fmt: skip
    evaluator = start_evaluator(tmp_path, ENV, cache="c2", results="ev")
    scheduler = None
    try:
        scheduler = start_scheduler(tmp_path, evaluator.address, ENV)
        with SchedulerClient(scheduler.address) as client:
            client.wait_ready()
            battle_id = client.submit(parse_spec(SPEC)).battle_id
            for _ in client.watch(battle_id, timeout_s=120):
                pass
            remote = {r.run_key: r for r in client.results(battle_id)}
        local = {r.run_key: r for r in embedded.records}
        assert remote.keys() == local.keys()
        for key, rec in local.items():
            assert remote[key].finished, remote[key].error
            assert remote[key].metrics == pytest.approx(rec.metrics)
        # the same name with another definition is refused by the evaluator, which stays healthy
        request = run_request("wire-resnet18", "toy", "knn", {"ks": [5]})
        request.backbone.spec_json = '{"name": "wire-resnet18", "source": "timm", "model_id": "resnet34"}'
        with EvaluatorClient(evaluator.address) as ev:
            with pytest.raises(InvalidArgument, match="different definition"):
                list(ev.evaluate_request(request))
            assert ev.evaluate("toy", "toy", "knn", {"ks": [5]}).record.status == "finished"
    finally:
        if scheduler is not None:
            stop_pid(scheduler.pid)
        stop_pid(evaluator.pid)
