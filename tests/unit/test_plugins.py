"""BOBENCH_PLUGINS: user modules register backbones before any command runs."""

from __future__ import annotations

import sys

import pytest

from bobench.errors import InvalidArgument
from bobench.plugins import load_plugins


def test_plugin_module_registers_a_backbone(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_bob_plugin.py").write_text(
        "from bobench.backbones import register_backbone\n"
        "from bobench.backbones.spec import BackboneSpec\n\n"
        "@register_backbone\n"
        "def my_net():\n"
        "    return BackboneSpec(name='plugin-net', source='timm', model_id='resnet18', family='cnn',\n"
        "                        pretraining_method='random', pretraining_data='none')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BOBENCH_PLUGINS", "my_bob_plugin")
    from bobench.cli import main

    assert main(["backbones", "show", "plugin-net"]) == 0
    assert '"model_id": "resnet18"' in capsys.readouterr().out
    sys.modules.pop("my_bob_plugin", None)


def test_missing_plugin_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="cannot import plugin module 'no_such_plugin_xyz'"):
        load_plugins("no_such_plugin_xyz")
