"""Builds (when missing or stale) and imports the Python code generated from proto/; it is never committed."""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent.parent
_PROTO_DIR = _ROOT / "proto"
_PROTO_FILES = ["trace_guard/v1/guard.proto"]
_OUT_DIR = Path(__file__).resolve().parent


def _stale() -> bool:
    for rel in _PROTO_FILES:
        src = _PROTO_DIR / rel
        gen = _OUT_DIR / rel.replace(".proto", "_pb2.py")
        if not gen.exists() or (src.exists() and src.stat().st_mtime > gen.stat().st_mtime):
            return True
    return False


def build() -> None:
    """Run protoc (from grpcio-tools) on proto/ and make the generated imports package-relative."""
    # grpc_tools ships the well-known protos; include them so imports like google/protobuf resolve.
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    for rel in _PROTO_FILES:
        args = [
            "protoc",
            f"-I{_PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={_OUT_DIR}",
            f"--pyi_out={_OUT_DIR}",
            f"--grpc_python_out={_OUT_DIR}",
            str(_PROTO_DIR / rel),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {rel}")
    for package_dir in {(_OUT_DIR / rel).parent for rel in _PROTO_FILES}:
        d = package_dir
        while d != _OUT_DIR:
            (d / "__init__.py").touch()
            d = d.parent
        for grpc_file in package_dir.glob("*_pb2_grpc.py"):
            text = grpc_file.read_text()
            # protoc writes absolute imports (`from trace_guard.v1 import guard_pb2`) that only work
            # with the output directory on sys.path; rewrite them to relative ones.
            text = re.sub(r"^from trace_guard\.v1 import (\w+_pb2)", r"from . import \1", text, flags=re.M)
            _atomic_write(grpc_file, text)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


if _stale():
    build()

guard_pb2 = importlib.import_module("server.pb.trace_guard.v1.guard_pb2")
guard_pb2_grpc = importlib.import_module("server.pb.trace_guard.v1.guard_pb2_grpc")

__all__ = ["build", "guard_pb2", "guard_pb2_grpc"]
