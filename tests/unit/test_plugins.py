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


def _readme_plugin() -> str:
    """The example plugin of the README's Plugins section."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Plugins\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def forget_plugin():
    """Unregister what a test's plugin registered and forget the module, so tests stay independent."""
    from bobench import plugins
    from bobench.backbones import BACKBONES
    from bobench.battle.plan import CUSTOM_BACKBONES

    def unregister() -> None:  # the README's name is also a battle spec test's custom backbone
        BACKBONES._items.pop("my-resnet18", None)
        CUSTOM_BACKBONES.pop("my-resnet18", None)

    unregister()
    names = []
    yield names.append
    for name in names:
        sys.modules.pop(name, None)
    plugins._loaded.clear()
    unregister()


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_the_readme_plugin_loads_from_a_file_path_without_pythonpath(
    tmp_path, monkeypatch, capsys, forget_plugin, how
):
    (tmp_path / "my_plugins.py").write_text(_readme_plugin())
    forget_plugin("my_plugins")
    monkeypatch.chdir(tmp_path)
    entry = str(tmp_path / "my_plugins.py") if how == "absolute" else "my_plugins.py"
    monkeypatch.setenv("BOBENCH_PLUGINS", entry)
    from bobench.cli import main

    assert main(["backbones", "show", "my-resnet18"]) == 0
    assert '"model_id": "resnet18"' in capsys.readouterr().out
    assert sys.modules["my_plugins"].__file__ == str(tmp_path / "my_plugins.py")


def test_the_readme_plugin_loads_by_module_name(tmp_path, monkeypatch, forget_plugin):
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bob_plugins.py").write_text(_readme_plugin())
    forget_plugin("my_pkg.bob_plugins")
    forget_plugin("my_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))  # stands in for an installed package
    assert load_plugins("my_pkg.bob_plugins") == ["my_pkg.bob_plugins"]
    from bobench.backbones import get_spec

    assert get_spec("my-resnet18").model_id == "resnet18"


def test_a_missing_plugin_file_is_named(tmp_path):
    with pytest.raises(InvalidArgument, match="plugin file '.*nope.py' does not exist"):
        load_plugins(str(tmp_path / "nope.py"))


def test_a_plugin_file_that_shadows_an_imported_module_is_refused(tmp_path):
    (tmp_path / "json.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(InvalidArgument, match="a module named 'json' is already imported; rename the file"):
        load_plugins(str(tmp_path / "json.py"))
