"""Edge encode time of core v2's candidate sizes against the shipped rate point: the edge's budget is 1.3× the
shipped rate point's time per face, so the variable-rate model's size is checked against it as well as against
its training steps per day.

    python -m facelink.benchmarks.core_v2_edge_speed [--sizes 128/192 96/160 64/128] [--repeats 5]
        [--out benchmarks/results/core-v2/edge_speed.json]

Each candidate is an untrained (random) variable-rate model exported as core v2 exports it (float16 ONNX encoder
with a gain input, tables, decoder); the encoders run on one thread, interleaved per face so that the ratios hold
on a shared machine. An untrained model's entropy-coded size is not a trained one's: the entropy coder's share of
the time is indicative only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.cloud.serving.variable_rate import VariableRateFaceCodec


def measure(sizes: list[tuple[int, ...]], reference: str | None = None, repeats: int = 5) -> dict:
    """Edge encode time per aligned 112×112 face crop (onnxruntime + entropy coder, one thread) of each candidate
    size (N/M, or N/M/N_analysis for a narrower analysis transform) against the ``reference`` rate point
    (default: the shipped default), interleaved in one run so that their ratio holds on a shared machine.
    Candidates are untrained (random) models exported as core v2 exports (float16 ONNX with a gain input), coded
    at their middle quality; the demo faces are the crops."""
    import tempfile

    import cv2

    from facelink.cloud.training.export_v2 import export
    from facelink.edge.encoder import EdgeEncoder, FaceCropper
    from facelink.shared.paths import DEMO_FACES_DIR

    cropper = FaceCropper()
    crops = []
    for f in sorted(DEMO_FACES_DIR.glob("*/*.jpg")):
        found = cropper.crop(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB))
        if found is not None:
            crops.append(found[0])
    encoders = {"reference": EdgeEncoder(reference)}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            n, m, na = (*size, size[0])[:3]
            torch.manual_seed(0)
            folder = export(VariableRateFaceCodec(n, m, N_analysis=na).eval(), f"probe-{n}-{m}-{na}", Path(tmp))
            encoders[f"{n}/{m}/{na}"] = EdgeEncoder(str(folder))
        times = {k: [] for k in encoders}
        sizes_b = {k: [] for k in encoders}
        for _ in range(repeats):
            for crop in crops:
                for k, enc in encoders.items():
                    t0 = time.perf_counter()
                    data = enc.encode(crop, cropper.template)
                    times[k].append(time.perf_counter() - t0)
                    sizes_b[k].append(len(data))
    ref = float(np.median(times["reference"]))
    out = {"reference": encoders["reference"].bundle.name, "crops": len(crops), "repeats": repeats,
           "median_ms": {k: round(1000 * float(np.median(v)), 2) for k, v in times.items()},
           "ratio_to_reference": {k: round(float(np.median(v)) / ref, 3) for k, v in times.items()},
           "mean_bytes": {k: round(float(np.mean(v)), 1) for k, v in sizes_b.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.core_v2_edge_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["128/192", "96/160", "64/128"], metavar="N/M[/NA]",
                    help="candidate sizes (default %(default)s)")
    ap.add_argument("--reference", help="rate point to compare with (default: the shipped default)")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the demo faces (default %(default)s)")
    ap.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    try:
        sizes = [tuple(int(v) for v in s.split("/")) for s in args.sizes]
        if any(len(t) not in (2, 3) for t in sizes):
            raise ValueError(args.sizes)
    except ValueError:
        print("core_v2_edge_speed: sizes are N/M or N/M/N_ANALYSIS, such as 128/192 or 128/192/64, got "
              + " ".join(args.sizes), file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    res = measure(sizes, args.reference, args.repeats)
    command = "python -m facelink.benchmarks.core_v2_edge_speed " + " ".join(sys.argv[1:] if argv is None else argv)
    emit_json(stamp({"command": command, **res}), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
