"""`bob evaluate` remote vs embedded, and the remote battle commands against a real scheduler."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from bobench.cli import main as bob
from bobench.config import Settings
from bobench.rpc.background import BackgroundServer
from bobench.rpc.evaluator_service import EvaluatorServicer
from bobench.rpc.server import ServiceBinding
from bobench.v1 import evaluator_pb2_grpc

pytestmark = pytest.mark.integration
torch.set_num_threads(1)
CONFIG = '{"ks": [5, 10]}'


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_bob_evaluate_remote_and_embedded_print_the_same_record(tmp_path, capsys):
    servicer = EvaluatorServicer(
        Settings(cache_dir=str(tmp_path / "srv"), batch_size=16, threads=1), tmp_path / "results"
    )
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    with BackgroundServer([binding]) as running:
        assert (
            bob(
                [
                    "-q",
                    "evaluate",
                    "toy",
                    "toy",
                    "knn",
                    "--protocol-config",
                    CONFIG,
                    "--seed",
                    "1",
                    "--server",
                    running.address,
                    "--json",
                ]
            )
            == 0
        )
        remote = _json_lines(capsys.readouterr().out)[0]
    servicer.close()
    assert (
        bob(
            [
                "-q",
                "evaluate",
                "toy",
                "toy",
                "knn",
                "--protocol-config",
                CONFIG,
                "--seed",
                "1",
                "--json",
                "--cache-dir",
                str(tmp_path / "local"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    embedded = _json_lines(capsys.readouterr().out)[0]
    assert remote["status"] == embedded["status"] == "finished"
    assert remote["run_key"] == embedded["run_key"]
    assert remote["metrics"] == embedded["metrics"]


def test_bob_evaluate_sends_a_user_defined_backbone_along_and_writes_out(tmp_path, capsys):
    from bobench.backbones import BACKBONES

    custom = json.dumps({"name": "cli-remote-r18", "source": "timm", "model_id": "resnet18", "weights": "random",
                         "seed": 3, "input_size": 64, "crop_pct": 1})  # fmt: skip
    servicer = EvaluatorServicer(
        Settings(cache_dir=str(tmp_path / "srv"), batch_size=16, threads=1), tmp_path / "results"
    )
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    argv = ["-q", "evaluate", custom, "toy", "knn", "--protocol-config", CONFIG, "--json"]
    try:
        with BackgroundServer([binding]) as running:
            assert bob([*argv, "--server", running.address, "--out", str(tmp_path / "runs")]) == 0
            remote = _json_lines(capsys.readouterr().out)[0]
        servicer.close()
        BACKBONES._items.pop("cli-remote-r18", None)  # the embedded run registers it afresh
        assert bob([*argv, "--cache-dir", str(tmp_path / "local"), "--threads", "1"]) == 0
        embedded = _json_lines(capsys.readouterr().out)[0]
    finally:
        BACKBONES._items.pop("cli-remote-r18", None)
    assert remote["backbone"] == "cli-remote-r18" and remote["status"] == embedded["status"] == "finished"
    assert remote["run_key"] == embedded["run_key"] and remote["metrics"] == embedded["metrics"]
    stored = [json.loads(line) for line in (tmp_path / "runs" / "results.jsonl").read_text().splitlines()]
    assert [r["run_key"] for r in stored] == [remote["run_key"]]


def test_bob_evaluate_reports_a_bad_request_and_exits_non_zero(tmp_path, capsys):
    servicer = EvaluatorServicer(Settings(cache_dir=str(tmp_path / "srv"), threads=1), tmp_path / "results")
    binding = ServiceBinding.of(evaluator_pb2_grpc.add_EvaluatorServicer_to_server, servicer)
    with BackgroundServer([binding]) as running:
        assert (
            bob(
                [
                    "-q",
                    "evaluate",
                    "toy",
                    "toy",
                    "knn",
                    "--protocol-config",
                    '{"kk": 1}',
                    "--server",
                    running.address,
                ]
            )
            == 2
        )
    servicer.close()
    assert "unknown config key(s) ['kk']" in capsys.readouterr().err


@pytest.fixture
def scheduler(tmp_path):
    from bobench.stack.procs import start_bobench_service, stop_pid

    env = {"OMP_NUM_THREADS": "1", "BOBENCH_THREADS": "1", "BOBENCH_BATCH_SIZE": "16"}
    svc = start_bobench_service(
        "scheduler",
        "bobench.rpc.scheduler_service",
        [
            "--port",
            "0",
            "--store",
            str(tmp_path / "store"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--concurrency",
            "1",
        ],
        tmp_path / "logs",
        env=env,
    )
    yield svc
    stop_pid(svc.pid)


def test_battle_submit_wait_results_and_watch_against_a_scheduler(tmp_path, scheduler, capsys):
    spec = tmp_path / "battle.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli-remote",
                "backbones": ["toy"],
                # knn is deterministic: one run per split seed
                "datasets": [{"name": f"toy-s{s}", "ref": {"name": "toy", "split_seed": s}} for s in (0, 1)],
                "protocols": [{"name": "knn", "config": {"ks": [5]}}],
            }
        )
    )
    assert (
        bob(
            [
                "-q",
                "battle",
                "submit",
                str(spec),
                "--server",
                scheduler.address,
                "--battle-id",
                "cli1",
                "--wait",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "battle cli1: 2 runs" in out and "battle cli1: finished" in out
    assert bob(["-q", "battle", "results", "cli1", "--server", scheduler.address, "--json"]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert len(records) == 2 and {r["dataset"] for r in records} == {"toy-s0", "toy-s1"}
    assert all(r["status"] == "finished" and r["metrics"]["top1_k5"] is not None for r in records)
    out_dir = tmp_path / "remote-results"
    assert bob(["-q", "battle", "results", "cli1", "--server", scheduler.address, "--out", str(out_dir)]) == 0
    capsys.readouterr()
    from bobench.results import read_records

    assert {r.run_key for r in read_records(out_dir)} == {r["run_key"] for r in records}
    assert (out_dir / "report" / "report.html").is_file()
    assert (
        bob(["-q", "battle", "watch", "cli1", "--server", scheduler.address]) == 0
    )  # ended: returns at once
    assert "battle cli1: finished" in capsys.readouterr().out
    assert bob(["-q", "battle", "get", "nope", "--server", scheduler.address]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
