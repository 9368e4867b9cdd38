"""Check a built one-file edge binary: what its archive holds, and that nothing of torch or the cloud got in.

  python edge/packaging/check_binary.py [dist/facelink-edge]

Lists every entry of the binary: the files of the packed folder build (edge/packaging/selfextract.py; ``_internal/``
dropped from their names) and the Python modules in its launcher's PYZ archive, or, for a PyInstaller one-file
binary, its PKG and PYZ. Exits 1 naming any entry that belongs to torch, CompressAI, the cloud side or the
benchmarks, or when the default rate point, YuNet or the native rANS core is missing. Needs PyInstaller (the
[build] extra), not the binary's own Python.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

FORBIDDEN = re.compile(r"(^|[/.])(torch|torchvision|compressai|functorch)([/.]|$)"
                       r"|^facelink[/.](cloud|benchmarks)([/.]|$)")
REQUIRED = ("facelink/shared/resources/detectors/face_detection_yunet.onnx", "facelink.edge.cli",
            "facelink/shared/resources/models/{default}/encoder.onnx",
            "facelink/shared/resources/models/{default}/tables.npz")
# The native rANS core (shared/_rans.c): without it the edge entropy-codes in pure Python, several times slower.
NATIVE_RANS = re.compile(r"^facelink[/.]shared[/.]_rans(\.[^/]*)?\.(so|pyd)$")
NATIVE_RANS_NAME = "facelink/shared/_rans.*.so (the native rANS core: pip install -e . with a C compiler builds it)"


def pyinstaller_names(path: Path) -> list[str]:
    """A PyInstaller executable's PKG entries and, inside its PYZ archives, the Python modules."""
    from PyInstaller.archive.readers import CArchiveReader

    pkg = CArchiveReader(str(path))
    names = list(pkg.toc)
    for name, entry in pkg.toc.items():
        if entry[4] == "z":  # an embedded PYZ: Python modules
            names += list(pkg.open_embedded_archive(name).toc)
    return names


def archive_names(path: Path) -> list[str]:
    """Every entry name in the binary (see the module's docstring)."""
    import io
    import tarfile
    import tempfile

    from selfextract import MARKER, read_shards

    with open(path, "rb") as f:
        packed = MARKER in f.read(1 << 16)
    if not packed:
        return pyinstaller_names(path)
    names = []
    for shard in read_shards(path):
        with tarfile.open(fileobj=io.BytesIO(shard), mode="r:gz") as tar:
            for member in tar.getmembers():
                names.append(member.name.removeprefix("_internal/"))
                if member.name == "facelink-edge":  # the folder build's launcher: its PYZ holds the Python modules
                    with tempfile.NamedTemporaryFile() as exe:
                        exe.write(tar.extractfile(member).read())
                        exe.flush()
                        names += pyinstaller_names(Path(exe.name))
    return names


def check(path: Path, default_model: str) -> dict:
    names = archive_names(path)
    forbidden = sorted(n for n in names if FORBIDDEN.search(n))
    missing = [r.format(default=default_model) for r in REQUIRED if r.format(default=default_model) not in names]
    if not any(NATIVE_RANS.match(n) for n in names):
        missing.append(NATIVE_RANS_NAME)
    models = sorted({n.split("/")[4] for n in names if n.startswith("facelink/shared/resources/models/")})
    return {"binary": str(path), "bytes": path.stat().st_size, "entries": len(names), "models": models,
            "forbidden": forbidden, "missing": missing, "ok": not forbidden and not missing}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", type=Path, default=Path("dist/facelink-edge"), help="the built binary")
    args = ap.parse_args(argv)
    if not args.binary.is_file():
        print(f"{args.binary}: no such file (make edge-binary builds it)", file=sys.stderr)
        return 2
    from facelink.shared.registry import DEFAULT_MODEL

    result = check(args.binary, DEFAULT_MODEL)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
