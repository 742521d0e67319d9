"""Data roots against real Evaluator and Scheduler processes: client paths outside `data_roots`
(traversal, `/`, `/proc`, `/etc/passwd`, `/proc/self/environ`, a symlink out of a root, weights files)
are PERMISSION_DENIED, errors never quote a file or the environment, server-side spec settings and
torchhub backbones are refused; after each the service still answers a good request."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument, PermissionDenied
from bobench.results.convert import run_request
from bobench.stack.procs import stop_pid
from services import start_evaluator, start_scheduler

pytestmark = pytest.mark.integration

SECRET = "Zq9-secret-value-7731"
KNN = ("knn", {"ks": [3]})


def _tree(root, per_class: int = 6):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((16, 16, 3), 30 * i + (100 if c == "b" else 0), np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(evaluator address, scheduler address, data root, outside folder) with BOBENCH_DATA_ROOTS set."""
    tmp = tmp_path_factory.mktemp("roots")
    data, outside = tmp / "data", tmp / "outside"
    _tree(data / "ok")
    _tree(outside / "tree")
    (data / "escape").symlink_to(outside / "tree", target_is_directory=True)
    (data / "secret.csv").write_text(f"AWS_SECRET={SECRET}\nline two\n")
    env = {
        "OMP_NUM_THREADS": "1",
        "BOBENCH_THREADS": "1",
        "BOBENCH_BATCH_SIZE": "16",
        "BOBENCH_DATA_ROOTS": str(data),
        "BOBENCH_S3_SECRET_KEY": SECRET,  # what /proc/self/environ would leak
    }
    evaluator = start_evaluator(tmp, env)
    scheduler = None
    try:
        scheduler = start_scheduler(tmp, evaluator.address, env)
        yield evaluator.address, scheduler.address, data, outside
    finally:
        if scheduler is not None:
            stop_pid(scheduler.pid)
        stop_pid(evaluator.pid)


@pytest.fixture(scope="module")
def evaluator(stack):
    from bobench.client import EvaluatorClient

    with EvaluatorClient(stack[0]) as client:
        client.wait_ready()
        yield client


def _still_serving(client) -> None:
    assert client.evaluate("toy", "toy", *KNN).record.status == "finished"


REFUSED = [
    ("imagefolder /", {"type": "imagefolder", "path": "/"}),
    ("imagefolder /proc", {"type": "imagefolder", "path": "/proc"}),
    ("traversal", {"type": "imagefolder", "path": "{data}/ok/../../outside/tree"}),
    ("symlink out of the root", {"type": "imagefolder", "path": "{data}/escape"}),
    ("manifest /etc/passwd", {"type": "manifest", "path": "/etc/passwd"}),
    ("manifest /proc/self/environ", {"type": "manifest", "path": "/proc/self/environ"}),
    ("webdataset /", {"type": "webdataset", "path": "/"}),
    ("string path", "{data}/../outside/tree"),
]


@pytest.mark.parametrize("ref", [r for _, r in REFUSED], ids=[n for n, _ in REFUSED])
def test_evaluator_refuses_paths_outside_the_data_roots(stack, evaluator, ref):
    data = stack[2]
    ref = json.loads(json.dumps(ref).replace("{data}", str(data)))
    with pytest.raises(PermissionDenied, match="data_roots") as info:
        evaluator.evaluate("toy", ref, *KNN)
    assert SECRET not in str(info.value) and "root:x" not in str(info.value)
    _still_serving(evaluator)


def test_evaluator_reads_a_dataset_under_its_data_root(stack, evaluator):
    result = evaluator.evaluate("toy", {"type": "imagefolder", "path": str(stack[2] / "ok")}, *KNN)
    assert result.record.status == "finished", result.record.error


def test_a_manifest_error_never_quotes_the_file(stack, evaluator):
    with pytest.raises(InvalidArgument, match="secret.csv") as info:
        evaluator.evaluate("toy", {"type": "manifest", "path": str(stack[2] / "secret.csv")}, *KNN)
    assert SECRET not in str(info.value)
    _still_serving(evaluator)


def test_client_defined_backbones_may_not_read_outside_roots_or_run_hub_code(stack, evaluator):
    outside = stack[3]
    (outside / "w.pth").write_bytes(b"not read")
    weights = {"name": "far-weights", "source": "toy", "model_id": "toy", "weights": str(outside / "w.pth"),
               "family": "cnn", "pretraining_method": "random", "pretraining_data": "none"}  # fmt: skip
    hub = {"name": "hub-code", "source": "torchhub", "model_id": "evil/repo:main/entry", "weights": "hub",
           "family": "cnn", "pretraining_method": "ssl", "pretraining_data": "none"}  # fmt: skip
    for entry, message in ((weights, "data_roots"), (hub, "remote code")):
        request = run_request(entry["name"], "toy", *KNN)
        request.backbone.spec_json = json.dumps(entry)
        with pytest.raises(PermissionDenied, match=message):
            list(evaluator.evaluate_request(request))
    _still_serving(evaluator)


def test_scheduler_refuses_server_side_settings_torchhub_and_outside_paths(stack):
    from bobench.client import SchedulerClient

    _, address, data, outside = stack
    base = {"name": "roots", "backbones": ["toy"], "datasets": ["toy"], "protocols": [{"name": "knn",
            "config": {"ks": [3]}}]}  # fmt: skip
    hub = {"name": "hub-code-2", "source": "torchhub", "model_id": "evil/repo:main/entry", "weights": "hub",
           "family": "cnn", "pretraining_method": "ssl", "pretraining_data": "none"}  # fmt: skip
    refused = [
        ({**base, "settings": {"cache_dir": "/"}}, "cache_dir"),
        ({**base, "settings": {"triton_url": "10.0.0.1:8001", "batch_size": 8}}, "triton_url"),
        ({**base, "backbones": ["toy", hub]}, "remote code"),
        ({**base, "datasets": [{"name": "far", "ref": {"type": "imagefolder", "path": str(outside / "tree")}}]},
         "data_roots"),
    ]  # fmt: skip
    with SchedulerClient(address) as client:
        client.wait_ready()
        for spec, message in refused:
            with pytest.raises(PermissionDenied, match=message):
                client.submit(parse_spec(spec))
        with pytest.raises(InvalidArgument, match="settings.batch_size"):  # would be ignored: refused
            client.submit(parse_spec({**base, "settings": {"batch_size": 8}}))
        ok = {**base, "datasets": [{"name": "ok", "ref": str(data / "ok")}]}
        battle_id = client.submit(parse_spec(ok)).battle_id
        for _ in client.watch(battle_id, timeout_s=120):
            pass
        (result,) = client.results(battle_id)
        assert result.finished, result.error
