"""No side doors in the local stack's servers, tried as a local client without the stack's secrets.

SeaweedFS (`start_seaweedfs`, the same start the stack and the S3 fixtures use): the S3 port checks
signatures; the filer and master have no HTTP API (the forged `results/<key>.json` of the issue, a
`/col/delete` of the bucket), the volume server refuses requests without the JWT weed mints itself,
the gRPC ports refuse clients without the stack's certificate. Prometheus: its lifecycle and admin APIs are off, so `POST /-/quit` does not stop it.
"""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from s3_fixtures import S3_ADMIN

from bobench.errors import FailedPrecondition
from bobench.stack.procs import stop_pid
from bobench.stack.prometheus import prometheus_binary, start_prometheus, write_config
from bobench.stack.seaweedfs import secret_files
from bobench.store.s3 import S3Store

pytestmark = [pytest.mark.integration]

BUCKET = "bobench-side-doors"
FORGED = b'{"status": "finished", "metrics": {"top1": 0.999}}'


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> int:
    """The HTTP status of one request (an error status is returned, not raised)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback URL we built
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _multipart(name: str, payload: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "bobench-side-door"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/json\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def s3(seaweedfs):
    store = S3Store(
        f"http://{seaweedfs.address}",
        BUCKET,
        "",
        S3_ADMIN.access_key,
        S3_ADMIN.secret_key,
        create_bucket=True,
    )
    store.put_json("results/real.json", {"status": "finished"})  # the bucket has data and volumes
    yield store
    store.close()


def test_s3_needs_the_stack_credentials(seaweedfs, s3):
    assert s3.get_json("results/real.json") == {"status": "finished"}
    wrong = S3Store(
        f"http://{seaweedfs.address}", BUCKET, "", S3_ADMIN.access_key, "not-the-secret", retries=0
    )
    anonymous = S3Store(f"http://{seaweedfs.address}", BUCKET, "", retries=0)
    try:
        for store in (wrong, anonymous):
            with pytest.raises(FailedPrecondition, match="refused"):
                store.put_bytes("results/forged.json", FORGED)
            with pytest.raises(FailedPrecondition, match="refused"):
                store.get_bytes("results/real.json")
    finally:
        wrong.close()
        anonymous.close()
    assert not s3.exists("results/forged.json")


def test_filer_http_refuses_an_upload_of_a_forged_result(seaweedfs, s3):
    filer = f"http://127.0.0.1:{seaweedfs.extra['ports']['filer.port']}"
    target = f"{filer}/buckets/{BUCKET}/results/forged.json"
    body, headers = _multipart("forged.json", FORGED)
    assert _http("POST", target, body, headers) == 404  # the filer HTTP API is off
    assert _http("PUT", target, FORGED, {"Content-Type": "application/json"}) == 404
    assert _http("DELETE", f"{filer}/buckets/{BUCKET}/results/real.json") == 404
    assert _http("GET", f"{filer}/buckets/{BUCKET}/results/real.json") == 404
    assert not s3.exists("results/forged.json")
    assert s3.get_json("results/real.json") == {"status": "finished"}


def test_volume_and_master_http_refuse_writes_without_a_token(seaweedfs, s3):
    ports = seaweedfs.extra["ports"]
    master = f"http://127.0.0.1:{ports['master.port']}"
    volume = f"http://127.0.0.1:{ports['volume.port']}"
    for path in ("/dir/assign", "/submit", "/vol/grow?count=1", f"/col/delete?collection={BUCKET}"):
        assert _http("POST", master + path, b"") == 404, path  # the master HTTP API is off
        assert _http("GET", master + path) == 404, path
    body, headers = _multipart("forged.json", FORGED)
    for fid in ("1,01637037d6", "3,0a2b3c4d5e6f"):
        assert _http("POST", f"{volume}/{fid}", body, headers) == 401, fid  # no JWT
        assert _http("DELETE", f"{volume}/{fid}") == 401, fid
        assert _http("GET", f"{volume}/{fid}") == 401, fid  # reads are signed too
    assert s3.get_json("results/real.json") == {"status": "finished"}  # nothing was deleted


GRPC_METHODS = {  # one harmless unary call per gRPC port, raw bytes (an empty request)
    "master.port.grpc": "/master_pb.Seaweed/GetMasterConfiguration",
    "filer.port.grpc": "/filer_pb.SeaweedFiler/GetFilerConfiguration",
    "volume.port.grpc": "/volume_server_pb.VolumeServer/VolumeServerStatus",
}


def _grpc_call(channel: grpc.Channel, method: str) -> bytes:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(b"", timeout=5)


@pytest.mark.parametrize("port_flag", sorted(GRPC_METHODS))
def test_grpc_ports_need_the_stack_certificate(seaweedfs, port_flag):
    target = f"127.0.0.1:{seaweedfs.extra['ports'][port_flag]}"
    conf = Path(seaweedfs.extra["data_dir"]).parent / "conf"
    ca, key, cert = ((conf / n).read_bytes() for n in ("ca.crt", "node.key", "node.crt"))
    method = GRPC_METHODS[port_flag]
    for creds in (
        None,
        grpc.ssl_channel_credentials(root_certificates=ca),
    ):  # plain, TLS without a client cert
        channel = grpc.insecure_channel(target) if creds is None else grpc.secure_channel(target, creds)
        with channel, pytest.raises(grpc.RpcError) as refused:
            _grpc_call(channel, method)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    mtls = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(target, mtls) as channel:  # the stack's own certificate gets through
        _grpc_call(channel, method)


def test_secrets_live_in_a_private_directory_and_no_socket_is_in_tmp(seaweedfs):
    conf = Path(seaweedfs.extra["data_dir"]).parent / "conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o700
    files = secret_files(conf.parent)
    assert {p.name for p in files} >= {"s3.json", "security.toml", "node.key", "node.crt", "ca.crt"}
    assert "ca.key" not in {p.name for p in files}  # nobody can sign another certificate
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert S3_ADMIN.secret_key in (conf / "s3.json").read_text()
    assert S3_ADMIN.secret_key not in json.dumps(seaweedfs.to_dict())
    ports = seaweedfs.extra["ports"]
    for kind in ("filer", "s3"):
        assert not Path(f"/tmp/seaweedfs-{kind}-{ports[f'{kind}.port']}.sock").exists()


@pytest.mark.skipif(prometheus_binary() is None, reason="prometheus binary not installed")
def test_prometheus_lifecycle_and_admin_apis_are_off(tmp_path):
    config = write_config(tmp_path / "prometheus.yml", {}, scrape_interval_s=1)
    service = start_prometheus(config, tmp_path / "prometheus")
    base = f"http://{service.address}"
    try:
        assert _http("POST", f"{base}/-/quit") == 403
        assert _http("POST", f"{base}/-/reload") == 403
        assert _http("PUT", f"{base}/-/quit") in (403, 405)
        assert _http("POST", f"{base}/api/v1/admin/tsdb/snapshot") >= 400
        assert _http("POST", f"{base}/api/v1/admin/tsdb/delete_series?match[]=up") >= 400
        assert _http("GET", f"{base}/-/ready") == 200  # still running after every attempt
        assert _http("GET", f"{base}/-/healthy") == 200
    finally:
        stop_pid(service.pid, timeout_s=10)
