"""How TritonServer is told to read S3 and who may control it, checked on the command line and
environment it would start with (no server is started here; tests/integration/test_publish.py runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bobench.config import Settings
from bobench.errors import InvalidArgument
from bobench.serving.triton import TritonServer
from bobench.serving.triton_access import admin_headers, restricted_flags, triton_s3_repository

SETTINGS = Settings(s3_endpoint="http://127.0.0.1:9000", s3_access_key="AK", s3_secret_key="SECRET-123")


def test_s3_urls_become_tritons_endpoint_form():
    assert triton_s3_repository("s3://bobench/triton-models", "http://127.0.0.1:9000") == (
        "s3://http://127.0.0.1:9000/bobench/triton-models"
    )
    assert triton_s3_repository("s3://bobench", "https://minio:9000").startswith("s3://https://minio:9000/")


@pytest.mark.parametrize(
    ("url", "endpoint", "needle"),
    [("s3://bobench/models+v2", "http://h:1", "models\\+v2"), ("s3://bobench/m", "", "no S3 endpoint")],
)
def test_paths_triton_cannot_read_are_refused(url, endpoint, needle):
    with pytest.raises(InvalidArgument, match=needle):
        triton_s3_repository(url, endpoint)


def test_s3_server_loads_everything_keeps_secrets_in_env_and_restricts_model_control():
    server = TritonServer("s3://bobench/triton-models", settings=SETTINGS, admin_key="KEY-9")
    server.ports = {"grpc": 1, "http": 2, "metrics": 3}
    cmd = server._command(Path("/backends"))
    assert "--model-repository=s3://http://127.0.0.1:9000/bobench/triton-models" in cmd
    assert {"--load-model=*", "--exit-on-error=false", "--strict-readiness=false",
            "--metrics-config=summary_latencies=true", "--model-control-mode=explicit"} <= set(cmd)  # fmt: skip
    admin = "model-repository,shared-memory,trace,logging:bobench-admin-key=KEY-9"
    assert f"--grpc-restricted-protocol={admin}" in cmd
    assert f"--http-restricted-api={admin}" in cmd
    assert not any("inference" in part for part in cmd)  # no service key: inference stays open
    assert not any("SECRET-123" in part for part in cmd)
    assert server.s3_env == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SECRET-123",
                             "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    assert (
        server.admin_headers == admin_headers("KEY-9") == {"triton-grpc-protocol-bobench-admin-key": "KEY-9"}
    )


def test_s3_repository_needs_settings_and_load_all_stands_alone():
    with pytest.raises(InvalidArgument, match="needs settings"):
        TritonServer("s3://bobench/triton-models")
    with pytest.raises(InvalidArgument, match="cannot be combined"):
        TritonServer("s3://bobench/triton-models", settings=SETTINGS, models=["*", "toy"])
    assert admin_headers("") is None


def test_a_service_key_restricts_inference_metadata_and_statistics_but_never_health():
    server = TritonServer(
        "s3://bobench/triton-models", settings=SETTINGS, admin_key="KEY-9", service_key="SVC-7"
    )
    server.ports = {"grpc": 1, "http": 2, "metrics": 3}
    cmd = server._command(Path("/backends"))
    service = "inference,metadata,model-config,statistics:bobench-service-key=SVC-7"
    assert f"--grpc-restricted-protocol={service}" in cmd and f"--http-restricted-api={service}" in cmd
    restricted = [p for p in cmd if p.startswith(("--grpc-restricted-protocol=", "--http-restricted-api="))]
    assert len(restricted) == 4
    categories = [
        c for p in restricted if p.startswith("--grpc") for c in p.split("=", 1)[1].split(":")[0].split(",")
    ]
    assert len(categories) == len(set(categories))  # Triton allows a category in one group only
    assert "health" not in categories  # probes stay open
    assert restricted_flags("", "SVC-7") == [
        f"--grpc-restricted-protocol={service}",
        f"--http-restricted-api={service}",
    ]
    assert restricted_flags("", "") == []
