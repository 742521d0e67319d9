"""Data roots: client paths resolved (symlinks, `..`) and refused outside the roots; parse errors that
never quote file contents; torchhub refused without allow_torchhub; weights digests checked first."""

from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bobench.battle.client_settings import check_client_settings
from bobench.config import Settings, load_settings
from bobench.data import configure, load_dataset
from bobench.data.context import reset
from bobench.data.roots import check_path
from bobench.errors import InvalidArgument, PermissionDenied

SECRET = "s3cr3t-Value-42"


@pytest.fixture(autouse=True)
def _unrestricted_after():
    yield
    reset()


def write_png(path: Path, value: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def write_tree(root: Path, classes=("a", "b"), per_class: int = 5) -> Path:
    for c in classes:
        for i in range(per_class):
            write_png(root / c / f"{i}.png", 20 * i)
    return root


def write_csv(path: Path, rows: list[list[str]], header=("path", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def roots(tmp_path):
    """A service policy with one data root `data/`; `faraway/` holds a tree that must stay unread."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    cache.mkdir()
    write_tree(tmp_path / "faraway")
    configure(Settings(cache_dir=str(cache), data_roots=(str(data),)), service=True)
    return data, cache, tmp_path / "faraway"


@pytest.mark.parametrize(
    "path",
    ["/", "/proc", "/etc/passwd", "/proc/self/environ", "{data}/../faraway", "{data}/a/../../faraway"],
)
@pytest.mark.parametrize("kind", ["imagefolder", "manifest", "webdataset"])
def test_paths_outside_every_root_are_permission_denied_naming_the_setting(roots, path, kind):
    data, _, _ = roots
    with pytest.raises(PermissionDenied, match="data_roots") as info:
        load_dataset({"type": kind, "path": path.format(data=data)})
    assert "root:x" not in str(info.value)


def test_a_tree_under_a_root_and_under_the_cache_still_loads(roots):
    data, cache, _ = roots
    assert len(load_dataset({"type": "imagefolder", "path": str(write_tree(data / "set"))})) == 10
    assert len(load_dataset({"type": "imagefolder", "path": str(write_tree(cache / "datasets" / "x"))})) == 10
    assert check_path(data / "set" / ".." / "set", "x") == (data / "set").resolve()


def test_symlinks_out_of_a_root_are_refused(roots):
    data, _, outside = roots
    (data / "link-root").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PermissionDenied):
        load_dataset({"type": "imagefolder", "path": str(data / "link-root")})
    tree = write_tree(data / "mixed")
    (tree / "c").symlink_to(outside / "a", target_is_directory=True)  # a class folder pointing out
    with pytest.raises(PermissionDenied, match="mixed/c/"):
        load_dataset({"type": "imagefolder", "path": str(tree)})
    (tree / "c").unlink()
    (tree / "a" / "9.png").symlink_to(outside / "b" / "0.png")  # one image pointing out
    with pytest.raises(PermissionDenied, match="9.png"):
        load_dataset({"type": "imagefolder", "path": str(tree)})


def test_manifest_rows_outside_the_roots_are_refused_without_quoting_the_row(roots):
    data, _, outside = roots
    write_png(data / "m" / "ok.png")
    rows = [["ok.png", "a"], ["ok.png", "b"], [str(outside / "a" / "0.png"), "a"]]
    with pytest.raises(PermissionDenied, match=r"row 4: field 'path'") as info:
        load_dataset({"type": "manifest", "path": str(write_csv(data / "m" / "m.csv", rows))})
    assert "faraway" not in str(info.value)
    rows[2][0] = "../../faraway/a/0.png"
    with pytest.raises(PermissionDenied, match=r"row 4"):
        load_dataset({"type": "manifest", "path": str(write_csv(data / "m" / "m.csv", rows))})


def _shard(path: Path, samples: int = 6) -> Path:
    from bobench.data.webdataset import write_shard

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_shard(path, [(f"s{i}", "png", buf.getvalue(), i % 2) for i in range(samples)])
    return path


def test_webdataset_shards_and_classes_file_are_checked(roots, tmp_path):
    data, _, _ = roots
    _shard(data / "wds" / "a.tar")
    assert len(load_dataset({"type": "webdataset", "path": str(data / "wds")}).labels) == 6
    (data / "wds" / "b.tar").symlink_to(_shard(tmp_path / "elsewhere" / "b.tar"))
    with pytest.raises(PermissionDenied, match="b.tar"):
        load_dataset({"type": "webdataset", "path": str(data / "wds")})
    with pytest.raises(PermissionDenied):
        load_dataset({"type": "webdataset", "path": str(tmp_path / "elsewhere" / "{b,c}.tar")})
    (data / "wds" / "b.tar").unlink()
    (tmp_path / "elsewhere" / "classes.txt").write_text(f"{SECRET}\nb\n")
    (data / "wds" / "classes.txt").symlink_to(tmp_path / "elsewhere" / "classes.txt")
    with pytest.raises(PermissionDenied, match="classes.txt"):
        load_dataset({"type": "webdataset", "path": str(data / "wds")})


def test_torchvision_root_is_checked(roots, tmp_path):
    with pytest.raises(PermissionDenied, match="root"):
        load_dataset(
            {"type": "torchvision", "name": "MNIST", "root": str(tmp_path / "tv"), "download": False}
        )


def test_a_service_without_data_roots_reads_only_its_cache(tmp_path):
    cache = tmp_path / "cache"
    write_tree(cache / "in-cache")
    tree = write_tree(tmp_path / "cwd-like")
    configure(Settings(cache_dir=str(cache)), service=True)
    assert len(load_dataset({"type": "imagefolder", "path": str(cache / "in-cache")})) == 10
    with pytest.raises(PermissionDenied):
        load_dataset({"type": "imagefolder", "path": str(tree)})
    configure(Settings(cache_dir=str(cache)))  # the local CLI: unrestricted
    assert len(load_dataset({"type": "imagefolder", "path": str(tree)})) == 10


def test_data_roots_come_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BOBENCH_DATA_ROOTS", os.pathsep.join(["/data/a", " /data/b ", ""]))
    assert load_settings().data_roots == ("/data/a", "/data/b")
    monkeypatch.delenv("BOBENCH_DATA_ROOTS")
    cfg = tmp_path / "bobench.yaml"
    cfg.write_text("data_roots: [/x, /y]\nallow_torchhub: true\n")
    s = load_settings(cfg)
    assert (s.data_roots, s.allow_torchhub) == (("/x", "/y"), True)
    cfg.write_text("data_roots: {a: 1}\n")
    with pytest.raises(InvalidArgument, match="data_roots"):
        load_settings(cfg)


# ---- error messages never quote file contents ------------------------------------------------------


def test_a_manifest_at_a_secret_file_does_not_echo_it(tmp_path):
    env_like = tmp_path / "environ"
    env_like.write_bytes(f"BOBENCH_S3_SECRET_KEY={SECRET}\0HOME=/root\0".encode())
    passwd = tmp_path / "passwd"
    passwd.write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\n")
    for path in (env_like, passwd):
        with pytest.raises(InvalidArgument) as info:
            load_dataset({"type": "manifest", "path": str(path)})
        assert SECRET not in str(info.value)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "header, rows, ref_extra, expected",
    [
        (("path", "label"), [["a.png", "x"], [f"{SECRET}.png", "x"]], {}, "row 3: field 'path'"),
        (("path", "label"), [["a.png", "x"], ["a.png", SECRET]], {"classes": ["x"]}, "row 3: field 'label'"),
        (("path", "label", "split"), [["a.png", "x", "train"], ["a.png", "x", SECRET]], {}, "row 3: field 'split'"),
        (("path", "label", "split", "positives"), [["a.png", "x", "query", SECRET], ["b.png", "x", "gallery", ""]], {}, "row 2: field 'positives': entry 1"),
        (("id", "path", "label", "split", "positives"), [[SECRET, "a.png", "x", "query", "g"], [SECRET, "b.png", "x", "gallery", ""]], {}, "row 3: field 'id'"),
    ],
)  # fmt: skip
def test_manifest_errors_name_row_and_field_not_the_value(tmp_path, header, rows, ref_extra, expected):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    path = write_csv(tmp_path / "m.csv", rows, header=header)
    with pytest.raises(InvalidArgument, match=expected) as info:
        load_dataset({"type": "manifest", "path": str(path), **ref_extra})
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "ext, body",
    [("cls", SECRET), ("json", '{"label": ["' + SECRET + '"]}'), ("json", SECRET), ("txt", SECRET)],
)
def test_webdataset_label_errors_do_not_quote_the_member(tmp_path, ext, body):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    shard = tmp_path / "w" / "s.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for name, data in (("k.png", buf.getvalue()), (f"k.{ext}", body.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ref = {"type": "webdataset", "path": str(shard), **({"classes": ["a"]} if ext == "txt" else {})}
    with pytest.raises(InvalidArgument, match="s.tar") as info:
        len(load_dataset(ref))
    assert SECRET not in str(info.value)


def test_a_checkpoint_with_pickled_code_is_refused_and_never_runs(tmp_path):
    import torch

    from bobench.backbones import create_backbone

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, path)
    with pytest.raises(InvalidArgument, match="weights_only=True") as info:
        create_backbone("toy", weights=str(path), cache_dir=tmp_path / "c")
    assert not marker.exists()
    assert "touch" not in str(info.value)


# ---- backbones: weights paths, digests before load, torchhub -----------------------------------------


def test_weights_outside_the_roots_are_refused_before_reading(roots, tmp_path, monkeypatch):
    import torch

    from bobench.backbones import create_backbone

    data, cache, _ = roots
    outside = tmp_path / "w.pth"
    torch.save(create_backbone("toy", cache_dir=cache).module.network.state_dict(), outside)
    for path in (outside, Path("/etc/passwd"), data / ".." / "w.pth"):
        with pytest.raises(PermissionDenied, match="weights"):
            create_backbone("toy", weights=str(path), cache_dir=cache)
    inside = data / "w.pth"
    inside.write_bytes(outside.read_bytes())
    assert create_backbone("toy", weights=str(inside), cache_dir=cache).spec.weights_sha256


def test_onnx_external_data_outside_the_roots_is_refused(roots, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bobench.backbones.weights import onnx_weights_digest

    data, _, _ = roots
    tensor = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Add", ["x", "w"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
            [tensor],
        )
    )
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../secret.bin")
    onnx.save(model, str(data / "m.onnx"))
    with pytest.raises(PermissionDenied, match="external data file 1 of 1"):
        onnx_weights_digest(data / "m.onnx")


def test_a_declared_digest_is_checked_before_the_checkpoint_is_parsed(tmp_path, monkeypatch):
    import torch

    import bobench.backbones.sources_torch as sources_torch
    from bobench.backbones import create_backbone

    path = tmp_path / "toy.pth"
    torch.save(create_backbone("toy", cache_dir=tmp_path).module.network.state_dict(), path)
    parsed = []
    monkeypatch.setattr(sources_torch, "read_state_dict", lambda p, spec: parsed.append(p) or {})
    with pytest.raises(InvalidArgument, match="not loaded"):
        create_backbone("toy", weights=str(path), weights_sha256="0" * 64, cache_dir=tmp_path)
    assert parsed == []


def test_torchhub_backbones_need_allow_torchhub(tmp_path, monkeypatch):
    import torch

    from bobench.backbones import check_user_backbone, create_backbone
    from bobench.backbones.spec import BackboneSpec

    calls = []
    monkeypatch.setattr(torch.hub, "load", lambda *a, **k: calls.append(a))
    spec = BackboneSpec(
        name="hubby",
        source="torchhub",
        model_id="evil/repo:main/entry",
        family="cnn",
        pretraining_method="ssl",
        pretraining_data="none",
        weights="hub",
    )
    with pytest.raises(PermissionDenied, match="remote code"):
        check_user_backbone(spec)
    with pytest.raises(PermissionDenied, match="allow_torchhub"):
        create_backbone(spec, cache_dir=tmp_path)
    assert calls == []
    configure(Settings(cache_dir=str(tmp_path), allow_torchhub=True))
    check_user_backbone(spec)
    with pytest.raises(Exception):  # noqa: B017 - the stub returns no module; reaching it is the point
        create_backbone(spec, cache_dir=tmp_path)
    assert calls == [("evil/repo:main", "entry")]


def test_submitted_specs_may_set_only_harmless_settings():
    check_client_settings({"batch_size": 8, "threads": 2})
    for key in ("cache_dir", "triton_url", "device"):
        with pytest.raises(PermissionDenied, match=key):
            check_client_settings({key: "/", "batch_size": 8})


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_imagefolder_at_proc_is_invalid_argument_when_unrestricted():
    with pytest.raises(InvalidArgument, match="/proc"):
        load_dataset({"type": "imagefolder", "path": "/proc"})
