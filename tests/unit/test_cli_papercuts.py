"""What a new user hit on the `bob` command (issue 11), each reproduced and fixed: an `--out` that is a
file, a closed pipe, `protocols show` / `datasets show`, per-run lines with seed and config, `bob
evaluate --out` with a user-defined backbone as JSON, and `bob report --out`."""

from __future__ import annotations

import json

import pytest

from bobench.cli import main as bob
from bobench.cli.common import run_title, short_config
from bobench.exit_codes import BROKEN_PIPE
from bobench.results import RunRecord, RunStatus, read_records

SPEC = "name: tiny\nbackbones: [toy]\ndatasets: [toy]\nprotocols:\n  - name: knn\n    config: {ks: [5]}\n"


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "results"
    path.write_text("not a directory\n")
    return path


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        bob(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["battle", "run", "spec.yaml", "--out", "{file}"],
        ["report", "somewhere", "--out", "{file}"],
        ["evaluate", "toy", "toy", "knn", "--out", "{file}"],
        ["finetune", "toy", "toy", "--out", "{file}"],
        ["export", "toy", "--out", "{file}"],
        ["battle", "results", "b1", "--out", "{file}"],
    ],
)
def test_an_out_that_is_a_file_is_a_usage_error_not_a_traceback(capsys, a_file, argv):
    err = _usage_error(capsys, [a.replace("{file}", str(a_file)) for a in argv])
    assert f"{a_file} is a file; give a directory" in err and "Traceback" not in err


def test_an_out_under_a_file_names_the_file(capsys, a_file):
    err = _usage_error(capsys, ["report", "somewhere", "--out", str(a_file / "report")])
    assert f"is under {a_file}, which is a file" in err


