"""`make up` / `make down` as library calls: the local stack starts on loopback with S3 as the store,
a battle submitted to its scheduler finishes, and `down` stops exactly the recorded PIDs."""

from __future__ import annotations

import json

import pytest

from bobench.stack import down, read_state, stack_env, up
from bobench.stack.procs import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stack_up_runs_a_battle_into_s3_and_down_stops_every_pid(tmp_path, monkeypatch):
    from bobench.auth_client import ClientAuth
    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient
    from bobench.config import Settings
    from bobench.errors import FailedPrecondition
    from bobench.store import open_store

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BOBENCH_THREADS", "1")
    monkeypatch.setenv("BOBENCH_EMBEDDER", "torch")
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    state_dir = tmp_path / ".bobench"
    state = up(state_dir, evaluators=2, embedder=False, scrape_interval_s=1)
    try:
        assert json.loads((state_dir / "stack.json").read_text()) == state == read_state(state_dir)
        names = [s["name"] for s in state["services"]]
        assert names[:4] == ["seaweedfs", "evaluator-0", "evaluator-1", "scheduler"]
        assert all(s["address"].startswith("127.0.0.1:") for s in state["services"])
        assert (state_dir / "logs" / "scheduler.log").exists()
        with pytest.raises(FailedPrecondition, match="already up"):
            up(state_dir)
        scheduler = next(s for s in state["services"] if s["name"] == "scheduler")
        with SchedulerClient(scheduler["address"], auth=ClientAuth.from_env(stack_env(state_dir))) as client:
            bid = client.submit(
                parse_spec(  # knn is deterministic: one run per split seed
                    {
                        "backbones": ["toy"],
                        "datasets": [
                            {"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in (0, 1)
                        ],
                        "protocols": ["knn"],
                    }
                )
            ).battle_id
            for _ in client.watch(bid, timeout_s=120):
                pass
            assert client.get(bid).counts.finished == 2
        assert "BOBENCH_S3_SECRET_KEY" not in state["env"]  # only in the 0600 secrets file
        assert (state_dir / "secrets.env").stat().st_mode & 0o777 == 0o600
        env = stack_env(state_dir)
        store = open_store(
            state["store"],
            Settings(
                s3_endpoint=env["BOBENCH_S3_ENDPOINT"],
                s3_access_key=env["BOBENCH_S3_ACCESS_KEY"],
                s3_secret_key=env["BOBENCH_S3_SECRET_KEY"],
            ),
        )
        assert len(store.list("results/")) == 2 and store.exists(f"battles/{bid}/battle.json")
    finally:
        stopped = down(state_dir)
    assert sorted(stopped) == sorted(s["name"] for s in state["services"])
    assert not any(pid_alive(s["pid"]) for s in state["services"])
    assert read_state(state_dir) is None and down(state_dir) == []


def test_stack_serves_from_s3_and_publishes_a_never_served_backbone_on_submit(tmp_path, monkeypatch):
    """The local stack on the cluster's path: Triton reads s3://bobench/triton-models, `up` publishes
    the demo backbone, and a battle with a backbone never served before is published, then run
    (the evaluator through Triton with the service key, which a client without it lacks)."""
    from bobench.auth_client import ClientAuth
    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient
    from bobench.errors import Unavailable
    from bobench.serving.triton import tritonserver_home

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BOBENCH_THREADS", "1")
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    state_dir = tmp_path / ".bobench"
    state = up(state_dir, evaluators=1, embedder=True, embedder_backbones=("toy",), scrape_interval_s=1)
    try:
        secret = stack_env(state_dir)["BOBENCH_S3_SECRET_KEY"]
        assert secret not in (state_dir / "stack.json").read_text()
        assert any(n.startswith("served toy version") for n in state["notes"]), state["notes"]
        _check_triton_keys(state, state_dir)
        fresh = {"name": "toy_stack_fresh", "source": "toy", "model_id": "toy-conv3", "seed": 21,
                 "input_size": 32, "embed_dim": 32}  # fmt: skip
        scheduler = next(s for s in state["services"] if s["name"] == "scheduler")
        with SchedulerClient(scheduler["address"], auth=ClientAuth.from_env(stack_env(state_dir))) as client:
            bid = client.submit(
                parse_spec({"backbones": ["toy", fresh], "datasets": ["toy"], "protocols": ["knn"]})
            ).battle_id
            for _ in client.watch(bid, timeout_s=240):
                pass
            records = list(client.results(bid))
        assert len(records) == 2
        for record in records:
            assert record.finished, record.error
            assert record.environment["runtime"] == "triton"
            assert record.environment["served_model"] == record.backbone
    finally:
        down(state_dir)
    assert not (state_dir / "secrets.env").exists()


def _environ(pid: int) -> dict[str, str]:
    raw = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _check_triton_keys(state, state_dir) -> None:
    """The stack's Triton refuses inference without the service key; only the evaluators hold that
    key and only the scheduler (the publisher) the admin key."""
    from bobench.embed import make_embedder
    from bobench.errors import PermissionDenied
    from bobench.stack import read_secrets

    keys = read_secrets(state_dir)
    embedder = next(s["address"] for s in state["services"] if s["name"] == "embedder")
    with pytest.raises(PermissionDenied, match="triton_service_key"):
        make_embedder("triton", "toy", url=embedder, retries=0, retry_window_s=0)
    env = {
        s["name"]: _environ(s["pid"]) for s in state["services"] if s["name"] in ("evaluator-0", "scheduler")
    }
    assert env["evaluator-0"]["BOBENCH_TRITON_SERVICE_KEY"] == keys["BOBENCH_TRITON_SERVICE_KEY"]
    assert "BOBENCH_TRITON_ADMIN_KEY" not in env["evaluator-0"]
    assert env["scheduler"]["BOBENCH_TRITON_ADMIN_KEY"] == keys["BOBENCH_TRITON_ADMIN_KEY"]
    assert "BOBENCH_TRITON_SERVICE_KEY" not in env["scheduler"]
    assert keys["BOBENCH_TRITON_SERVICE_KEY"] != keys["BOBENCH_TRITON_ADMIN_KEY"]


def _stack_cli(state_dir, *args: str, timeout_s: float = 600) -> str:
    from stack_secrets import stack_cli

    return stack_cli(state_dir, *args, timeout_s=timeout_s)


def test_stack_cli_leaks_no_secret_in_stack_json_logs_stored_objects_or_output(tmp_path, monkeypatch):
    """`python -m bobench.stack up` with the Triton embedder, a battle through it, `status`, `down`:
    no secret value (S3 secret key, Triton admin key, auth tokens, SeaweedFS JWT keys) appears in any
    file under the state dir except the 0600 secret files, nor in what the CLI printed. (The chaos
    test of the embedder greps the same way after a fault, when error paths have logged.)"""
    from stack_secrets import files_holding, stack_secret_values

    from bobench.battle.spec import parse_spec
    from bobench.client import SchedulerClient
    from bobench.errors import Unavailable
    from bobench.serving.triton import tritonserver_home
    from bobench.stack import secret_files

    try:
        tritonserver_home()
    except Unavailable as exc:
        pytest.skip(str(exc))
    for name, value in {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    state_dir = tmp_path / ".bobench"
    printed = _stack_cli(state_dir, "up", "--evaluators", "1", "--backbones", "toy")
    try:
        values = stack_secret_values(state_dir)
        for path in secret_files(state_dir):
            assert path.stat().st_mode & 0o777 == 0o600, path
        status_out = _stack_cli(state_dir, "status")
        printed += status_out
        status = json.loads(status_out[status_out.index("{") :])
        assert {s["name"] for s in status["services"]} >= {
            "seaweedfs",
            "embedder",
            "evaluator-0",
            "scheduler",
        }
        for name, value in stack_env(state_dir).items():
            monkeypatch.setenv(name, value)  # the client's credentials, whatever the stack issues
        scheduler = next(s for s in read_state(state_dir)["services"] if s["name"] == "scheduler")
        with SchedulerClient(scheduler["address"]) as client:
            bid = client.submit(
                parse_spec({"backbones": ["toy"], "datasets": ["toy"], "protocols": ["knn", "linear_probe"]})
            ).battle_id
            for _ in client.watch(bid, timeout_s=300):
                pass
            records = list(client.results(bid))
        assert len(records) >= 2 and all(r.finished for r in records), [r.error for r in records]
        assert {r.environment["runtime"] for r in records} == {"triton"}
    finally:
        printed += _stack_cli(state_dir, "down")
    leaks = files_holding(state_dir, values)
    assert leaks == {}, f"secrets found in {leaks}"
    assert [name for name, v in values.items() if v in printed] == []
    assert (state_dir / "logs" / "embedder.log").is_file() and (
        state_dir / "logs" / "scheduler.log"
    ).is_file()
