"""The `bob` flags: global flags before or after the subcommand, -q/-v, --config as the settings file
only (the protocol config and the fine-tune recipe have their own flags), --device read and checked,
plugin runtimes selectable with --embedder."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from bobench.cli import build_parser, main, setup_logging

SPEC = "name: t\nbackbones: [toy]\ndatasets: [toy]\nprotocols: [{name: knn, config: {ks: [3]}}]\n"


@pytest.fixture
def restore_logging():
    root, bobench = logging.getLogger(), logging.getLogger("bobench")
    levels = root.level, bobench.level
    yield
    root.setLevel(levels[0])
    bobench.setLevel(levels[1])
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "F.yaml", "-q", "battle", "run", "s.yaml", "-o", "out"],
        ["battle", "run", "s.yaml", "-o", "out", "--config", "F.yaml", "-q"],
        ["battle", "--config", "F.yaml", "run", "s.yaml", "-q", "-o", "out"],
    ],
)
def test_global_flags_are_accepted_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert (args.config, args.quiet, args.spec, args.out) == ("F.yaml", True, "s.yaml", "out")


def test_a_subcommand_without_global_flags_keeps_those_given_before_it():
    args = build_parser().parse_args(["--config", "F.yaml", "-v", "battle", "run", "s.yaml", "-o", "o", "-v"])
    assert args.config == "F.yaml" and args.quiet is False
    assert args.verbose + args.sub_verbose == 2  # main adds them up: -vv


def test_quiet_silences_warnings_and_verbose_shows_debug_logs(restore_logging):
    probe = logging.getLogger("bobench.protocols.linear_probe")  # the grid-edge warning's logger
    setup_logging(0, quiet=True)
    assert not probe.isEnabledFor(logging.WARNING) and probe.isEnabledFor(logging.ERROR)
    setup_logging(0, quiet=False)
    assert probe.isEnabledFor(logging.INFO) and not probe.isEnabledFor(logging.DEBUG)
    setup_logging(1, quiet=False)
    assert probe.isEnabledFor(logging.DEBUG)  # -v: debug logs, as its help says
    assert not logging.getLogger("PIL").isEnabledFor(logging.DEBUG)  # libraries only with -vv


def test_the_grid_edge_warning_is_not_printed_with_q(tmp_path, capsys, restore_logging):
    setup_logging(0, quiet=True)
    logging.getLogger("bobench.protocols.linear_probe").warning("chosen C is at the edge of the grid")
    assert "edge of the grid" not in capsys.readouterr().err


def test_device_cuda_without_cuda_is_refused_not_run_on_cpu(tmp_path, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: nothing to refuse")
    monkeypatch.delenv("BOBENCH_DEVICE", raising=False)
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    for device in ("cuda", "gpu"):
        rc = main(["battle", "run", str(spec), "-o", str(tmp_path / "out"), "--device", device])
        assert rc == 2
        assert "CUDA is not available on this machine" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.jsonl").exists()  # nothing ran on the CPU instead
    spec.write_text(SPEC + "settings: {device: cuda}\n")  # a spec's device is checked the same way
    assert main(["battle", "run", str(spec), "-o", str(tmp_path / "out")]) == 2


def test_device_flag_reaches_the_settings(monkeypatch):
    import torch

    from bobench.cli.common import settings_from

    monkeypatch.delenv("BOBENCH_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    args = build_parser().parse_args(["battle", "run", "s.yaml", "-o", "o", "--device", "gpu"])
    assert settings_from(args).device == "cuda"


def test_config_flag_is_the_settings_file_everywhere(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cahce_dir: /tmp/x\n")
    for argv in (
        ["--config", str(bad), "serve", "embedder", "--repo", str(tmp_path / "repo")],
        ["serve", "embedder", "--repo", str(tmp_path / "repo"), "--config", str(bad)],
        ["evaluate", "toy", "toy", "knn", "--config", str(bad)],
        ["finetune", "toy", "toy", "-o", str(tmp_path / "ft"), "--config", str(bad)],
    ):
        assert main(argv) == 2, argv
        assert "unknown setting 'cahce_dir' (did you mean 'cache_dir'?)" in capsys.readouterr().err


def test_a_json_protocol_config_given_to_config_points_at_protocol_config(capsys):
    assert main(["evaluate", "toy", "toy", "knn", "--config", '{"ks": [3]}']) == 2
    assert "--protocol-config" in capsys.readouterr().err


def test_evaluate_takes_the_protocol_config_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BOBENCH_EVALUATOR", raising=False)
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["evaluate", "toy", "toy", "knn", "--protocol-config", '{"ks": [3]}', "--json"])
    record = json.loads(capsys.readouterr().out)
    assert rc == 0 and record["config"]["ks"] == [3]


def test_a_plugin_embedder_can_be_selected_by_name(tmp_path, capsys, monkeypatch):
    from bobench.embed import EMBEDDERS

    marker = tmp_path / "called.txt"
    (tmp_path / "my_runtime_plugin.py").write_text(
        "from pathlib import Path\n"
        "from bobench.embed import EMBEDDERS, make_embedder\n\n"
        "def make_mine(backbone, **options):\n"
        f"    Path({str(marker)!r}).write_text('yes')\n"
        "    options.pop('device', None)\n"
        "    return make_embedder('torch', backbone, **options)\n\n"
        "EMBEDDERS.add('my-runtime', make_mine)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BOBENCH_PLUGINS", "my_runtime_plugin")
    monkeypatch.setenv("BOBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BOBENCH_EVALUATOR", raising=False)
    try:
        rc = main(
            ["evaluate", "toy", "toy", "knn", "--protocol-config", '{"ks": [3]}', "--embedder", "my-runtime"]
        )
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert marker.read_text() == "yes"  # the plugin's factory built the embedder
        args = build_parser().parse_args(["battle", "run", "s.yaml", "-o", "o", "--embedder", "my-runtime"])
        assert args.embedder == "my-runtime"  # --embedder's choices are read after the plugins load
    finally:
        EMBEDDERS._items.pop("my-runtime", None)
        sys.modules.pop("my_runtime_plugin", None)


def test_a_fine_tune_recipe_given_to_config_points_at_recipe(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("epochs: 2\n")
    assert main(["finetune", "toy", "toy", "-o", str(tmp_path / "ft"), "--config", str(recipe)]) == 2
    assert "unknown setting 'epochs'" in (err := capsys.readouterr().err) and "--recipe FILE" in err
