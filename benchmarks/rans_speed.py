"""Entropy coding time per face and entropy decoding time per frame, native rANS core against pure Python, one run.

  facelink bench rans-speed [--faces 100] [--repeats 3] [--model NAME] [--out benchmarks/results/rans_speed.json]

LFW photographs outside View 2 (sorted, every k-th, so every run takes the same ones) are cropped as the edge crops
them (YuNet, aligned to the 112×112 template) and analysed once by the model's ONNX encoder (not timed). Then, per
face, each backend in turn (alternating which goes first, ``--repeats`` times, the fastest kept), one thread:

- ``entropy_per_face``: what the edge does after the analysis transform (``codec.encode_latents``, integer
  hyper-synthesis included, and ``bitstream.pack``): the "entropy" stage of ``facelink bench edge-pipeline``;
- ``rans_encode_per_face``: the rANS encoder alone (``rans.encode_parts`` on the same symbols);
- ``decode_per_frame``: what the server does before synthesis (``bitstream.unpack`` and ``codec.decode_symbols``,
  hyper-synthesis included);
- ``rans_decode_per_frame``: the rANS decoder alone (``StreamDecoder`` over the same stream's parts);

and, once per face (the same code whichever backend codes), ``hyper_synthesis_per_face``: the integer
hyper-synthesis (``tables.entropy_parameters``) that both the edge's and the server's stage above include.

Both backends must write the same bytes and read back the same symbols; the result says so. Reports medians and
99th percentiles in ms and the median ratio python/native of each stage.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from facelink.benchmarks.metrics import timing_stats
from facelink.cloud.evaluation.provenance import emit_json, stamp

BACKENDS = ("native", "python")
STAGES = ("entropy_per_face", "rans_encode_per_face", "decode_per_frame", "rans_decode_per_frame")


def edge_crops(n: int, assets=None) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``n`` 112×112 RGB crops as the edge makes them, from LFW images outside View 2, and their file names."""
    import cv2

    from facelink.cloud.training import datasets
    from facelink.edge.encoder import FaceCropper

    images = sorted(im.path for im in datasets.lfw_train_images(assets))
    step = max(1, len(images) // max(1, 2 * n))
    cropper = FaceCropper()
    crops, names = [], []
    for path in images[::step]:
        if len(crops) == n:
            break
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        found = cropper.crop(np.ascontiguousarray(bgr[:, :, ::-1]))
        if found is not None:
            crops.append(np.ascontiguousarray(found[0]))
            names.append(path.name)
    return crops, names


def _best_ms(fn, repeats: int):
    """The fastest of ``repeats`` calls in ms, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench rans-speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=100, help="LFW face crops timed (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per face and backend, fastest kept (default "
                    "%(default)s)")
    ap.add_argument("--model", help="codec rate point from the registry (default: the shipped default)")
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--out", type=Path, help="result JSON (with provenance)")
    args = ap.parse_args(argv)
    if args.faces < 1 or args.repeats < 1:
        ap.error("--faces and --repeats must be at least 1")

    import cv2

    from facelink.edge.encoder import EdgeEncoder
    from facelink.shared import bitstream, codec, rans
    from facelink.shared.alignment import ARCFACE_112, template_id

    if rans.BACKEND != "native":
        ap.error("the native rANS core is not in use (not built, or FACELINK_PURE_RANS is set): nothing to compare")
    cv2.setNumThreads(1)
    load_before = os.getloadavg()[0]
    enc = EdgeEncoder(args.model, threads=1)
    tables, tmpl, tid = enc.bundle.tables, ARCFACE_112, template_id(ARCFACE_112)
    crops, names = edge_crops(args.faces, args.assets)
    latents = [enc.analyse(c) for c in crops]

    def entropy(y, z):
        streams, _ = codec.encode_latents(tables, y, z, tmpl.height, tmpl.width, enc.format_version)
        return bitstream.pack(bitstream.Frame(enc.model_id, tmpl.height, tmpl.width, streams, tid,
                                              enc.format_version))

    times = {b: {s: [] for s in STAGES} for b in BACKENDS}
    identical, sizes, symbols, hyper = True, [], [], []
    for i, (y, z) in enumerate(latents):
        z_sym = codec.quantize_z(tables, z)
        hyper.append(_best_ms(lambda z_sym=z_sym: tables.entropy_parameters(z_sym), args.repeats)[0])
        data, syms = None, None
        for b in (BACKENDS if i % 2 == 0 else BACKENDS[::-1]):
            rans.set_backend(b)
            ms, packed = _best_ms(lambda y=y, z=z: entropy(y, z), args.repeats)
            times[b]["entropy_per_face"].append(ms)
            frame = bitstream.unpack(packed)
            decoded = codec.decode_symbols(tables, frame)
            parts = _parts(tables, decoded)
            ms, coded = _best_ms(lambda parts=parts: _encode(rans, parts, enc.format_version), args.repeats)
            times[b]["rans_encode_per_face"].append(ms)
            ms, decoded = _best_ms(lambda packed=packed: codec.decode_symbols(tables, bitstream.unpack(packed)),
                                   args.repeats)
            times[b]["decode_per_frame"].append(ms)
            ms, _ = _best_ms(lambda coded=coded, parts=parts: _decode(rans, coded, parts), args.repeats)
            times[b]["rans_decode_per_frame"].append(ms)
            if data is None:
                data, syms = packed, decoded
            identical &= packed == data and np.array_equal(decoded.y, syms.y) and np.array_equal(decoded.z, syms.z)
        sizes.append(len(data))
        symbols.append(sum(len(p[0]) for p in _parts(tables, syms)))
    rans.set_backend("native")

    stats = {b: {s: timing_stats(v) for s, v in times[b].items()} for b in BACKENDS}
    ratios = {s: round(stats["python"][s]["median"] / stats["native"][s]["median"], 1) for s in STAGES}
    doc = {
        "command": "facelink bench rans-speed " + " ".join(argv if argv is not None else []),
        "model": enc.bundle.name,
        "faces": len(crops),
        "repeats": args.repeats,
        "format_version": enc.format_version,
        "threads": 1,
        # the machine's other work inflates absolute times (the ratios are of one run); a quiet run shows ~0-1
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "container_bytes_median": float(np.median(sizes)),
        "coded_symbols_per_face": int(np.median(symbols)),
        "backends_identical": bool(identical),
        "ms": stats,
        "median_ratio_python_over_native": ratios,
        "hyper_synthesis_per_face_ms": timing_stats(hyper),
        "face_files": names,
    }
    emit_json(stamp(doc), args.out)
    return 0 if identical else 1


def _parts(tables, decoded) -> list[tuple]:
    """The (symbols, indexes, tables...) runs a container codes: z, then the coded part of y."""
    from facelink.shared import codec

    ch, cw = decoded.coded_shape
    z_part = (decoded.z.reshape(-1), codec.z_indexes(decoded.z.shape), tables.z.cdfs, tables.z.cdf_lengths,
              tables.z.offsets)
    y_part = (decoded.y[:, :ch, :cw].reshape(-1), decoded.indexes[:, :ch, :cw].reshape(-1), tables.y.cdfs,
              tables.y.cdf_lengths, tables.y.offsets)
    return [z_part, y_part]


def _encode(rans, parts, version: int) -> list[bytes]:
    return [rans.encode_with_indexes(*p) for p in parts] if version == 1 else [rans.encode_parts(parts)]


def _decode(rans, streams: list[bytes], parts) -> list[np.ndarray]:
    decoders = [rans.StreamDecoder(s) for s in streams]
    out = [decoders[0].decode(parts[0][1], *parts[0][2:]), decoders[-1].decode(parts[1][1], *parts[1][2:])]
    for d in decoders:
        d.finish()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
