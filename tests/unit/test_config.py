"""Settings precedence: CLI > environment > battle spec settings > settings file > defaults."""

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
    )
    assert settings_from(args, threads=2).threads == 2
    monkeypatch.setenv("BOBENCH_THREADS", "6")
    assert settings_from(args, threads=2).threads == 6
    args.threads = 1
    assert settings_from(args, threads=2).threads == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("batch_size: many\n", "batch_size must be int"),
        ("colour: red\n", "unknown setting 'colour'"),
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
    with pytest.raises(InvalidArgument, match="BOBENCH_BATCH_SIZE"):
        load_settings()


def test_secret_key_is_not_written_out():
    assert "s3_secret_key" not in Settings(s3_secret_key="hunter2").to_dict()


@pytest.mark.parametrize(
    ("field", "value"), [("batch_size", -4), ("batch_size", 0), ("threads", -1), ("embedder", "tpu")]
)
def test_out_of_range_settings_are_rejected(field, value):
    with pytest.raises(InvalidArgument, match=field):
        load_settings(**{field: value})


def test_settings_with_prices_stay_hashable():
    """Settings is a cache key (per-settings S3 clients): the price mapping must not break hashing."""
    priced = Settings(price_per_hour={"cpu": 0.1})
    assert {priced: 1}[priced] == 1 and hash(priced) == hash(Settings())
