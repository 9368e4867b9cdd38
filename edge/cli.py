"""``facelink-edge``: what runs on the camera. No torch.

  facelink-edge run SOURCE --server HOST:PORT     camera, video, stream, folder or image: track faces, send the best
                                                   crop of each through the outbox (exactly once, resumes)
  facelink-edge encode IMAGE [-o OUT.flk]         code one image (its most prominent face, or --full-frame)
  facelink-edge send FILE.flk... --server ...      deliver coded crops through the outbox
  facelink-edge stream PATH... --server HOST:PORT  send images' faces on one stream, print results as they come
  facelink-edge info --server HOST:PORT            the server's models; checks it speaks this edge's model
  facelink-edge models                             rate points available on this device

This module imports nothing heavy: each command's parser and code load OpenCV, onnxruntime and gRPC only when that
command runs, so ``facelink-edge --help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from facelink.edge.errors import EdgeError

__all__ = ["EdgeError", "build_parser", "command_parser", "edge_model_status", "main"]

# ----------------------------------------------------------------------------------------------------------------
# Options shared by several commands
# ----------------------------------------------------------------------------------------------------------------
def _model_options(p: argparse.ArgumentParser, full_frame: bool = True) -> None:
    from facelink.shared import bitstream, registry
    from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES

    p.add_argument("--model", help=f"rate point from the registry (default {registry.DEFAULT_MODEL}; "
                                   "see facelink-edge models)")
    if full_frame:
        from facelink.shared.roi import BackgroundBlur

        p.add_argument("--full-frame", action="store_true", help="code the whole image instead of the face crop")
        p.add_argument("--blur-background", nargs="?", type=float, const=BackgroundBlur.sigma, metavar="SIGMA",
                       help="with --full-frame: blur everything outside the detected faces (Gaussian SIGMA pixels, "
                            f"default {BackgroundBlur.sigma:g}) so the bits go to the faces")
    p.add_argument("--crop-template", choices=list(CROP_TEMPLATES),
                   help=f"what the face is aligned to and coded as (default {ARCFACE_112.name}); a smaller crop of the "
                        "same framing costs fewer bytes, and the cloud scales it up for its recognizers")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for the encoder (onnxruntime) and OpenCV (default %(default)s)")
    p.add_argument("--format-version", type=int, choices=bitstream.READABLE_VERSIONS,
                   help=f"bitstream container version to write (default: {bitstream.FORMAT_VERSION} for a rate point, "
                        f"{bitstream.VARIABLE_RATE_VERSION} for a variable-rate model, whose containers carry the "
                        "quality; 1 for a server that reads only version 1: a larger container, about a fifth more "
                        "bytes per face crop)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=float, metavar="Q",
                      help="a variable-rate model's quality, continuous from 0 to its top (7 for eight trained "
                           "qualities; higher: more bytes, more detail; default the model's middle); a rate point, "
                           "such as the default model, has one quality and refuses this")
    rate.add_argument("--max-bytes", type=int, metavar="B",
                      help="a variable-rate model: code each face crop (each frame with --full-frame) at the "
                           "highest quality whose whole container is at most B bytes, found by a short search "
                           "(a few encodings per crop); a crop that does not fit even at quality 0 is not sent")


def _max_pixels_option(p: argparse.ArgumentParser) -> None:
    from facelink.edge.sources import DEFAULT_MAX_PIXELS

    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images larger than N pixels, read from the file's header before decoding "
                        f"(default %(default)s: {DEFAULT_MAX_PIXELS / 1e6:g} MP; 0: no limit)")


def _server_options(p: argparse.ArgumentParser, timeout: float,
                    what: str = "seconds to wait for the server and for each answer") -> None:
    from facelink.edge.sender import add_connection_arguments

    add_connection_arguments(p)
    p.add_argument("--timeout", type=float, default=timeout, help=f"{what} (default %(default)s)")


def _connect(args):
    """A :class:`facelink.edge.client.Client` for the command's connection options (address, TLS, token)."""
    from facelink.edge.sender import connection_from_args

    return connection_from_args(args).client(args.timeout)


def _wait_for_server(client, args) -> None:
    import grpc

    try:
        client.wait_ready(args.timeout)
    except grpc.FutureTimeoutError:
        client.close()
        raise EdgeError(f"no facelink server answers at {args.server}") from None


