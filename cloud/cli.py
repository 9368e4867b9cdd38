"""``facelink``: the cloud side's command line — server, gallery, training, export, benchmarks, demo.

Every sub-command lives in its own module with a ``main(argv)``; this table names them, so ``facelink --help``
answers without importing torch or any of them.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# name -> (module with main(argv), one-line help). Modules load only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("facelink.cloud.serving.serve_command", "run the gRPC recognition server"),
    "tokens": ("facelink.cloud.serving.auth", "server bearer tokens: add (shown once, stored hashed), list, remove"),
    "enroll": ("facelink.cloud.cli:enroll_main", "add face images to a running server's gallery under a name"),
    "gallery": ("facelink.cloud.serving.gallery_cli", "list a gallery's identities and samples; erase them"),
    "decode": ("facelink.cloud.cli:decode_main", "decode a .flk container to an image file"),
    "demo": ("facelink.cloud.demo", "the whole edge-to-cloud pipeline on loopback, on shipped defaults"),
    "train": ("facelink.cloud.training.train", "train a codec rate point (a config file or a ladder point)"),
    "export": ("facelink.cloud.training.export", "package a trained codec as a registry rate point"),
    "core-v2": ("facelink.cloud.training.core_v2", "codec core v2: train/resume the variable-rate codec, milestones"),
    "train-summary": ("facelink.cloud.training.train_summary", "steps, wall time and last figures of training runs"),
    "train-adapters": ("facelink.cloud.training.train_adapters", "train face-domain adapters and gate on a rate point"),
    "verify-bitexact": ("facelink.cloud.evaluation.bitexact",
                        "edge-encode and cloud-decode a data set; count mismatches"),
    "models": ("facelink.cloud.cli:models_main", "the rate points shipped with facelink (see models --help)"),
    "bench": ("facelink.cloud.cli:bench_main", "benchmarks: accuracy against bytes, speed, load (see bench --help)"),
}

# `facelink models NAME`: name -> (module, argv prefix, help)
MODELS_COMMANDS: dict[str, tuple[str, list[str], str]] = {
    "readme": ("facelink.cloud.evaluation.model_card", [], "write (or --check) the model table beside the models"),
}

# `facelink bench NAME`: name -> (module, argv prefix, help). run/report/estimate/codecs are one program.
BENCH_COMMANDS: dict[str, tuple[str, list[str], str]] = {
    "run": ("facelink.benchmarks.bench", ["run"], "accuracy against bytes per face: codecs x data sets x recognizers"),
    "report": ("facelink.benchmarks.bench", ["report"], "recompute headline figures and plots of a result folder"),
    "estimate": ("facelink.benchmarks.bench", ["estimate"], "time a few images per codec setting; extrapolate"),
    "codecs": ("facelink.benchmarks.bench", ["codecs"], "list the codecs, their sweeps and availability"),
    "compare": ("facelink.benchmarks.compare", [], "two codec curves from two result folders at equal bytes"),
    "core-v2-summary": ("facelink.benchmarks.core_v2_summary", [],
                        "the variable-rate codec against HEVC, AVIF, JPEG XL and the ladder: summary.json and plot"),
    "recognizers": ("facelink.benchmarks.recognizers", [], "the recognizers on uncompressed faces"),
    "edge-speed": ("facelink.benchmarks.edge_speed", [], "edge encode time against torch's, one thread"),
    "edge-pipeline": ("facelink.benchmarks.edge_pipeline", [],
                      "edge detection per frame and align+encode+entropy per face, one thread, against torch"),
    "edge-binary": ("facelink.benchmarks.edge_binary", [], "the one-file edge binary: size, contents, start-up time"),
    "rans-speed": ("facelink.benchmarks.rans_speed", [], "entropy coding per face and decoding per frame: C vs Python"),
    "bit-allocation": ("facelink.benchmarks.bit_allocation", [], "where a rate point spends its bits on full frames"),
    "calibrate-threshold": ("facelink.benchmarks.calibrate_threshold", [], "the server's match threshold"),
    "serve": ("facelink.benchmarks.serve_load", [], "load on a real server: frames/s, p50/p99, RSS, batching off/on"),
    "attacks": ("facelink.benchmarks.serve_attacks", [], "hostile requests against a real server: answer, time, RSS"),
    "edge-delivery": ("facelink.benchmarks.edge_delivery", [],
                      "edge delivery through server kills, link cuts, client kills: exactly once or counted dropped"),
}


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or "main")


def _table_parser(prog: str, description: str, table: dict) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 epilog=f"'{prog} COMMAND --help' describes a command's options.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in table.items():
        sub.add_parser(name, help=entry[-1], add_help=False)
    return ap


def _help_or_error(ap: argparse.ArgumentParser, argv: list[str]) -> int:
    """No command, or one the table does not name: argparse prints the help, the version or the error."""
    try:
        ap.parse_args(argv[:1] or ["--help"])
    except SystemExit as e:
        return 0 if argv and e.code == 0 else 2
    return 2


def _group_main(prog: str, description: str, table: dict, argv: list[str]) -> int:
    ap = _table_parser(prog, description, table)
    if not argv or argv[0] not in table:
        return _help_or_error(ap, argv)
    module, prefix, _ = table[argv[0]]
    return int(_load(module)(prefix + argv[1:]) or 0)


def bench_main(argv: list[str]) -> int:
    return _group_main("facelink bench", "facelink's benchmarks. Results go under benchmarks/results/ with the "
                                         "command and provenance that made them.", BENCH_COMMANDS, argv)


def models_main(argv: list[str]) -> int:
    return _group_main("facelink models", "The codec rate points in the registry.", MODELS_COMMANDS, argv)


def enroll_main(argv: list[str]) -> int:
    import grpc

    from facelink.edge.sender import DeliveryError, add_connection_arguments, connection_from_args

    ap = argparse.ArgumentParser(prog="facelink enroll", description="Enroll face images under a name (an admin "
                                 "token where the server checks tokens).")
    ap.add_argument("name", help="the identity's name (as recognition results will report it)")
    ap.add_argument("images", nargs="+", type=Path, help="image files (JPEG/PNG) or .flk containers")
    add_connection_arguments(ap)  # --server, --tls-ca, --tls-cert/--tls-key, --token-file/--token-env
    args = ap.parse_args(argv)
    try:
        connection = connection_from_args(args)
        client = connection.client()
    except DeliveryError as e:
        print(f"facelink enroll: {e}", file=sys.stderr)
        return 2
    try:
        return _enroll(client, args)
    except grpc.RpcError as e:
        print(f"facelink enroll: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2


def _enroll(client, args) -> int:
    with client:
        for p in args.images:
            if not p.is_file():
                print(f"facelink enroll: {p}: no such file", file=sys.stderr)
                return 2
            data = p.read_bytes()
            kw = {"bitstream": data} if p.suffix == ".flk" else {"image": data}
            r = client.enroll(args.name, source_name=p.name, **kw)
            print(f"{r.identity}: {r.samples} sample(s) for {r.recognizer}")
    return 0


# facelink decode's default bound on a container's declared size: 16 MP, as an enrolment photograph's
DECODE_MAX_PIXELS = 4096 * 4096


def decode_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="facelink decode", description="Decode a .flk container to an image.")
    ap.add_argument("input", type=Path, help="the .flk container")
    ap.add_argument("-o", "--output", type=Path, help="image file; its suffix picks the format "
                                                      "(default: INPUT with suffix .png)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output")
    ap.add_argument("--max-pixels", type=int, default=DECODE_MAX_PIXELS, metavar="N",
                    help="refuse a container that declares more (padded) pixels, from its header, before any "
                         "decoding (default %(default)s, 16 MP; 0: no limit). A hostile header can claim a size "
                         "whose entropy decoding alone takes gigabytes")
    args = ap.parse_args(argv)

    import cv2

    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.shared.bitstream import BitstreamError

    out = args.output or args.input.with_suffix(".png")
    if out.exists() and not args.force:
        print(f"facelink decode: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        dec = CloudDecoder(max_pixels=args.max_pixels or None).decode(args.input.read_bytes())
    except (OSError, BitstreamError) as e:  # a frame over --max-pixels included
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facelink")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``, read from the package metadata only when asked (that import costs every command ~0.1 s)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(message=f"facelink {_version()}\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # straight to the command: the table's parser only answers help and errors
        return int(_load(COMMANDS[argv[0]][0])(argv[1:]) or 0)
    ap = _table_parser("facelink", "facelink's cloud side: the recognition server, its gallery, codec training and "
                                   "export, benchmarks and the demo. The camera side is facelink-edge.", COMMANDS)
    ap.add_argument("--version", action=_VersionAction, help="print the version and exit")
    return _help_or_error(ap, argv)


if __name__ == "__main__":
    raise SystemExit(main())