def test_a_closed_pipe_exits_141_quietly(capsys, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert bob(["backbones", "list", "--json"]) == BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


def test_protocols_show_prints_metadata_and_config_defaults(capsys):
    assert bob(["protocols", "show", "knn"]) == 0
    out = capsys.readouterr().out
    assert "task:" in out and "classification" in out and "version:" in out and "primary_metric:" in out
    assert "ks: [10, 20]" in out and "temperature: 0.07" in out
    assert bob(["protocols", "show", "knn", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "knn" and shown["task"] == "classification" and shown["version"]
    assert shown["config"]["ks"] == [10, 20] and shown["higher_is_better"]["top1"] is True


def test_datasets_show_prints_the_catalogue_row_and_option_defaults(capsys):
    assert bob(["datasets", "show", "toy", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "toy" and shown["classes"] == 4 and shown["task"] == "classification"
    assert shown["options"] == {"per_class": 20, "size_px": 32}
    assert bob(["datasets", "show", "toy"]) == 0
    out = capsys.readouterr().out
    assert "per_class: 20" in out and '{"name": "toy", KEY: VALUE}' in out


@pytest.mark.parametrize(
    ("kind", "typo", "right"), [("protocols", "knnn", "knn"), ("datasets", "lfq", "lfw")]
)
def test_show_of_an_unknown_name_suggests_the_close_one(capsys, kind, typo, right):
    assert bob([kind, "show", typo]) == 2
    assert f"did you mean '{right}'" in capsys.readouterr().err


def _record(protocol="knn", config=None, seed=3) -> RunRecord:
    return RunRecord(
        run_key="k", backbone="toy", dataset="toy", protocol=protocol, protocol_version="1",
        task="classification", config=config or {}, seed=seed, status=RunStatus.FINISHED,
    )  # fmt: skip


def test_run_lines_show_the_seed_and_what_differs_from_the_protocol_defaults():
    from bobench.protocols import get_protocol

    defaults = get_protocol("knn").defaults
    assert run_title(_record(config=dict(defaults))) == "toy · toy · knn · seed 3 · defaults"
    assert run_title(_record(config={**defaults, "ks": [5]})) == "toy · toy · knn · seed 3 · ks=[5]"
    long = short_config("no-such-protocol", {f"key{i}": "x" * 10 for i in range(10)})
    assert len(long) == 60 and long.endswith("...") and long.startswith('key0="xxxxxxxxxx"')


def test_battle_run_prints_seed_and_config_per_run(tmp_path, capsys, settings):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    argv = ["battle", "run", str(spec), "--out", str(tmp_path / "out"), "--cache-dir", settings.cache_dir]
    assert bob([*argv, "--embedder", "torch", "--no-progress", "--no-report"]) == 0
    assert "toy · toy · knn · seed 0 · ks=[5]: top1=" in capsys.readouterr().out


def test_evaluate_takes_a_user_defined_backbone_as_json_and_appends_to_out(tmp_path, capsys, settings):
    custom = {"name": "cli-r18", "source": "timm", "model_id": "resnet18", "weights": "random", "seed": 7,
              "input_size": 64, "crop_pct": 1}  # fmt: skip
    out = tmp_path / "runs"
    argv = ["evaluate", json.dumps(custom), "toy", "knn", "--protocol-config", '{"ks": [5]}', "--embedder", "torch",
            "--cache-dir", settings.cache_dir, "--out", str(out)]  # fmt: skip
    assert bob(argv) == 0
    assert bob([*argv[:-2], "--seed", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "cli-r18 · toy · knn · seed 0 · ks=[5]" in captured.out
    assert f"record appended to {out / 'results.jsonl'}" in captured.err
    records = read_records(out)
    assert [(r.backbone, r.seed, r.status) for r in records] == [
        ("cli-r18", 0, "finished"),
        ("cli-r18", 1, "finished"),
    ]


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ('{"name": "x"', "BACKBONE: not valid JSON"),
        ('{"name": "x"}', "BACKBONE: a custom backbone needs"),
        ('{"name": "x", "source": "timm", "model_id": "resnet18", "wieghts": "random"}', "wieghts"),
    ],
)
def test_evaluate_names_the_backbone_argument_in_its_errors(capsys, backbone, message):
    assert bob(["evaluate", backbone, "toy", "knn"]) == 2
    assert message in capsys.readouterr().err


def test_report_out_writes_the_report_where_asked(tmp_path, capsys, settings):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    results = tmp_path / "results"
    run = ["battle", "run", str(spec), "--out", str(results), "--cache-dir", settings.cache_dir]
    assert bob([*run, "--embedder", "torch", "--no-progress", "--no-report"]) == 0
    assert bob(["report", str(results), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").is_file() and not (results / "report").exists()
    assert bob(["report", str(results)]) == 0  # the default, as its help says: RESULTS_DIR/report
    assert (results / "report" / "report.html").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        bob(["report", "--help"])
    assert "default: RESULTS_DIR/report" in " ".join(capsys.readouterr().out.split())


def _image_folder(root, classes=("cat", "dog"), per_class=6):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _battle(tmp_path, capsys, settings, dataset_ref: str, protocol: str) -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: mine\nbackbones: [toy]\ndatasets:\n  - name: my-pets\n    ref: {dataset_ref}\nprotocols: [{protocol}]\n"
    )
    argv = ["battle", "run", str(spec), "--out", str(tmp_path / "out"), "--cache-dir", settings.cache_dir]
    assert bob([*argv, "--embedder", "torch", "--no-progress", "--no-report"]) == 1
    return capsys.readouterr().err


def test_a_data_error_names_the_dataset_as_the_spec_does(tmp_path, capsys, settings):
    folder = _image_folder(tmp_path / "photos")
    (folder / "dog" / "broken.png").write_text("not an image")
    err = _battle(tmp_path, capsys, settings, "{type: imagefolder, path: photos}", "knn")
    assert "InvalidArgument: dataset 'my-pets': " in err and "broken.png" in err


def test_retrieval_on_a_folder_without_query_and_gallery_explains_how_to_get_them(tmp_path, capsys, settings):
    _image_folder(tmp_path / "photos")
    err = _battle(tmp_path, capsys, settings, "{type: imagefolder, path: photos}", "retrieval")
    assert "retrieval needs a 'query' and a 'gallery' split" in err and "has test, train, val" in err
    assert "query/<class>/" in err and "splits: {query: 0.3, gallery: 0.7}" in err
    # the way the message offers works
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        spec.read_text().replace("path: photos}", "path: photos, splits: {query: 0.3, gallery: 0.7}}")
    )
    argv = ["battle", "run", str(spec), "--out", str(tmp_path / "out2"), "--cache-dir", settings.cache_dir]
    assert bob([*argv, "--embedder", "torch", "--no-progress", "--no-report"]) == 0
    assert "my-pets · retrieval" in capsys.readouterr().out