def check_server_model(client, model_id: str, format_version: int, crop_template_id: int = 0) -> None:
    """Refuse, before anything is sent, a server that could not read what this edge writes: the highest container
    version it reports reading must be at least the one written (a server that predates the field is not asked)."""
    from facelink.shared import bitstream
    from facelink.shared.alignment import TEMPLATE_IDS

    info = client.model_info()
    if info.bitstream_format_version and info.bitstream_format_version < format_version:
        hint = (" (a variable-rate model writes version 3 only: update the server, or code with a rate point)"
                if format_version == bitstream.VARIABLE_RATE_VERSION else " (or update the server)")
        raise EdgeError(f"the server reads bitstream format versions up to {info.bitstream_format_version}; this "
                        f"edge writes version {format_version}: pass --format-version "
                        f"{info.bitstream_format_version}{hint}")
    readable = set(info.crop_template_ids) or {1}  # a server that predates the field reads arcface-112 only
    if crop_template_id and crop_template_id not in readable:
        names = ", ".join(TEMPLATE_IDS[i].name for i in sorted(readable) if i in TEMPLATE_IDS)
        raise EdgeError(f"the server does not read {TEMPLATE_IDS[crop_template_id].name} crops; it reads {names}: "
                        f"pass --crop-template {names.split(', ')[0]} (or update the server)")
    ids = {m.model_id: m.name for m in info.models}
    if model_id not in ids:
        raise EdgeError(f"the server does not have this edge's codec model {model_id}; it serves "
                        f"{', '.join(f'{m.name} ({m.model_id})' for m in info.models)}")


def _result_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=0, help="best gallery matches per result (default: the server's)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def check_rate_options(args) -> None:
    """``--quality`` and ``--max-bytes`` need a variable-rate model: a clear error naming the ones this device has."""
    if args.quality is None and args.max_bytes is None:
        return
    if args.max_bytes is not None and args.max_bytes <= 0:
        raise EdgeError(f"--max-bytes must be a positive number of bytes, got {args.max_bytes}")
    from facelink.shared import registry

    bundle = registry.load(args.model)
    if bundle.tables.variable_rate:
        return
    variable = [name for name in registry.available() if registry.load(name).tables.variable_rate]
    option = "--quality" if args.quality is not None else "--max-bytes"
    here = f"variable-rate models here: {', '.join(variable)}" if variable else "none is installed on this device"
    raise EdgeError(f"{option} needs a variable-rate model (--model); {bundle.name} is a rate point with one quality "
                    f"({here})")


def _pipeline(args):
    from facelink.edge.encoder import EdgePipeline
    from facelink.shared.alignment import ARCFACE_112
    from facelink.shared.roi import BackgroundBlur

    if args.blur_background is not None and not args.full_frame:
        raise EdgeError("--blur-background needs --full-frame (a face crop is all face)")
    if args.crop_template is not None and args.full_frame:
        raise EdgeError("--crop-template applies to face crops, not --full-frame")
    blur = None if args.blur_background is None else BackgroundBlur(sigma=args.blur_background)
    check_rate_options(args)
    return EdgePipeline(args.model, full_frame=args.full_frame, threads=args.threads, blur_background=blur,
                        format_version=args.format_version, crop_template=args.crop_template or ARCFACE_112.name,
                        quality=args.quality, max_bytes=args.max_bytes)


class _Printer:
    """Rows to stdout: a table, or JSON lines."""

    def __init__(self, as_json: bool, columns: list[tuple[str, str, Callable[[dict], object]]]):
        self.as_json = as_json
        self.columns = columns
        if not self.as_json:
            print(" ".join(_fit(title, fmt) for title, fmt, _ in columns), flush=True)

    def __call__(self, row: dict) -> None:
        if self.as_json:
            print(json.dumps(row), flush=True)
        else:
            print(" ".join(_fit(str(fn(row)), fmt) for _, fmt, fn in self.columns), flush=True)


def _fit(text: str, fmt: str) -> str:
    """``text`` in a column: ``fmt`` is '<N' or '>N'."""
    width = int(fmt[1:])
    return f"{text[:width]:{fmt[0]}{width}}"


