"""An s3:// dataset through the real services: `bob battle submit`'s path (scheduler process plans it,
fingerprinting from the S3 listing; the evaluator process streams it) against real SeaweedFS. Both
processes get the store settings only from their BOBENCH_S3_* environment, as in the cluster."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from s3_fixtures import S3_ADMIN

from bobench.battle.spec import parse_spec
from bobench.data import load_dataset
from bobench.data.upload import upload_dataset
from bobench.stack.procs import stop_pid
from services import start_evaluator, start_scheduler

pytestmark = pytest.mark.integration


def digits_tree(root):
    digits = load_dataset("uci_digits")
    for label in range(3):
        (root / f"c{label}").mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(digits.labels == label)[:8]):
            Image.fromarray(digits.load(int(i))).save(root / f"c{label}" / f"{n}.png")
    return root


def test_a_battle_on_an_s3_dataset_runs_through_scheduler_and_evaluator(s3_settings, tmp_path):
    from bobench.client import SchedulerClient

    url = "s3://bobench-data/svc-digits"
    ref = upload_dataset(digits_tree(tmp_path / "tree"), url, s3_settings, shards=2).ref
    env = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_S3_ENDPOINT": s3_settings.s3_endpoint,
           "BOBENCH_S3_ACCESS_KEY": S3_ADMIN.access_key, "BOBENCH_S3_SECRET_KEY": S3_ADMIN.secret_key}  # fmt: skip
    spec = parse_spec({"name": "s3-remote", "backbones": ["toy"],
                       "datasets": [{"name": "digits-wds", "ref": ref}, {"name": "digits-tree", "ref": f"{url}-tree/"}],
                       "protocols": [{"name": "knn", "config": {"ks": [1]}}]})  # fmt: skip
    upload_dataset(tmp_path / "tree", f"{url}-tree", s3_settings)
    evaluator = start_evaluator(tmp_path, env)
    scheduler = None
    try:
        scheduler = start_scheduler(tmp_path, evaluator.address, env)
        with SchedulerClient(scheduler.address) as client:
            client.wait_ready()
            battle_id = client.submit(spec).battle_id
            for _ in client.watch(battle_id, timeout_s=120):
                pass
            records = list(client.results(battle_id))
        assert {r.dataset for r in records} == {"digits-wds", "digits-tree"}
        assert all(r.finished for r in records), [r.error for r in records]
        assert all(r.dataset_fingerprint for r in records)
    finally:
        if scheduler is not None:
            stop_pid(scheduler.pid)
        stop_pid(evaluator.pid)
