"""``facelink-edge``: what runs on the camera. No torch.

  facelink-edge encode IMAGE [-o OUT.flk]         code one image (its most prominent face, or --full-frame)
  facelink-edge stream PATH... --server HOST:PORT  send images to a facelink server, print results as they come
  facelink-edge info --server HOST:PORT            the server's models; checks it speaks this edge's model
  facelink-edge models                             rate points available on this device
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import grpc
import numpy as np

from facelink.shared import bitstream, registry
from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES, TEMPLATE_IDS, template_id
from facelink.shared.roi import BackgroundBlur

DEFAULT_CROP = ARCFACE_112.name
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class EdgeError(Exception):
    pass


def read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EdgeError(f"{path}: no such file")
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise EdgeError(f"{path}: not a readable image")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def list_images(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise EdgeError(f"{p}: no such file or folder")
    if not out:
        raise EdgeError(f"no images found in {' '.join(paths)}")
    return out


def _pipeline(args):
    from facelink.edge.encoder import EdgePipeline

    if args.blur_background is not None and not args.full_frame:
        raise EdgeError("--blur-background needs --full-frame (a face crop is all face)")
    if args.crop_template is not None and args.full_frame:
        raise EdgeError("--crop-template applies to face crops, not --full-frame")
    blur = None if args.blur_background is None else BackgroundBlur(sigma=args.blur_background)
    return EdgePipeline(args.model, full_frame=args.full_frame, threads=args.threads, blur_background=blur,
                        format_version=args.format_version, crop_template=args.crop_template or DEFAULT_CROP)


def cmd_encode(args) -> int:
    src = Path(args.image)
    rgb = read_rgb(src)
    pipe = _pipeline(args)
    t0 = time.perf_counter()
    enc = pipe.process(rgb)
    ms = (time.perf_counter() - t0) * 1e3
    if enc is None:
        raise EdgeError(f"{src}: no face found (use --full-frame to code the whole image)")
    out = Path(args.output) if args.output else src.with_suffix(".flk")
    if out.exists() and not args.force:
        raise EdgeError(f"{out} exists; pass --force to overwrite it")
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(enc.data)
    tmp.replace(out)
    print(json.dumps({"input": str(src), "output": str(out), "bytes": len(enc.data), "bpp": round(enc.bpp, 5),
                      "width": enc.width, "height": enc.height, "mode": "full-frame" if args.full_frame else "face-crop",
                      "crop_template": None if pipe.cropper is None else pipe.cropper.template.name,
                      "background_blur": args.blur_background,
                      "model": pipe.encoder.bundle.name, "model_id": pipe.encoder.model_id,
                      "encode_ms": round(ms, 2)}))
    return 0


def _check_server_model(client, model_id: str, format_version: int = bitstream.FORMAT_VERSION,
                        crop_template_id: int = 0) -> None:
    """Refuse, before anything is sent, a server that could not read what this edge writes."""
    info = client.model_info()
    if info.bitstream_format_version and info.bitstream_format_version < format_version:
        raise EdgeError(f"the server reads bitstream format versions up to {info.bitstream_format_version}; this "
                        f"edge writes version {format_version}: pass --format-version "
                        f"{info.bitstream_format_version} (or update the server)")
    readable = set(info.crop_template_ids) or {1}  # a server that predates the field reads arcface-112 only
    if crop_template_id and crop_template_id not in readable:
        names = ", ".join(TEMPLATE_IDS[i].name for i in sorted(readable) if i in TEMPLATE_IDS)
        raise EdgeError(f"the server does not read {TEMPLATE_IDS[crop_template_id].name} crops; it reads {names}: "
                        f"pass --crop-template {names.split(', ')[0]} (or update the server)")
    ids = {m.model_id: m.name for m in info.models}
    if model_id not in ids:
        raise EdgeError(f"the server does not have this edge's codec model {model_id}; it serves "
                        f"{', '.join(f'{m.name} ({m.model_id})' for m in info.models)}")


def cmd_stream(args) -> int:
    from facelink.edge.client import Client, request
    from facelink.v1 import facelink_pb2 as pb

    files = list_images(args.paths)
    pipe = _pipeline(args)
    sent: dict[str, dict] = {}
    skipped = []

    def requests():
        for i, f in enumerate(files):
            t0 = time.perf_counter()
            try:
                enc = pipe.process(read_rgb(f))
            except EdgeError as e:
                skipped.append((str(f), str(e)))
                continue
            if enc is None:
                skipped.append((str(f), "no face found"))
                continue
            rid = str(i)
            sent[rid] = {"file": str(f), "bytes": len(enc.data), "bpp": enc.bpp,
                         "encode_ms": (time.perf_counter() - t0) * 1e3, "t_send": time.perf_counter()}
            yield request(rid, enc.data, source=f.name, top_k=args.top_k)

    rows = []
    with Client(args.server, timeout=args.timeout) as client:
        try:
            client.wait_ready(args.timeout)
            _check_server_model(client, pipe.encoder.model_id, args.format_version,
                                0 if pipe.cropper is None else template_id(pipe.cropper.template))
        except grpc.FutureTimeoutError:
            raise EdgeError(f"no facelink server answers at {args.server}")
        if not args.json:
            print(f"{'file':<40} {'bytes':>6} {'bpp':>6} {'identity':<24} {'sim':>6} {'ms':>7}")
        for resp in client.recognize_stream(requests()):
            s = sent[resp.id]
            latency = (time.perf_counter() - s["t_send"]) * 1e3 + s["encode_ms"]
            row = {"id": resp.id, "file": s["file"], "bytes": s["bytes"], "bpp": round(s["bpp"], 4),
                   "latency_ms": round(latency, 1)}
            if resp.WhichOneof("outcome") == "error":
                row["error"] = {"code": pb.Error.Code.Name(resp.error.code), "message": resp.error.message}
                shown = f"ERROR {row['error']['code']}"
                sim = ""
            else:
                r = resp.result
                row.update(face_found=r.face_found, identity=r.identity or None, similarity=round(r.similarity, 4),
                           encode_ms=round(s["encode_ms"], 1), decode_ms=round(r.decode_ms, 1),
                           recognize_ms=round(r.recognize_ms, 1),
                           matches=[{"identity": m.identity, "similarity": round(m.similarity, 4)} for m in r.matches])
                shown = r.identity or ("(no face)" if not r.face_found else "(unknown)")
                sim = f"{r.similarity:.3f}"
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{Path(s['file']).name[:40]:<40} {s['bytes']:>6} {s['bpp']:>6.3f} {shown[:24]:<24} {sim:>6} "
                      f"{latency:>7.1f}", flush=True)
    for f, why in skipped:
        print(json.dumps({"file": f, "skipped": why}) if args.json else f"skipped {f}: {why}", flush=True)
    return 0 if rows else 1


def edge_model_status(local, served: list[dict]) -> dict:
    """Whether a server holding ``served`` (ModelInfo's models, as dicts) decodes what ``local`` encodes: served only
    when exactly one of its models has the bitstream's model id. With several (a refined decoder beside its source,
    or two precisions), the server refuses the containers as ambiguous, so they are named here."""
    names = [m.get("name", "") for m in served if m.get("model_id") == local.model_id]
    status = {"name": local.name, "model_id": local.model_id, "served": len(names) == 1}
    if len(names) > 1:
        status["ambiguous"] = names
        status["why"] = (f"the server holds {len(names)} models for this bitstream and refuses its containers as "
                         "ambiguous: serve only one of them (facelink serve --model NAME, or models: in its config)")
    return status


def cmd_info(args) -> int:
    from facelink.edge.client import Client
    from google.protobuf.json_format import MessageToDict

    with Client(args.server, timeout=args.timeout) as client:
        try:
            client.wait_ready(args.timeout)
        except grpc.FutureTimeoutError:
            raise EdgeError(f"no facelink server answers at {args.server}")
        info = MessageToDict(client.model_info(), preserving_proto_field_name=True)
    info["edge_model"] = edge_model_status(registry.load(args.model), info.get("models", []))
    print(json.dumps(info, indent=2))
    return 0 if info["edge_model"]["served"] else 3


def cmd_models(args) -> int:
    bundles = [registry.load(name) for name in registry.available()]
    by_id = registry.names_by_model_id(bundles)
    for b in bundles:
        default = " (default)" if b.name == registry.DEFAULT_MODEL else ""
        # Same encoder and tables, another decoder (a refined one, or another precision): the same bitstream.
        shared = [n for n in by_id[b.model_id] if n != b.name]
        same = f"\tsame bitstream as {', '.join(shared)}" if shared else ""
        lmbda = b.manifest["training"]["lambda"]
        print(f"{b.name}\t{b.model_id}\t{b.manifest['architecture']}\tλ={lmbda}{default}{same}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="facelink-edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--model", help=f"rate point from the registry (default {registry.DEFAULT_MODEL})")
        p.add_argument("--full-frame", action="store_true", help="code the whole image instead of the face crop")
        p.add_argument("--blur-background", nargs="?", type=float, const=BackgroundBlur.sigma, metavar="SIGMA",
                       help="with --full-frame: blur everything outside the detected faces (Gaussian SIGMA pixels, "
                            f"default {BackgroundBlur.sigma:g}) so the bits go to the faces")
        p.add_argument("--crop-template", choices=list(CROP_TEMPLATES),
                       help=f"what the face is aligned to and coded as (default {DEFAULT_CROP}); a smaller crop of the "
                            "same framing costs fewer bytes, and the cloud scales it up for its recognizers")
        p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
        p.add_argument("--format-version", type=int, choices=bitstream.READABLE_VERSIONS,
                       default=bitstream.FORMAT_VERSION,
                       help=f"bitstream container version to write (default {bitstream.FORMAT_VERSION}; 1 for a "
                            "server that reads only version 1: a larger container, about a fifth more bytes per "
                            "face crop)")

    p = sub.add_parser("encode", help="code one image into a .flk bitstream")
    p.add_argument("image")
    p.add_argument("-o", "--output", help="output file (default: IMAGE with suffix .flk)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    common(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("stream", help="stream images to a server and print results as they come back")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--server", default="127.0.0.1:50051")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    common(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("info", help="the server's models and recognizer")
    p.add_argument("--server", default="127.0.0.1:50051")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--model")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="rate points available on this device")
    p.set_defaults(func=cmd_models)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (EdgeError, registry.UnknownModelError, ValueError) as e:
        print(f"facelink-edge: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(f"facelink-edge: server error {e.code().name}: {e.details()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