def _answer_fields(resp) -> dict:
    """A RecognizeResponse as row fields: the recognition, or ``error`` with its code and message."""
    from facelink.v1 import facelink_pb2 as pb

    if resp.WhichOneof("outcome") == "error":
        return {"error": {"code": pb.Error.Code.Name(resp.error.code), "message": resp.error.message}}
    r = resp.result
    return {"face_found": r.face_found, "identity": r.identity or None, "similarity": round(r.similarity, 4),
            "decode_ms": round(r.decode_ms, 1), "recognize_ms": round(r.recognize_ms, 1),
            "matches": [{"identity": m.identity, "similarity": round(m.similarity, 4)} for m in r.matches]}


def _shown(row: dict) -> str:
    if "error" in row:
        return f"ERROR {row['error']['code']}"
    if "face_found" not in row:
        return "(not sent)"
    return row.get("identity") or ("(no face)" if not row.get("face_found") else "(unknown)")


def _sim(row: dict) -> str:
    return f"{row['similarity']:.3f}" if "similarity" in row else ""


# ----------------------------------------------------------------------------------------------------------------
# encode
# ----------------------------------------------------------------------------------------------------------------
def _encode_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="the image file (JPEG, PNG, BMP, WebP, TIFF, PPM/PGM)")
    p.add_argument("-o", "--output", help="output file (default: IMAGE with suffix .flk)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    _max_pixels_option(p)
    _model_options(p)


def cmd_encode(args) -> int:
    import cv2

    from facelink.edge.sources import read_image
    from facelink.shared import bitstream

    src = Path(args.image)
    rgb = cv2.cvtColor(read_image(src, args.max_pixels), cv2.COLOR_BGR2RGB)
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
                      "width": enc.width, "height": enc.height,
                      "mode": "full-frame" if args.full_frame else "face-crop",
                      "crop_template": None if pipe.cropper is None else pipe.cropper.template.name,
                      "background_blur": args.blur_background,
                      "model": pipe.encoder.bundle.name, "model_id": pipe.encoder.model_id,
                      "format_version": pipe.encoder.format_version,
                      "codec_quality": bitstream.unpack(enc.data).quality if pipe.encoder.variable_rate else None,
                      "encode_ms": round(ms, 2)}))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# stream
# ----------------------------------------------------------------------------------------------------------------
def _stream_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    _server_options(p, 30.0)
    _result_options(p)
    _max_pixels_option(p)
    _model_options(p)


STREAM_COLUMNS = [("file", "<40", lambda r: Path(r["file"]).name), ("bytes", ">6", lambda r: r["bytes"]),
                  ("bpp", ">6", lambda r: f"{r['bpp']:.3f}"), ("identity", "<24", _shown), ("sim", ">6", _sim),
                  ("ms", ">7", lambda r: f"{r.get('latency_ms', 0):.1f}")]


