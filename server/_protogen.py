"""Generate the Python gRPC stubs from ``proto/archsearch/v1/*.proto``.

The stubs are committed (so a worker machine needs no ``grpcio-tools``) and live beside the
``.proto`` files, installed as ``archsearch.v1``. ``make proto`` runs this module; a test runs it
into a temporary folder and checks the committed stubs match the ``.proto`` files.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
STUB_DIR = PROTO_ROOT / "archsearch" / "v1"


def generate(out_root: Path) -> list[Path]:
    """Writes ``archsearch/v1/*_pb2*.py(i)`` under ``out_root``; returns the files written."""
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in STUB_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside the interpreter
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted((out_root / "archsearch" / "v1").glob("*_pb2*"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for f in generate(Path(tmp)):
            shutil.copy(f, STUB_DIR / f.name)
            print(f"wrote {STUB_DIR / f.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
