"""The committed gRPC code is what protoc makes of proto/facelink/v1/facelink.proto today."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path)
    for name in gen.GENERATED:
        fresh = (tmp_path / "facelink" / "v1" / name).read_text()
        committed = (ROOT / "proto" / "facelink" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run python proto/generate.py"
