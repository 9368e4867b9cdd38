"""Regenerate the committed Python gRPC code from proto/facelink/v1/facelink.proto.

Run: python proto/generate.py   (needs grpcio-tools; tests/test_proto.py checks the committed code is current)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO = "facelink/v1/facelink.proto"
GENERATED = ("facelink_pb2.py", "facelink_pb2.pyi", "facelink_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(PROTO_ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in GENERATED:
            (PROTO_ROOT / "facelink" / "v1" / name).write_bytes((Path(tmp) / "facelink" / "v1" / name).read_bytes())
    print("regenerated", ", ".join(GENERATED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
