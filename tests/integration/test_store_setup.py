"""`python -m bobench.store.setup` (the minio-setup Job) against real SeaweedFS for the S3 part and a
**stand-in** for MinIO's admin API (`tests/minio_admin_standin.py`: no MinIO server runs here and
SeaweedFS has no MinIO admin API). The stand-in forwards S3 requests to SeaweedFS, so the setup sees
one endpoint for both APIs, as it does with MinIO."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from minio_admin_standin import MinioAdminStandIn
from s3_fixtures import S3_ADMIN

from bobench.errors import InvalidArgument, Unavailable
from bobench.store.setup import REPOSITORY_MARKER, MinioSetup, SetupConfig, same_policy, triton_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def standin(seaweedfs):
    """The stand-in admin API whose root user is SeaweedFS's admin identity (S3 calls go through)."""
    server = MinioAdminStandIn(S3_ADMIN.access_key, S3_ADMIN.secret_key, upstream=seaweedfs.address).start()
    yield server
    server.stop()


def setup_env(endpoint: str, bucket: str, **overrides: str) -> dict[str, str]:
    env = {
        "BOBENCH_S3_ENDPOINT": endpoint,
        "MINIO_ROOT_USER": S3_ADMIN.access_key,
        "MINIO_ROOT_PASSWORD": S3_ADMIN.secret_key,
        "BOBENCH_S3_ACCESS_KEY": "bobench-rw-user",
        "BOBENCH_S3_SECRET_KEY": "rw-secret-5f1c2e9a7b",
        "TRITON_S3_ACCESS_KEY": "triton-ro-user",
        "TRITON_S3_SECRET_KEY": "ro-secret-0d4e8c1b3a",
        "BOBENCH_BUCKET": bucket,
    }
    return {**env, **overrides}


def run_setup(env: dict[str, str]) -> dict[str, str]:
    return MinioSetup(SetupConfig.from_env(env, wait_s=30)).run()


def test_first_run_creates_bucket_policies_users_and_attachments(standin, seaweedfs):
    from minio import Minio

    bucket = f"setup-{uuid.uuid4().hex[:10]}"
    done = run_setup(setup_env(standin.endpoint, bucket))
    assert done[f"bucket {bucket}"] == "created"
    assert Minio(seaweedfs.address, S3_ADMIN.access_key, S3_ADMIN.secret_key, secure=False).bucket_exists(
        bucket
    )
    users = standin.state.users
    assert users["bobench-rw-user"]["policies"] == [f"bobench-rw-{bucket}"]
    assert users["bobench-rw-user"]["secretKey"] == "rw-secret-5f1c2e9a7b"
    assert users["triton-ro-user"]["policies"] == [f"bobench-triton-ro-{bucket}"]
    ro = standin.state.policies[f"bobench-triton-ro-{bucket}"]
    assert same_policy(ro, triton_policy(bucket, "triton-models"))
    actions = {a for st in ro["Statement"] for a in st["Action"]}
    assert actions == {"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"}  # read-only
    client = Minio(seaweedfs.address, S3_ADMIN.access_key, S3_ADMIN.secret_key, secure=False)
    assert [o.object_name for o in client.list_objects(bucket, prefix="triton-models/")] == [
        f"triton-models/{REPOSITORY_MARKER}"
    ]  # Triton refuses an s3:// repository with nothing under it
    rw = standin.state.policies[f"bobench-rw-{bucket}"]
    assert {r for st in rw["Statement"] for r in st["Resource"]} == {
        f"arn:aws:s3:::{bucket}",
        f"arn:aws:s3:::{bucket}/*",
    }


def test_second_and_third_runs_change_nothing(standin):
    env = setup_env(standin.endpoint, f"setup-{uuid.uuid4().hex[:10]}")
    run_setup(env)
    after_first, calls_first = standin.state.snapshot(), len(standin.state.calls)
    for _ in range(2):
        done = run_setup(env)
        assert standin.state.snapshot() == after_first
        assert {k: v for k, v in done.items() if not k.startswith("user ")} == {
            k: "unchanged" for k in done if not k.startswith("user ")
        }
    # the only writes of a re-run are the two user upserts with the same secret (MinIO never returns one)
    assert standin.state.calls[calls_first:] == ["add-user bobench-rw-user", "add-user triton-ro-user"] * 2


