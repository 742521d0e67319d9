"""The kubelet rules tests/container_runner.py applies before running a rendered container locally."""

from __future__ import annotations

import pytest
from container_runner import (
    Loopback,
    image_repository,
    kubelet_argv,
    listen_flag,
    parse_dockerfile,
    remap_paths,
)


def test_the_final_stage_entrypoint_and_cmd_are_parsed(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        'FROM a AS build\nENTRYPOINT ["old"]\nFROM b\n# ENTRYPOINT ["commented"]\n'
        'ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]\nCMD ["tritonserver", \\\n     "--x=1"]\n'
    )
    assert parse_dockerfile(dockerfile) == (["/opt/nvidia/nvidia_entrypoint.sh"], ["tritonserver", "--x=1"])
    dockerfile.write_text("FROM b\nCMD echo hi\n")
    assert parse_dockerfile(dockerfile) == ([], ["/bin/sh", "-c", "echo hi"])


def test_command_replaces_entrypoint_and_args_replace_cmd():
    evaluator = (
        "registry.example.com/bobench/evaluator:0.1.0"  # ENTRYPOINT python -m bobench.rpc.evaluator_service
    )
    env = {"G": "30"}
    assert kubelet_argv({"name": "c", "image": evaluator, "args": ["--grace-s", "$(G)"]}, env) == [
        "python", "-m", "bobench.rpc.evaluator_service", "--grace-s", "30"
    ]  # fmt: skip
    assert kubelet_argv({"name": "c", "image": evaluator, "command": ["python", "-m", "x"]}, env) == [
        "python", "-m", "x"
    ]  # fmt: skip
    with pytest.raises(AssertionError, match=r"\$\(MISSING\)"):
        kubelet_argv({"name": "c", "image": evaluator, "args": ["$(MISSING)"]}, env)


def test_image_names_resolve_through_registry_and_tag():
    assert image_repository("registry.example.com/bobench/embedder:0.1.0") == "bobench/embedder"
    assert image_repository("prom/prometheus:v2.55.1") == "prom/prometheus"
    with pytest.raises(AssertionError, match="not built from services"):
        image_repository("docker.io/library/nginx:1")


def test_rewrites_touch_only_cluster_names_ports_and_mounts(tmp_path):
    loop = Loopback({"minio:9000": "127.0.0.1:5"}, evaluators="dns:///localhost:7")
    assert loop.rewrite("s3://http://minio:9000/b") == "s3://http://127.0.0.1:5/b"
    assert loop.rewrite("http://myminio:9000") == "http://myminio:9000"
    assert loop.rewrite("dns:///evaluator-headless.bobench.svc.cluster.local:50051") == "dns:///localhost:7"
    ports: dict[int, int] = {}
    assert listen_flag("--http-port=8000", {8000}, ports) == f"--http-port={ports[8000]}"
    assert listen_flag("--http-port=8080", {8000}, ports) == "--http-port=8080"  # not the container's port
    mounts = {"/tmp": tmp_path / "t", "/etc/bobench": tmp_path / "tmp" / "e"}
    assert remap_paths("/etc/bobench/jobs.yaml", mounts) == f"{tmp_path}/tmp/e/jobs.yaml"  # one pass
    assert remap_paths("http://h:1/tmp", mounts) == "http://h:1/tmp"