def cmd_stream(args) -> int:
    """Every image's most prominent face (or whole frame), in order, on one stream; results printed as they come
    back. Not durable (no outbox): for a camera or anything that must arrive exactly once, use run or send."""
    import cv2
    import grpc

    from facelink.edge.client import request
    from facelink.edge.rate_control import BudgetError
    from facelink.edge.sources import list_images, read_image
    from facelink.shared.alignment import template_id

    files = list_images(args.paths)
    pipe = _pipeline(args)
    printer = _Printer(args.json, STREAM_COLUMNS)
    sent: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    coded = [0]

    def requests():
        for i, f in enumerate(files):
            coded[0] = i + 1
            t0 = time.perf_counter()
            try:
                enc = pipe.process(cv2.cvtColor(read_image(f, args.max_pixels), cv2.COLOR_BGR2RGB))
            except EdgeError as e:
                skipped.append((str(f), str(e).removeprefix(f"{f}: ")))
                continue
            except BudgetError as e:  # --max-bytes: not even the lowest quality fits
                skipped.append((str(f), str(e)))
                continue
            if enc is None:
                skipped.append((str(f), "no face found"))
                continue
            rid = str(i)
            sent[rid] = {"file": str(f), "bytes": len(enc.data), "bpp": round(enc.bpp, 4),
                         "encode_ms": (time.perf_counter() - t0) * 1e3, "t_send": time.perf_counter()}
            yield request(rid, enc.data, source=f.name, top_k=args.top_k)

    answered = 0
    failure = None
    client = _connect(args)
    with client:
        _wait_for_server(client, args)
        check_server_model(client, pipe.encoder.model_id, pipe.encoder.format_version,
                           0 if pipe.cropper is None else template_id(pipe.cropper.template))
        try:
            for resp in client.recognize_stream(requests()):
                s = sent.pop(resp.id)
                latency = (time.perf_counter() - s.pop("t_send")) * 1e3 + s["encode_ms"]
                printer({"id": resp.id, **s, "encode_ms": round(s["encode_ms"], 1), "latency_ms": round(latency, 1),
                         **_answer_fields(resp)})
                answered += 1
        except grpc.RpcError as e:
            failure = f"{e.code().name}: {e.details()}"
    for f, why in skipped:
        print(json.dumps({"file": f, "skipped": why}) if args.json else f"skipped {f}: {why}", flush=True)
    if failure is None:
        return 0 if answered else 1
    # the files whose crops were on the wire unanswered, and those never coded, by name
    unsent = [s["file"] for s in sent.values()] + [str(f) for f in files[coded[0]:]]
    for f in unsent:
        print(json.dumps({"file": f, "not_answered": True}) if args.json else f"not answered {f}", flush=True)
    print(f"facelink-edge: the stream to {args.server} failed ({failure}) after {answered} answers; {len(unsent)} "
          "files not answered (listed above; facelink-edge run and send deliver through an outbox and resume)",
          file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------------------------
def _run_parser(p: argparse.ArgumentParser) -> None:
    from facelink.edge.runner import DEFAULT_DETECT_WIDTH
    from facelink.edge.sender import add_outbox_arguments
    from facelink.edge.sources import DEFAULT_FOLDER_FPS
    from facelink.edge.tracking import SelectionPolicy

    policy = SelectionPolicy()
    p.add_argument("source", help="a camera index (0), a video file, a stream URL (rtsp://..., http://...), a folder "
                                  "of frames (name order; for unrelated photographs add --every-face, or the tracker "
                                  "may take two people in consecutive images for one) or one image")
    p.add_argument("--max-fps", type=float, metavar="FPS",
                   help="process at most FPS frames per second of the source's time (default: every frame)")
    p.add_argument("--folder-fps", type=float, default=DEFAULT_FOLDER_FPS, metavar="FPS",
                   help="a folder's images are frames at this rate, for tracking times (default %(default)s)")
    p.add_argument("--detect-width", type=int, default=DEFAULT_DETECT_WIDTH, metavar="PIXELS",
                   help="look for faces in the frame shrunk to this width (0: full size; default %(default)s): "
                        "detection time grows with the pixels, and the smallest face found shrinks with them (in a "
                        "640-wide frame about 32 pixels wide at 320, 16 at full size); crops are still cut from the "
                        "full frame")
    p.add_argument("--every-face", action="store_true",
                   help="no tracking: send every face of every frame (the baseline tracking saves against)")
    p.add_argument("--settle", type=float, default=policy.settle_s, metavar="SECONDS",
                   help="a new track's best crop is sent once it has been seen this long (default %(default)s)")
    p.add_argument("--resend-interval", type=float, default=policy.resend_interval_s, metavar="SECONDS",
                   help="send a track's best crop again after this long (default %(default)s; 0: only when a "
                        "clearly better one appears)")
    p.add_argument("--better-margin", type=float, default=policy.better_margin, metavar="SCORE",
                   help="a crop scoring this much above the best sent for its track is sent at once "
                        "(scores 0-1: size x sharpness x frontal pose; default %(default)s)")
    p.add_argument("--min-quality", type=float, default=policy.min_score, metavar="SCORE",
                   help="never send crops scoring below this (default %(default)s)")
    p.add_argument("--offline", action="store_true",
                   help="no server and no outbox: detect, track, select and code the crops, print them and report "
                        "what would be sent")
    p.add_argument("--report", type=Path, metavar="FILE", help="also write the final report to FILE (JSON)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="at the end (or on SIGINT/SIGTERM) wait this long for the answers still owed; what is "
                        "unanswered stays in the outbox for the next start (default %(default)s)")
    _server_options(p, 5.0, "seconds to wait at the start for the server, to check that it reads this edge's crops "
                            "(one that does not answer yet is no error: the crops wait in the outbox)")
    add_outbox_arguments(p)
    _max_pixels_option(p)
    _model_options(p, full_frame=False)


def cmd_run(args) -> int:
    """Frames in, tracked and selected crops out through the outbox; a report at the end (see edge/runner.py)."""
    import cv2

    from facelink.edge.encoder import EdgeEncoder
    from facelink.edge.runner import EdgeRun, ScaledDetector
    from facelink.edge.sender import Backoff, ResultSink, Sender, connection_from_args
    from facelink.edge.sources import open_source
    from facelink.edge.tracking import CropSelector, SelectionPolicy
    from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES, template_id

    cv2.setNumThreads(args.threads)
    if args.detect_width < 0:
        raise EdgeError(f"--detect-width must be >= 0, got {args.detect_width}")
    try:
        policy = SelectionPolicy(args.settle, args.resend_interval, args.better_margin, args.min_quality)
    except ValueError as e:
        raise EdgeError(str(e)) from None
    source = open_source(args.source, max_fps=args.max_fps, max_pixels=args.max_pixels, folder_fps=args.folder_fps)
    template = CROP_TEMPLATES[args.crop_template or ARCFACE_112.name]
    check_rate_options(args)
    encoder = EdgeEncoder(args.model, args.threads, args.format_version, args.quality)
    sink = ResultSink(args.results)
    outbox = sender = None
    if not args.offline:
        from facelink.edge.outbox import Outbox

        connection = connection_from_args(args)
        _check_if_reachable(connection, args, encoder.model_id, encoder.format_version, template_id(template))
        outbox = Outbox(args.outbox, device=args.device, max_frames=args.max_outbox_frames,
                        max_bytes=args.max_outbox_bytes)
        sender = Sender(outbox, connection.client, sink, window=args.window, backoff=Backoff(cap=args.backoff_max),
                        ack_timeout=args.ack_timeout, top_k=args.top_k).start()

    def printed(row):
        with sink.lock:
            sink.write(row)

    loop = EdgeRun(encoder, template, None if args.every_face else CropSelector(policy), sender,
                   ScaledDetector(args.detect_width), on_sent=printed if args.offline else None,
                   max_bytes=args.max_bytes)
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum, _frame):
        if stopped_by:  # a second signal: stop waiting for answers (what is unanswered stays in the outbox)
            raise KeyboardInterrupt
        stopped_by.append(signal.Signals(signum).name)
        stop.set()
        print(json.dumps({"event": "stopping", "signal": stopped_by[0]}), file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    failure = report = None
    try:
        report = loop.run(source, stop)
        if sender is not None:
            try:
                stats = sender.finish(args.drain_timeout)
            except KeyboardInterrupt:
                stats = sender.stop()
            report["delivery"] = dict(stats.__dict__, outbox=outbox.stats().as_dict(), device_id=outbox.device_id)
    except Exception as e:
        delivery_error = getattr(sys.modules.get("facelink.edge.sender"), "DeliveryError", ())
        if not isinstance(e, delivery_error):
            raise
        failure = str(e)  # the sender gave up (the server refuses this client): what was queued stays queued
        report = report or loop.stats.report(loop.selector, source, 0.0)
        report["delivery"] = {"outbox": outbox.stats().as_dict(), "device_id": outbox.device_id}
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sink.close()
        if outbox is not None:
            outbox.close()
    report["stopped_by"] = stopped_by[0] if stopped_by else ("delivery failure" if failure else "end of source")
    if failure:
        report["failure"] = failure
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"event": "report", **report}), file=sys.stderr, flush=True)
    if failure:
        raise EdgeError(failure)
    waiting = report.get("delivery", {}).get("outbox", {}).get("frames", 0)
    return 0 if waiting == 0 else 1  # 1: crops still wait in the outbox (the next start sends them)


