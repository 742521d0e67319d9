"""The test tiers are folders by what a test starts (tests/conftest.py): a module under tests/unit or
tests/service that starts a process or a server belongs in tests/integration.

The check reads the source (AST), so it also covers tests that are skipped here: an import of a
process-starting module, a call that starts a process or a gRPC/HTTP server, or a helper that does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
IN_PROCESS_TIERS = ("unit", "service")

# Modules whose import means the test starts processes or serves sockets.
PROCESS_MODULES = {
    "subprocess",
    "multiprocessing",
    "pty",
    "http.server",
    "socketserver",
    "asyncio.subprocess",
}
PROCESS_CALLS = {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"}  # os.NAME
PROCESS_CALL_PREFIXES = ("spawn", "exec")  # os.spawnv, os.execv, ...
SERVER_ATTRIBUTES = {
    "create_subprocess_exec",
    "create_subprocess_shell",
    "add_insecure_port",
    "add_secure_port",
}
# Test helpers that run kubectl or stop server processes (tests/deploy_render.py, tests/integration/conftest.py).
PROCESS_HELPERS = {
    "deploy_render": {"kubectl", "run_kustomize", "render", "render_target"},
    "conftest": {"stop_pid", "pid_reaper"},
}
# module (relative to tests/) -> why it may stay in its in-process tier. Keep this short.
ALLOWED: dict[str, str] = {}


def problems(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in PROCESS_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PROCESS_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            names = {a.name for a in node.names}
            if node.module == "os" and names & PROCESS_CALLS:
                found.append(f"line {node.lineno}: from os import {sorted(names & PROCESS_CALLS)}")
            if names & PROCESS_HELPERS.get(node.module, set()):
                found.append(f"line {node.lineno}: from {node.module} import {sorted(names)}")
            if node.module == "grpc" and "server" in names:
                found.append(f"line {node.lineno}: from grpc import server")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner == "os" and (node.attr in PROCESS_CALLS or node.attr.startswith(PROCESS_CALL_PREFIXES)):
                found.append(f"line {node.lineno}: os.{node.attr}")
            elif node.attr in SERVER_ATTRIBUTES:
                found.append(f"line {node.lineno}: .{node.attr}")
            elif node.attr == "server" and ast.unparse(node.value) in ("grpc", "grpc.aio", "aio"):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def in_process_modules() -> list[Path]:
    return sorted(p for tier in IN_PROCESS_TIERS for p in (TESTS / tier).glob("*.py"))


@pytest.mark.parametrize("path", in_process_modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_in_process_tiers_start_no_process_or_server(path):
    name = str(path.relative_to(TESTS))
    if name in ALLOWED:
        pytest.skip(ALLOWED[name])
    found = problems(path.read_text())
    assert not found, f"tests/{name} starts a process or server; move it to tests/integration: {found}"


@pytest.mark.parametrize(
    "source",
    [
        "import subprocess\n",
        "from subprocess import run\n",
        "import multiprocessing as mp\n",
        "from http.server import ThreadingHTTPServer\n",
        "import os\nos.system('true')\n",
        "import os\nos.execv('/bin/true', [])\n",
        "import asyncio\nasyncio.create_subprocess_exec('true')\n",
        "import grpc\ns = grpc.aio.server()\ns.add_insecure_port('127.0.0.1:0')\n",
        "import grpc\ngrpc.server(None)\n",
        "from deploy_render import render_target\n",
        "from conftest import stop_pid\n",
    ],
)
def test_the_check_catches_each_way_to_start_a_process(source):
    assert problems(source)


def test_the_check_passes_pure_code():
    assert problems("import os, sys\nfrom deploy_render import container\nos.environ.get('X')\n") == []


def test_test_module_names_are_unique_across_the_tiers():
    """The tiers have no __init__.py, so pytest imports test modules by basename: two tests/*/test_x.py
    fail the collection of the whole suite ("import file mismatch") though each tier alone passes."""
    seen: dict[str, list[str]] = {}
    for path in sorted(TESTS.glob("*/test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}


def test_the_allow_list_names_existing_modules_with_a_reason():
    for name, reason in ALLOWED.items():
        assert (TESTS / name).is_file() and reason.strip(), name