def test_a_rotated_secret_updates_the_user_and_keeps_its_policy(standin):
    bucket = f"setup-{uuid.uuid4().hex[:10]}"
    run_setup(setup_env(standin.endpoint, bucket))
    run_setup(setup_env(standin.endpoint, bucket, BOBENCH_S3_SECRET_KEY="rotated-secret-77aa11"))
    user = standin.state.users["bobench-rw-user"]
    assert user["secretKey"] == "rotated-secret-77aa11"
    assert user["policies"] == [f"bobench-rw-{bucket}"]


def test_a_policy_edited_by_hand_is_restored(standin):
    bucket = f"setup-{uuid.uuid4().hex[:10]}"
    env = setup_env(standin.endpoint, bucket)
    run_setup(env)
    standin.state.policies[f"bobench-triton-ro-{bucket}"]["Statement"][2]["Action"].append("s3:PutObject")
    done = run_setup(env)
    assert done[f"policy bobench-triton-ro-{bucket}"] == "updated"
    assert same_policy(
        standin.state.policies[f"bobench-triton-ro-{bucket}"], triton_policy(bucket, "triton-models")
    )


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("BOBENCH_S3_SECRET_KEY", "", "BOBENCH_S3_ACCESS_KEY/BOBENCH_S3_SECRET_KEY: the secret key is empty"),
        ("MINIO_ROOT_PASSWORD", "CHANGE-ME-minio-admin-password", "placeholder"),
        ("TRITON_S3_SECRET_KEY", "short", "at least 8"),
        ("TRITON_S3_ACCESS_KEY", "bobench-rw-user", "three different users"),
    ],
)
def test_placeholder_or_empty_credentials_are_refused_before_any_call(standin, var, value, says):
    env = setup_env(standin.endpoint, "bobench", **{var: value})
    with pytest.raises(InvalidArgument, match=says):
        run_setup(env)
    assert standin.state.calls == [] and standin.state.users == {}


def test_the_module_exits_0_twice_and_2_on_a_placeholder(standin):
    env = setup_env(standin.endpoint, f"setup-{uuid.uuid4().hex[:10]}")
    cmd = [sys.executable, "-m", "bobench.store.setup", "--wait-s", "30"]
    for _ in range(2):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        cmd, env={**env, "BOBENCH_S3_SECRET_KEY": "changeme"}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "placeholder" in proc.stderr


def test_waits_while_minio_is_starting(seaweedfs):
    """The first requests answer 503 (MinIO not initialised yet); the setup keeps trying and succeeds."""
    server = MinioAdminStandIn(
        S3_ADMIN.access_key, S3_ADMIN.secret_key, upstream=seaweedfs.address, unready_requests=12
    ).start()
    try:
        run_setup(setup_env(server.endpoint, f"setup-{uuid.uuid4().hex[:10]}"))
        assert server.unready_left == 0 and "bobench-rw-user" in server.state.users
    finally:
        server.stop()


def test_gives_up_with_unavailable_when_minio_never_answers():
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        config = SetupConfig.from_env(setup_env(endpoint, "bobench"), wait_s=1.0)
        with pytest.raises(Unavailable, match="did not answer within 1 s"):
            MinioSetup(config).run()


def test_a_wrong_root_password_is_refused_by_the_admin_api(standin):
    from bobench.errors import FailedPrecondition

    env = setup_env(standin.endpoint, f"setup-{uuid.uuid4().hex[:10]}")
    standin.root_password = "another-root-password"  # the S3 part still passes (SeaweedFS knows the key)
    with pytest.raises(FailedPrecondition, match="refused setting user"):
        run_setup(env)
