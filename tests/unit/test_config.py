"""Settings precedence: CLI > environment > battle spec settings > settings file > defaults; named
parse errors, did-you-mean for keys, the service settings, the device check."""

from __future__ import annotations

import argparse

import pytest

from bobench.cli.common import settings_from
from bobench.config import Settings, load_settings
from bobench.errors import InvalidArgument


def test_defaults_then_file_then_env_then_cli(tmp_path, monkeypatch):
    monkeypatch.delenv("BOBENCH_BATCH_SIZE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_settings().batch_size == Settings().batch_size
    cfg = tmp_path / "conf.yaml"
    cfg.write_text("batch_size: 8\nembedder: torch\nthreads: 3\n")
    assert load_settings(cfg).batch_size == 8
    monkeypatch.setenv("BOBENCH_BATCH_SIZE", "16")
    s = load_settings(cfg)
    assert (s.batch_size, s.embedder, s.threads) == (16, "torch", 3)
    assert load_settings(cfg, batch_size=4).batch_size == 4


def test_bobench_yaml_in_the_working_directory_is_picked_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BOBENCH_CONFIG", raising=False)
    (tmp_path / "bobench.yaml").write_text("threads: 5\n")
    assert load_settings().threads == 5


def test_spec_settings_rank_below_cli_and_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BOBENCH_THREADS", raising=False)
    args = argparse.Namespace(
        config=None,
        embedder=None,
        cache_dir=None,
        batch_size=None,
        threads=None,
        triton_url=None,
        device=None,
        settings_flags=True,
    )
    cfg = tmp_path / "conf.yaml"
    cfg.write_text("threads: 3\n")
    args.config = str(cfg)
    assert settings_from(args).threads == 3
    assert settings_from(args, spec={"threads": 2}).threads == 2
    monkeypatch.setenv("BOBENCH_THREADS", "6")
    assert settings_from(args, spec={"threads": 2}).threads == 6
    args.threads = 1
    assert settings_from(args, spec={"threads": 2}).threads == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("batch_size: many\n", "batch_size: expected an integer, got 'many'"),
        ("colour: red\n", "unknown setting 'colour'"),
        ("cahce_dir: /tmp/c\n", r"unknown setting 'cahce_dir' \(did you mean 'cache_dir'\?\)"),
        ("s3_secure: maybe\n", "s3_secure: expected true or false"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_settings_file_names_the_field(tmp_path, content, message):
    cfg = tmp_path / "conf.yaml"
    cfg.write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        load_settings(cfg)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("BOBENCH_BATCH_SIZE", "lots")
    with pytest.raises(InvalidArgument, match="BOBENCH_BATCH_SIZE: expected an integer, got 'lots'"):
        load_settings()


def test_secret_key_is_not_written_out():
    assert "s3_secret_key" not in Settings(s3_secret_key="hunter2").to_dict()


@pytest.mark.parametrize(("field", "value"), [("batch_size", -4), ("batch_size", 0), ("threads", -1)])
def test_out_of_range_settings_are_rejected(field, value):
    with pytest.raises(InvalidArgument, match=field):
        load_settings(**{field: value})


def test_an_unknown_runtime_is_refused_against_the_runtimes_the_process_knows():
    from bobench.embed import runtime_names

    with pytest.raises(
        InvalidArgument, match=r"embedder must be one of onnxruntime, torch, triton, got 'tpu'"
    ):
        load_settings(embedder="tpu", runtimes=runtime_names())
    with pytest.raises(InvalidArgument, match=r"did you mean 'torch'"):
        load_settings(embedder="troch", runtimes=runtime_names())
    assert load_settings(embedder="torch", runtimes=runtime_names()).embedder == "torch"


def test_settings_with_prices_stay_hashable():
    """Settings is a cache key (per-settings S3 clients): the price mapping must not break hashing."""
    priced = Settings(price_per_hour={"cpu": 0.1})
    assert {priced: 1}[priced] == 1 and hash(priced) == hash(Settings())


def test_service_settings_follow_the_same_rule_and_name_bad_variables(tmp_path, monkeypatch):
    from bobench.config import EvaluatorServiceSettings, SchedulerServiceSettings, resolve_settings

    monkeypatch.chdir(tmp_path)
    for name in ("BOBENCH_EVALUATOR_PORT", "BOBENCH_METRICS_PORT", "BOBENCH_SCHEDULER_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    cfg = tmp_path / "conf.yaml"
    cfg.write_text("evaluator_port: 6000\nscheduler_concurrency: 2\nbatch_size: 8\n")
    assert resolve_settings(EvaluatorServiceSettings).evaluator_port == 50051
    assert resolve_settings(EvaluatorServiceSettings, cfg).evaluator_port == 6000
    assert load_settings(cfg).batch_size == 8  # one file serves every process: others' keys are fine
    monkeypatch.setenv("BOBENCH_EVALUATOR_PORT", "6001")
    assert resolve_settings(EvaluatorServiceSettings, cfg).evaluator_port == 6001
    assert resolve_settings(EvaluatorServiceSettings, cfg, evaluator_port=6002).evaluator_port == 6002
    assert resolve_settings(SchedulerServiceSettings, cfg).scheduler_concurrency == 2
    monkeypatch.setenv("BOBENCH_METRICS_PORT", "")
    assert resolve_settings(EvaluatorServiceSettings).metrics_port is None  # unset = off
    monkeypatch.setenv("BOBENCH_EVALUATOR_PORT", "abc")
    with pytest.raises(InvalidArgument, match=r"^BOBENCH_EVALUATOR_PORT: expected an integer, got 'abc'$"):
        resolve_settings(EvaluatorServiceSettings)


def test_a_misspelt_bobench_variable_is_reported_with_the_name_it_resembles(caplog):
    from bobench.config import warn_unknown_env

    env = {"BOBENCH_CAHCE_DIR": "/x", "BOBENCH_PLUGINS": "p", "BOBENCH_SOMETHING_ELSE_ENTIRELY": "1"}
    with caplog.at_level("WARNING", logger="bobench.config"):
        assert warn_unknown_env(env) == [
            "BOBENCH_CAHCE_DIR is not a bobench setting (did you mean 'BOBENCH_CACHE_DIR'?)"
        ]
    assert "BOBENCH_CAHCE_DIR" in caplog.text


def test_a_cuda_device_without_cuda_is_refused():
    import torch

    from bobench.config import check_device

    assert check_device("cpu") == "cpu"
    assert check_device("gpu", cuda_available=lambda: True) == "cuda"
    assert check_device("cuda:1", cuda_available=lambda: True) == "cuda:1"
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: nothing to refuse")
    for device in ("cuda", "gpu", "cuda:0"):
        with pytest.raises(InvalidArgument, match=r"CUDA is not available on this machine"):
            check_device(device)  # the real torch.cuda.is_available()
