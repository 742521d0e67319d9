"""The layer order of `bobench._layers` holds in the code, and docs/architecture.md shows the same table.

The check reads every `import` / `from ... import` of src/bobench at any depth (inside functions and
`if TYPE_CHECKING:` too; relative imports resolved) and every string constant that names a module of
the tree ("module:function" registrations), with ast: nothing is imported. A module may import its
own package, its own layer or a lower one; packages (and the modules of one package) may not import
each other in a circle. No third-party import linter is needed (import-linter is not installed).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from bobench._layers import LAYERS, PACKAGES, markdown_table

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
_MODULE_STRING = re.compile(r"^[A-Za-z_]\w*(\.\w+)+(:\w+)?$")

# Edges other helpers of issue 11 are removing on their branches: (importing file relative to src/,
# imported package) -> the helper that owns the fix. Delete an entry once its branch is merged; the test
# fails on an entry that matches nothing any more, so the list cannot go stale.
TEMPORARY_ALLOWED: dict[tuple[str, str], str] = {}
# Circles between the modules of one package that other helpers are untying.
TEMPORARY_CIRCLES: dict[frozenset[str], str] = {}
# A circle containing one of these modules is a circle another helper is untying.
TEMPORARY_CIRCLE_MEMBERS: dict[str, str] = {}


# Rows of bobench/_layers.py for modules that other branches of issue 11 add (name -> owner): they may
# be absent from this tree until those branches are merged; the test fails once one is present here.
ARRIVING: dict[str, str] = {}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (the deepest module of the tree the import names)
    path: str  # importing file, relative to the source root
    line: int
    by_string: bool = False  # named in a string constant ("module:function"), not imported


def module_names(src: Path, top: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under src/top (a package's name is its __init__)."""
    names = {}
    for path in sorted((src / top).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _deepest(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a module of the tree (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_edges(src: Path, top: str) -> list[Edge]:
    """Every import (and module-naming string) of the tree's modules that names a module of the tree."""
    modules = module_names(src, top)
    edges = []
    for source, path in modules.items():
        package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        rel = str(path.relative_to(src))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package[: len(package) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                # `from pkg import sub` runs pkg/__init__.py too: both are edges
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if _MODULE_STRING.match(node.value):
                    names = [node.value.split(":")[0]]
            by_string = isinstance(node, ast.Constant)
            for target in {_deepest(name, modules) for name in names}:
                if target is not None and target != source and target != top:
                    edges.append(Edge(source, target, rel, node.lineno, by_string))
    return edges


def package_of(module: str) -> str:
    """`bobench.backbones.spec` -> "backbones"; `bobench.config` -> "config"."""
    return module.split(".")[1]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _ties(edges: list[Edge], members: set[str], key) -> str:
    ties = sorted(
        {
            f"{e.path}:{e.line} imports {e.target}"
            for e in edges
            if key(e.source) in members and key(e.target) in members and key(e.source) != key(e.target)
        }
    )
    return "; ".join(ties)


def layer_violations(
    src: Path,
    top: str,
    layers: dict[str, int],
    allowed: dict[tuple[str, str], str] | None = None,
    allowed_circles: dict[frozenset[str], str] | None = None,
    allowed_circle_members: dict[str, str] | None = None,
) -> tuple[list[str], set]:
    """(messages, allow-list entries used) for the tree src/top held to `layers` (package -> layer).

    Messages: `file:line imports X (layer n) from Y (layer m)` for an import of a higher layer; a
    package missing from `layers`; `package circle: a -> b -> a (ties)`; `module circle: ...`."""
    allowed = allowed or {}
    allowed_circles = allowed_circles or {}
    allowed_circle_members = allowed_circle_members or {}
    edges = import_edges(src, top)
    used: set = set()
    problems = []
    for package in sorted({package_of(m) for m in module_names(src, top) if m != top} - set(layers)):
        problems.append(f"{top}.{package} has no layer: add a row for it to bobench/_layers.py")
    for e in [e for e in edges if e.source == top]:
        problems.append(
            f"{e.path}:{e.line} imports {e.target}: the root package must import nothing of its own"
        )
    edges = [e for e in edges if e.source != top]
    deepest: dict[tuple[str, int, str], Edge] = {}  # one message per statement and imported package
    for e in edges:
        key = (e.path, e.line, package_of(e.target))
        if key not in deepest or len(e.target) > len(deepest[key].target):
            deepest[key] = e
    for e in deepest.values():
        here, there = package_of(e.source), package_of(e.target)
        if here == there or here not in layers or there not in layers or layers[there] <= layers[here]:
            continue
        if (e.path, there) in allowed:
            used.add((e.path, there))
            continue
        problems.append(
            f"{e.path}:{e.line} imports {e.target} (layer {layers[there]}) "
            f"from {e.source} (layer {layers[here]})"
        )
    counted = [e for e in edges if (e.path, package_of(e.target)) not in allowed]
    by_package: dict[str, set[str]] = defaultdict(set)
    by_module: dict[str, set[str]] = defaultdict(set)
    for e in counted:
        if package_of(e.source) != package_of(e.target):
            by_package[package_of(e.source)].add(package_of(e.target))
        elif not e.by_string:  # a registry naming its entries' modules is the lazy idiom, not a circle
            by_module[e.source].add(e.target)
    for circle in _circles(by_package):
        problems.append(f"package circle: {' <-> '.join(circle)} ({_ties(counted, set(circle), package_of)})")
    for circle in _circles(by_module):
        key = frozenset(circle)
        owners = [allowed_circles[key]] if key in allowed_circles else []
        owners += [allowed_circle_members[m] for m in circle if m in allowed_circle_members]
        if owners:
            used.add(
                key if key in allowed_circles else next(m for m in circle if m in allowed_circle_members)
            )
            continue
        problems.append(f"module circle: {' <-> '.join(circle)} ({_ties(counted, set(circle), lambda m: m)})")
    return problems, used


def test_bobench_keeps_its_layer_order():
    problems, used = layer_violations(
        SRC, "bobench", LAYERS, TEMPORARY_ALLOWED, TEMPORARY_CIRCLES, TEMPORARY_CIRCLE_MEMBERS
    )
    assert not problems, "\n".join(problems)
    stale = sorted(
        str(k) for k in [*TEMPORARY_ALLOWED, *TEMPORARY_CIRCLES, *TEMPORARY_CIRCLE_MEMBERS] if k not in used
    )
    assert not stale, f"temporary allow-list entries that match nothing any more (delete them): {stale}"


def test_every_layer_row_names_a_package_of_the_tree():
    present = {package_of(m) for m in module_names(SRC, "bobench") if m != "bobench"}
    assert sorted(set(LAYERS) - present - set(ARRIVING)) == []
    arrived = sorted(set(ARRIVING) & present)
    assert not arrived, f"these have arrived: delete them from ARRIVING in {Path(__file__).name}: {arrived}"
    assert len(LAYERS) == len(PACKAGES)  # no name twice


def test_the_architecture_doc_carries_the_layer_table():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert markdown_table() in doc, "docs/architecture.md: paste the output of `python -m bobench._layers`"
    rows = {name: int(layer) for layer, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", doc, flags=re.M)}
    assert rows == LAYERS


# The checker itself, on a tiny synthetic tree.


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


TINY_LAYERS = {"low": 1, "high": 2}


def test_checker_passes_a_tree_that_imports_only_downwards(tmp_path):
    src = _tree(tmp_path, {
        "__init__.py": "",
        "low.py": "X = 1\n",
        "high/__init__.py": "from pkg.low import X\n",
        "high/a.py": "from . import b\nfrom .b import Y\n",
        "high/b.py": "Y = 2\n",
    })  # fmt: skip
    assert layer_violations(src, "pkg", TINY_LAYERS) == ([], set())


@pytest.mark.parametrize(
    "low_text",
    [
        "from pkg.high import Y\n",
        "import pkg.high.b\n",
        "def f():\n    from pkg.high.b import Y\n",  # imports inside functions count
        "LOADERS = {'y': 'pkg.high.b:Y'}\n",  # so do "module:function" registrations
    ],
    ids=["from", "import", "lazy", "string"],
)
def test_checker_names_file_line_and_layers_of_an_upward_import(tmp_path, low_text):
    src = _tree(
        tmp_path, {"__init__.py": "", "low.py": low_text, "high/__init__.py": "", "high/b.py": "Y = 2\n"}
    )
    problems, _ = layer_violations(src, "pkg", TINY_LAYERS)
    assert len(problems) == 1 and re.match(
        r"pkg/low\.py:\d+ imports pkg\.high(\.b)? \(layer 2\) from pkg\.low \(layer 1\)$", problems[0]
    ), problems


def test_checker_resolves_relative_imports_to_another_package(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "high/__init__.py": "", "low/__init__.py": "", "low/a.py": "from ..high import b\n", "high/b.py": ""})  # fmt: skip
    problems, _ = layer_violations(src, "pkg", TINY_LAYERS)
    assert problems == ["pkg/low/a.py:1 imports pkg.high.b (layer 2) from pkg.low.a (layer 1)"]


def test_checker_reports_package_and_module_circles(tmp_path):
    src = _tree(tmp_path, {
        "__init__.py": "",
        "one.py": "from pkg import two\n",
        "two.py": "def f():\n    from pkg import one\n",
        "inner/__init__.py": "",
        "inner/a.py": "from pkg.inner import b\n",
        "inner/b.py": "from pkg.inner.a import X\n",
    })  # fmt: skip
    problems, _ = layer_violations(src, "pkg", {"one": 1, "two": 1, "inner": 1})
    assert problems == [
        "package circle: one <-> two (pkg/one.py:1 imports pkg.two; pkg/two.py:2 imports pkg.one)",
        "module circle: pkg.inner.a <-> pkg.inner.b (pkg/inner/a.py:1 imports pkg.inner.b; "
        "pkg/inner/b.py:1 imports pkg.inner.a)",
    ]


def test_checker_asks_for_a_row_for_an_unknown_package(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "low.py": "", "new.py": ""})
    problems, _ = layer_violations(src, "pkg", {"low": 1})
    assert problems == ["pkg.new has no layer: add a row for it to bobench/_layers.py"]


def test_checker_skips_allowed_edges_and_says_which_it_used(tmp_path):
    src = _tree(tmp_path, {"__init__.py": "", "low.py": "from pkg.high import b\n", "high/__init__.py": "", "high/b.py": ""})  # fmt: skip
    allowed = {("pkg/low.py", "high"): "someone"}
    assert layer_violations(src, "pkg", TINY_LAYERS, allowed) == ([], {("pkg/low.py", "high")})
