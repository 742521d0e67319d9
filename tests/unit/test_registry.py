"""The one registration idiom (`bobench.registry`): builtins load on the first lookup, never at import
and never silently skipped; `lazy` entries import their module only when called."""

from __future__ import annotations

import sys

import pytest

from bobench.errors import AlreadyExists, InvalidArgument
from bobench.registry import Registry, lazy, load_attr


@pytest.fixture
def module_tree(tmp_path, monkeypatch):
    """A package `regtest` whose `builtin` module registers into `regtest.reg.THINGS` when imported."""
    pkg = tmp_path / "regtest"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "reg.py").write_text(
        "from bobench.registry import Registry\nTHINGS = Registry('thing', builtins=('regtest.builtin',))\n"
    )
    (pkg / "builtin.py").write_text("from regtest.reg import THINGS\nTHINGS.add('one', 1)\n")
    (pkg / "heavy.py").write_text("IMPORTED = True\ndef double(x):\n    return 2 * x\n")
    (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m == "regtest" or m.startswith("regtest.")]:
        del sys.modules[name]


def test_builtins_load_on_the_first_lookup_not_at_import(module_tree):
    from regtest.reg import THINGS

    assert "regtest.builtin" not in sys.modules
    assert THINGS.get("one") == 1 and "regtest.builtin" in sys.modules
    assert list(THINGS) == ["one"] and len(THINGS) == 1
    with pytest.raises(InvalidArgument, match="unknown thing 'onw'; did you mean 'one'"):
        THINGS.get("onw")
    with pytest.raises(AlreadyExists):
        THINGS.add("one", 2)


def test_a_builtin_module_that_fails_to_import_raises_every_time(module_tree):
    things = Registry("thing", builtins=("regtest.broken",))
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
            things.get("anything")


def test_lazy_entries_import_their_module_only_when_called(module_tree):
    double = lazy("regtest.heavy:double")
    assert "regtest.heavy" not in sys.modules
    assert double(21) == 42 and sys.modules["regtest.heavy"].IMPORTED
    assert load_attr("regtest.heavy:double") is double.resolve()
    with pytest.raises(ValueError, match="module:attr"):
        load_attr("regtest.heavy")
