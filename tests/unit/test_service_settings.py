"""The services build their settings once at their edge: argparse defaults read no environment, the
one precedence rule resolves service fields, a bad variable is a named error with exit code 2 (no
traceback), and the scheduler refuses spec `embedder:`/`settings:` it would otherwise ignore."""

from __future__ import annotations

import pytest

from bobench.battle.spec import parse_spec
from bobench.errors import InvalidArgument

SPEC = {
    "name": "t",
    "backbones": ["toy"],
    "datasets": ["toy"],
    "protocols": [{"name": "knn", "config": {"ks": [3]}}],
}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./bobench.yaml
    for name in ("CONFIG", "EVALUATOR_PORT", "EVALUATOR_HOST", "SCHEDULER_PORT", "SCHEDULER_CONCURRENCY",
                 "EVALUATORS", "JOB_CONFIG", "METRICS_PORT", "DEVICE", "EMBEDDER"):  # fmt: skip
        monkeypatch.delenv(f"BOBENCH_{name}", raising=False)
    return monkeypatch


def test_evaluator_flags_default_to_none_and_the_environment_ranks_below_them(clean_env, tmp_path):
    from bobench.rpc.evaluator_service import build_parser, resolve

    clean_env.setenv("BOBENCH_EVALUATOR_PORT", "6100")
    clean_env.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = build_parser().parse_args([])
    assert args.port is None and args.host is None  # argparse reads no environment
    settings, service = resolve(args)
    assert (service.evaluator_port, service.evaluator_host, service.max_concurrent_runs) == (
        6100,
        "127.0.0.1",
        1,
    )
    assert settings.cache_dir == str(tmp_path / "cache")
    _, service = resolve(build_parser().parse_args(["--port", "0", "--max-concurrent-runs", "3"]))
    assert (service.evaluator_port, service.max_concurrent_runs) == (0, 3)


def test_scheduler_flags_default_to_none_and_resolve_by_the_same_rule(clean_env, tmp_path):
    from bobench.rpc.scheduler_service import build_parser, resolve

    cfg = tmp_path / "conf.yaml"
    cfg.write_text(f"scheduler_concurrency: 2\nevaluators: 'a:1,b:2'\ncache_dir: {tmp_path / 'c'}\n")
    args = build_parser().parse_args(["--config", str(cfg)])
    assert args.concurrency is None and args.evaluators is None and args.job_config is None
    _, service = resolve(args)
    assert (service.scheduler_concurrency, service.evaluators, service.scheduler_port) == (
        2,
        "a:1,b:2",
        50052,
    )
    clean_env.setenv("BOBENCH_SCHEDULER_CONCURRENCY", "5")
    assert resolve(args)[1].scheduler_concurrency == 5
    args = build_parser().parse_args(["--config", str(cfg), "--concurrency", "7"])
    assert resolve(args)[1].scheduler_concurrency == 7


@pytest.mark.parametrize(
    ("service", "variable"),
    [("evaluator", "BOBENCH_EVALUATOR_PORT"), ("scheduler", "BOBENCH_SCHEDULER_PORT")],
)
def test_a_bad_variable_is_a_named_error_with_the_config_exit_code(clean_env, capsys, service, variable):
    import importlib

    module = importlib.import_module(f"bobench.rpc.{service}_service")
    clean_env.setenv(variable, "abc")
    assert module.main([]) == 2
    err = capsys.readouterr().err
    assert f"{variable}: expected an integer, got 'abc'" in err and "Traceback" not in err


def test_the_evaluator_refuses_a_cuda_device_without_cuda(clean_env, capsys):
    import torch

    from bobench.rpc.evaluator_service import main

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: nothing to refuse")
    assert main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("patch", "named"),
    [({"embedder": "torch"}, "embedder"), ({"settings": {"batch_size": 8}}, "settings.batch_size")],
)
def test_the_scheduler_refuses_spec_settings_it_would_ignore(tmp_path, patch, named):
    from bobench.battle.executors.local import LocalExecutor
    from bobench.battle.scheduler import Scheduler
    from bobench.config import Settings
    from bobench.store import LocalStore

    executor = LocalExecutor(Settings(cache_dir=str(tmp_path / "cache")))
    scheduler = Scheduler(
        LocalStore(tmp_path / "store"), [executor], planner=lambda spec, bid: []
    )  # not started
    with pytest.raises(InvalidArgument, match=rf"{named}: a battle submitted to the scheduler runs with"):
        scheduler.submit(parse_spec({**SPEC, **patch}))
    assert scheduler.list() == []  # nothing was stored
    assert scheduler.submit(parse_spec(SPEC))  # without them the battle is accepted