def _check_if_reachable(connection, args, model_id: str, format_version: int, crop_template_id: int) -> None:
    """A server that answers within --timeout must read this edge's containers (else a clear error now, not a
    stream of refusals later); one that does not answer yet is no error: the crops wait in the outbox."""
    import grpc

    client = connection.client(args.timeout)
    try:
        try:
            client.wait_ready(args.timeout)
        except grpc.FutureTimeoutError:
            print(json.dumps({"event": "server_unreachable", "server": args.server, "waited_s": args.timeout,
                              "note": "crops wait in the outbox until it answers"}), file=sys.stderr, flush=True)
            return
        check_server_model(client, model_id, format_version, crop_template_id)
    finally:
        client.close()


# ----------------------------------------------------------------------------------------------------------------
# info, models
# ----------------------------------------------------------------------------------------------------------------
def _info_parser(p: argparse.ArgumentParser) -> None:
    _server_options(p, 10.0)
    p.add_argument("--model", help="the rate point whose bitstream is checked against the server's models "
                                   "(default: the registry's default)")


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
    from google.protobuf.json_format import MessageToDict

    from facelink.shared import registry

    with _connect(args) as client:
        _wait_for_server(client, args)
        info = MessageToDict(client.model_info(), preserving_proto_field_name=True)
    info["edge_model"] = edge_model_status(registry.load(args.model), info.get("models", []))
    print(json.dumps(info, indent=2))
    return 0 if info["edge_model"]["served"] else 3


