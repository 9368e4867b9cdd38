"""``facelink``: the cloud side — server, enrollment, training, export, benchmarks, demo.

  facelink serve            run the gRPC server
  facelink enroll NAME IMG  add a face to a running server's gallery
  facelink decode IN.flk    decode a bitstream to an image file
  facelink train            train a codec (schema-checked config)
  facelink export           package a trained codec as a registry rate point
  facelink train-summary    steps, wall time and end-of-training figures of training runs
  facelink verify-bitexact  edge-encode / cloud-decode a data set and count mismatches
  facelink bench ...        accuracy-versus-bpp benchmarks; `bench recognizers`, `bench edge-speed`,
                            `bench bit-allocation`
  facelink demo             the whole pipeline on loopback
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

COMMANDS = {
    "serve": "facelink.cloud.serving.server",
    "train": "facelink.cloud.training.train",
    "export": "facelink.cloud.training.export",
    "train-summary": "facelink.cloud.training.train_summary",
    "verify-bitexact": "facelink.cloud.evaluation.bitexact",
    "demo": "facelink.cloud.demo",
    "bench": "facelink.benchmarks.bench",
    "bench recognizers": "facelink.benchmarks.recognizers",
    "bench edge-speed": "facelink.benchmarks.edge_speed",
    "bench bit-allocation": "facelink.benchmarks.bit_allocation",
    "bench calibrate-threshold": "facelink.benchmarks.calibrate_threshold",
}


def _enroll(argv: list[str]) -> int:
    from facelink.edge.client import Client

    ap = argparse.ArgumentParser(prog="facelink enroll", description="Enroll face images under a name.")
    ap.add_argument("name")
    ap.add_argument("images", nargs="+", type=Path, help="image files (JPEG/PNG) or .flk bitstreams")
    ap.add_argument("--server", default="127.0.0.1:50051")
    args = ap.parse_args(argv)
    with Client(args.server) as client:
        for p in args.images:
            if not p.is_file():
                print(f"facelink enroll: {p}: no such file", file=sys.stderr)
                return 2
            data = p.read_bytes()
            kw = {"bitstream": data} if p.suffix == ".flk" else {"image": data}
            r = client.enroll(args.name, source_name=p.name, **kw)
            print(f"{r.identity}: {r.samples} sample(s) for {r.recognizer}")
    return 0


def _decode(argv: list[str]) -> int:
    import cv2

    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.shared.bitstream import BitstreamError

    ap = argparse.ArgumentParser(prog="facelink decode", description="Decode a .flk bitstream to an image.")
    ap.add_argument("input", type=Path)
    ap.add_argument("-o", "--output", type=Path, help="PNG (default: INPUT with suffix .png)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = ap.parse_args(argv)
    out = args.output or args.input.with_suffix(".png")
    if out.exists() and not args.force:
        print(f"facelink decode: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        dec = CloudDecoder().decode(args.input.read_bytes())
    except (OSError, BitstreamError) as e:
        print(f"facelink decode: {args.input}: {e}", file=sys.stderr)
        return 2
    tmp = out.with_name(out.stem + ".part" + out.suffix)  # cv2 picks the format by the suffix
    if not cv2.imwrite(str(tmp), cv2.cvtColor(dec.image, cv2.COLOR_RGB2BGR)):
        print(f"facelink decode: cannot write {out} (unknown image suffix or unwritable folder)", file=sys.stderr)
        tmp.unlink(missing_ok=True)
        return 2
    tmp.replace(out)
    print(f"{out}: {dec.image.shape[1]}×{dec.image.shape[0]}, model {dec.model_name}, "
          f"container version {dec.frame.version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "enroll":
        return _enroll(rest)
    if cmd == "decode":
        return _decode(rest)
    if cmd == "bench" and rest[:1] and f"bench {rest[0]}" in COMMANDS:
        cmd, rest = f"bench {rest[0]}", rest[1:]
    if cmd not in COMMANDS:
        print(f"facelink: unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[cmd]).main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
