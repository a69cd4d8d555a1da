"""The committed stubs beside protos/ai_service.proto are what `make proto` generates from it.

The proto is regenerated into a temporary directory with the Makefile's command (the
folder `protos` mapped to the package name `ai_service_protos`, so the generated imports
say `ai_service_protos.…` as the committed ones do) and every generated file is compared
byte for byte with its committed twin.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from grpc_tools import protoc

from tests.conftest import REPO

PROTO = "protos/ai_service.proto"
STUB_PATTERNS = ("ai_service_pb2*.py", "ai_service_pb2*.pyi")


def generate(out: Path) -> dict[str, bytes]:
    """Run the Makefile's `proto` command with outputs in `out`; return path → content."""
    # protoc in this process (grpc_tools' own entry point), as `make proto` runs it.
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-Iai_service_protos={REPO / 'protos'}",
            f"-I{resources.files('grpc_tools') / '_proto'}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            "ai_service_protos/ai_service.proto",
        ]
    )
    assert status == 0, "grpc_tools.protoc failed (its errors are above)"
    return {
        f"protos/{path.name}": path.read_bytes()
        for pattern in STUB_PATTERNS
        for path in (out / "ai_service_protos").glob(pattern)
    }


def committed() -> dict[str, bytes]:
    return {
        path.relative_to(REPO).as_posix(): path.read_bytes()
        for pattern in STUB_PATTERNS
        for path in (REPO / "protos").glob(pattern)
    }


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    assert {"protos/ai_service_pb2.py", "protos/ai_service_pb2_grpc.py"} <= generated.keys()
    ours = committed()
    problems = [
        f"{name} is missing" if name not in ours else f"{name} differs from {PROTO}"
        for name, content in sorted(generated.items())
        if ours.get(name) != content
    ]
    problems += [
        f"{name} is not generated from {PROTO} any more (delete it)"
        for name in sorted(ours.keys() - generated.keys())
    ]
    assert not problems, "stale generated stubs: " + "; ".join(problems) + ": run `make proto`"