def _models_parser(p: argparse.ArgumentParser) -> None:
    pass


def _rate_words(manifest: dict) -> str:
    """A rate point's λ; a variable-rate model's quality range, default quality and λ range."""
    from facelink.shared import registry

    qr = registry.quality_range(manifest)
    if qr is None:
        return f"λ={manifest['training']['lambda']}"
    lambdas = qr.lambdas.values()
    span = f" λ={min(lambdas):g}–{max(lambdas):g}" if lambdas else ""
    return f"quality 0–{qr.top} (default {qr.default:g}){span}"


def cmd_models(args) -> int:
    from facelink.shared import registry

    bundles = [registry.load(name) for name in registry.available()]
    by_id = registry.names_by_model_id(bundles)
    for b in bundles:
        default = " (default)" if b.name == registry.DEFAULT_MODEL else ""
        # Same encoder and tables, another decoder (a refined one, or another precision): the same bitstream.
        shared = [n for n in by_id[b.model_id] if n != b.name]
        same = f"\tsame bitstream as {', '.join(shared)}" if shared else ""
        print(f"{b.name}\t{b.model_id}\t{b.manifest['architecture']}\t{_rate_words(b.manifest)}{default}{same}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# The command table
# ----------------------------------------------------------------------------------------------------------------
# name -> (options, code, one-line help). A command's options are added only when it runs (they import its modules).
# send's options and code live with the delivery path: (None, None, help) loads them from facelink.edge.sender.
COMMANDS = {
    "run": (_run_parser, cmd_run, "frames from a camera, video, stream, folder or image: track faces, send the best "
                                  "crop of each through the outbox"),
    "encode": (_encode_parser, cmd_encode, "code one image into a .flk bitstream"),
    "send": (None, None, "deliver coded crops (.flk) through the outbox, exactly once, resuming after restarts"),
    "stream": (_stream_parser, cmd_stream, "stream images to a server and print results as they come back "
                                           "(no outbox)"),
    "info": (_info_parser, cmd_info, "the server's models and recognizer"),
    "models": (_models_parser, cmd_models, "rate points available on this device"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the commands by name, with no options of theirs (those load with the command)."""
    ap = argparse.ArgumentParser(prog="facelink-edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="'facelink-edge COMMAND --help' describes a command's options.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return ap


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one command (this imports the modules its options name)."""
    options, code, text = COMMANDS[name]
    if options is None:
        from facelink.edge.sender import add_send_parser

        return add_send_parser(argparse.ArgumentParser(prog="facelink-edge").add_subparsers())
    p = argparse.ArgumentParser(prog=f"facelink-edge {name}", description=text[:1].upper() + text[1:] + ".")
    options(p)
    p.set_defaults(func=code)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        try:
            build_parser().parse_args(argv[:1] or ["--help"])
        except SystemExit as e:
            return 0 if argv and e.code == 0 else 2
        return 2
    args = command_parser(argv[0]).parse_args(argv[1:])
    try:
        return args.func(args)
    except (EdgeError, ValueError) as e:  # OutboxError is a ValueError
        print(f"facelink-edge: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        known = [getattr(sys.modules.get(m), a, None) for m, a in (("facelink.shared.registry", "UnknownModelError"),
                                                                  ("facelink.edge.sender", "DeliveryError"))]
        if any(k is not None and isinstance(e, k) for k in known):
            print(f"facelink-edge: {e}", file=sys.stderr)
            return 2
        grpc = sys.modules.get("grpc")
        if grpc is not None and isinstance(e, grpc.RpcError):
            print(f"facelink-edge: server error {e.code().name}: {e.details()}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
