"""`python -m bobench.stack status` prints the recorded stack without any secret value."""

from __future__ import annotations

import json

from bobench.stack import SECRETS_FILE, public_state
from bobench.stack.__main__ import main


def _stack_with_a_leak(state_dir):
    secret, token = "s3-secret-0123456789abcdef", "tok-0123456789abcdef"
    (state_dir / SECRETS_FILE).write_text(f"BOBENCH_S3_SECRET_KEY={secret}\nBOBENCH_AUTH_TOKEN={token}\n")
    state = {
        "services": [{"name": "seaweedfs", "pid": 1, "extra": {"argv": ["weed", f"-secret={secret}"]}}],
        "env": {"BOBENCH_S3_ACCESS_KEY": "bobench", "BOBENCH_S3_SECRET_KEY": secret, "X": f"Bearer {token}"},
        "notes": [],
    }
    (state_dir / "stack.json").write_text(json.dumps(state))
    return secret, token


def test_public_state_redacts_every_value_holding_a_secret(tmp_path):
    secret, token = _stack_with_a_leak(tmp_path)
    state = public_state(tmp_path)
    text = json.dumps(state)
    assert secret not in text and token not in text
    assert state["env"]["BOBENCH_S3_SECRET_KEY"] == state["env"]["X"] == "<redacted>"
    assert state["env"]["BOBENCH_S3_ACCESS_KEY"] == "bobench"  # not a secret: kept
    assert state["services"][0]["extra"]["argv"] == ["weed", "<redacted>"]
    assert public_state(tmp_path / "none") is None


def test_status_command_prints_no_secret(tmp_path, capsys):
    secret, token = _stack_with_a_leak(tmp_path)
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert secret not in out and token not in out
    assert json.loads(out)["env"]["BOBENCH_S3_ACCESS_KEY"] == "bobench"
