"""The committed generated modules in src/bobench/v1 must be exactly what `make protos` produces."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "src" / "bobench" / "v1"


def _regenerate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "bobench" / "v1").glob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        str(PROTOS),
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS, capture_output=True, text=True)


def test_generated_code_matches_the_proto_files(tmp_path):
    _regenerate(tmp_path)
    fresh = tmp_path / "bobench" / "v1"
    fresh_names = sorted(p.name for p in fresh.iterdir())
    committed_names = sorted(
        p.name for p in GENERATED.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py"
    )
    assert fresh_names == committed_names, "generated file set differs: run `make protos`"
    differing = [n for n in fresh_names if not filecmp.cmp(fresh / n, GENERATED / n, shallow=False)]
    assert not differing, f"{differing} differ from the .proto files: run `make protos`"


def test_every_proto_declares_the_v1_package_and_has_services_documented():
    for proto in (PROTOS / "bobench" / "v1").glob("*.proto"):
        text = proto.read_text()
        assert "package bobench.v1;" in text, proto.name
        lines = text.splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith(("message ", "service ", "enum ", "rpc ")) or (
                stripped
                and stripped[0].isalpha()
                and stripped.endswith(";")
                and "=" in stripped
                and not stripped.startswith(("syntax", "package", "import", "option"))
            ):
                previous = lines[i - 1].strip()
                assert previous.startswith("//"), (
                    f"{proto.name}:{i + 1}: {stripped!r} has no comment above it"
                )


def test_generated_modules_import_and_declare_the_services():
    from bobench.v1 import evaluator_pb2, scheduler_pb2

    assert set(evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].methods_by_name) == {
        "Evaluate",
        "GetResult",
    }
    assert set(scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].methods_by_name) == {
        "SubmitBattle",
        "WatchBattle",
        "GetBattle",
        "ListBattles",
        "CancelBattle",
        "ListResults",
    }
