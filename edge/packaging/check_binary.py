"""Check a built one-file edge binary: what its archive holds, and that nothing of torch or the cloud got in.

  python edge/packaging/check_binary.py [dist/facelink-edge]

Lists every entry of the PyInstaller archive (the PKG and the PYZ of Python modules inside it); exits 1 naming any
entry that belongs to torch, CompressAI, the cloud side or the benchmarks, or when the default rate point or YuNet is
missing. Needs PyInstaller (the [build] extra), not the binary's own Python.
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


def archive_names(path: Path) -> list[str]:
    """Every entry name in the binary: the PKG's files and, inside its PYZ archives, the Python modules."""
    from PyInstaller.archive.readers import CArchiveReader

    pkg = CArchiveReader(str(path))
    names = list(pkg.toc)
    for name, entry in pkg.toc.items():
        if entry[4] == "z":  # an embedded PYZ: Python modules
            names += list(pkg.open_embedded_archive(name).toc)
    return names


def check(path: Path, default_model: str) -> dict:
    names = archive_names(path)
    forbidden = sorted(n for n in names if FORBIDDEN.search(n))
    missing = [r.format(default=default_model) for r in REQUIRED if r.format(default=default_model) not in names]
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
