"""Where the server's CPU goes per frame: each stage of recognising an aligned crop, timed alone in this process on
the server's own objects, CPU time (user + system of this process) per frame, median over the crops.

  python -m facelink.benchmarks.serve_stages [--crops 64] [--out benchmarks/results/serve_stages.json]

Stages, in the server's order: container parse; entropy decoding (rANS, and the integer hyper-synthesis that gives
the entropy parameters), with the native rANS core and with the pure-Python one; synthesis ``g_s`` at batch 1 and
at the server's micro-batch (default layout and channels_last); alignment (a warp to the recognizer's template);
the recognizer at batch 1 and at the micro-batch; the frozen TorchScript graphs the server runs (g_s in
channels_last, the recognizer) beside the same networks eager, layer by layer; the gallery match (SQLite, a few
identities). Torch and numpy's BLAS run on one thread, as the server runs them by default. What this leaves out
(gRPC, protobuf, asyncio and the hand-offs between threads) is the server's CPU per frame (``facelink bench
serve``) minus the sum of these.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.shared.registry import DEFAULT_MODEL

DEFAULT_OUT = Path("benchmarks/results/serve_stages.json")


def _per_item_ms(fn, items, batch: int = 1, repeats: int = 3) -> float:
    """Median CPU ms per item of ``fn(chunk)`` over ``items`` in chunks of ``batch`` (after one warm-up call)."""
    chunks = [items[i: i + batch] for i in range(0, len(items) - batch + 1, batch)] or [items[:batch]]
    fn(chunks[0])
    times = []
    for _ in range(repeats):
        for chunk in chunks:
            c0 = time.process_time()
            fn(chunk)
            times.append((time.process_time() - c0) * 1e3 / len(chunk))
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.serve_stages",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=64, help="distinct coded crops timed (default 64)")
    ap.add_argument("--batch", type=int, default=8, help="the micro-batch size timed beside batch 1 (default 8)")
    ap.add_argument("--note", default="", help="how the machine was when this ran (kept in the result)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON (default %(default)s)")
    args = ap.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from facelink.benchmarks.serve_load import crops
    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.cloud.serving.gallery import Gallery
    from facelink.cloud.serving.recognizers import MobileFaceNetRecognizer, get_recognizer
    from facelink.shared import bitstream, codec, rans
    from facelink.shared.alignment import TEMPLATE_IDS, align

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    frames, _ = crops(args.crops)
    parsed = [bitstream.unpack(d) for d in frames]
    recognizer = get_recognizer("mobilefacenet", "cpu")
    stages: dict[str, float] = {}
    stages["parse"] = _per_item_ms(lambda c: [bitstream.unpack(d) for d in c], frames)
    for layout, channels_last in (("", False), (" channels_last", True)):
        decoder = CloudDecoder([DEFAULT_MODEL], device="cpu", channels_last=channels_last)
        bundle = next(iter(decoder.bundles.values()))
        synthesis = decoder.synthesis(bundle.model_id)
        tables = bundle.tables
        if not channels_last:
            original = rans.BACKEND
            for backend in ("native", "python") if original == "native" else ("python",):
                rans.set_backend(backend)
                stages[f"entropy decoding ({backend} rANS)"] = _per_item_ms(
                    lambda c, t=tables: [codec.decompress_latents(t, f) for f in c], parsed)
            rans.set_backend(original)
            symbols = [codec.decode_symbols(tables, f) for f in parsed]
            stages["  of which the integer hyper-synthesis"] = _per_item_ms(
                lambda c, t=tables: [t.entropy_parameters(s.z) for s in c], symbols)
        latents = [s.y_hat for s in symbols]
        for b in (1, args.batch):
            stages[f"synthesis g_s, batch {b}{layout}"] = _per_item_ms(
                lambda c, g=synthesis: g.batch(c, [None] * len(c)), latents, b)
        if synthesis.frozen:  # the server's frozen graph (above) against the same g_s layer by layer
            frozen_g_s, synthesis.run_g_s = synthesis.run_g_s, synthesis.g_s
            stages[f"synthesis g_s, batch {args.batch}{layout}, eager"] = _per_item_ms(
                lambda c, g=synthesis: g.batch(c, [None] * len(c)), latents, args.batch)
            synthesis.run_g_s = frozen_g_s
    images = [synthesis(y)[0][: f.height, : f.width] for y, f in zip(latents, parsed)]
    template = TEMPLATE_IDS[parsed[0].template_id]
    stages["alignment"] = _per_item_ms(lambda c: [align(im, template.points, recognizer.template) for im in c], images)
    aligned = [align(im, template.points, recognizer.template) for im in images]
    eager = MobileFaceNetRecognizer("cpu", frozen=False)
    for b in (1, args.batch):
        stages[f"recognizer, batch {b}"] = _per_item_ms(lambda c: recognizer.embed(np.stack(c)), aligned, b)
        stages[f"recognizer, batch {b}, eager"] = _per_item_ms(lambda c: eager.embed(np.stack(c)), aligned, b)
    embeddings = list(recognizer.embed(np.stack(aligned)))
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery(str(Path(tmp) / "g.db"), recognizer.name)
        for k, e in enumerate(embeddings[:8]):
            gallery.enroll(f"Person {chr(65 + k)}", e)
        stages["gallery match (8 identities, SQLite)"] = _per_item_ms(lambda c: [gallery.match(e) for e in c],
                                                                       embeddings)
        gallery.close()
    for name, ms in stages.items():
        print(f"{name:45s} {ms:7.2f} ms", file=sys.stderr)
    doc = stamp({"command": "python -m facelink.benchmarks.serve_stages " + " ".join(
        argv if argv is not None else sys.argv[1:]), "unit": "CPU ms per frame (median over crops)",
        "model": DEFAULT_MODEL, "recognizer": recognizer.name, "crops": args.crops, "threads": 1,
        "rans_backend": rans.BACKEND, "stages_cpu_ms": stages, **({"note": args.note} if args.note else {})})
    emit_json(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
