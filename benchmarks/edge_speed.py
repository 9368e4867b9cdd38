"""Edge encoding speed: facelink's edge path (onnxruntime + numpy entropy coder, one thread) against the same
model's torch ``compress()`` (CompressAI, one thread), on aligned 112×112 face crops, in one run.

  facelink bench edge-speed [--faces 200] [--model NAME] [--out benchmarks/results/edge_speed.json]

Faces are LFW images outside View 2 (the codec's training split is irrelevant here: only time and size are
measured). Reports median and mean milliseconds per face for each path, their ratio, and bytes per face.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facelink.cloud.evaluation.provenance import emit_json, stamp


def face_crops(n: int, assets=None) -> tuple[list[np.ndarray], list[str]]:
    from facelink.cloud.training import datasets
    from facelink.edge.encoder import FaceCropper

    cropper = FaceCropper()
    crops, names = [], []
    for im in datasets.lfw_train_images(assets):
        rgb = cv2.cvtColor(cv2.imread(str(im.path)), cv2.COLOR_BGR2RGB)
        found = cropper.crop(rgb)
        if found is not None:
            crops.append(found[0])
            names.append(im.path.name)
        if len(crops) == n:
            break
    return crops, names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench edge-speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=200, help="aligned LFW face crops timed (default %(default)s)")
    ap.add_argument("--model", help="codec rate point from the registry (default: the shipped default)")
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the faces (best pass is kept per face)")
    ap.add_argument("--out", type=Path, help="result JSON (with provenance)")
    args = ap.parse_args(argv)

    import torch

    from facelink.cloud.training.export import reference_model
    from facelink.edge.encoder import EdgeEncoder
    from facelink.shared import bitstream
    from facelink.shared.alignment import ARCFACE_112

    torch.set_num_threads(1)
    enc = EdgeEncoder(args.model, threads=1)
    model = reference_model(enc.bundle)
    crops, names = face_crops(args.faces, args.assets)
    tmpl = ARCFACE_112
    edge_ms = np.full(len(crops), np.inf)
    torch_ms = np.full(len(crops), np.inf)
    sizes, torch_sizes = [], []
    for rep in range(args.repeats):
        for i, crop in enumerate(tqdm(crops, desc=f"pass {rep + 1}/{args.repeats}", unit="face")):
            t0 = time.perf_counter()
            data = enc.encode(crop, tmpl)
            t1 = time.perf_counter()
            pb, pr = bitstream.padding_for(*crop.shape[:2])
            x = torch.from_numpy(np.pad(crop, ((0, pb), (0, pr), (0, 0)), mode="edge").transpose(2, 0, 1)[None]
                                 .astype(np.float32) / 255)
            t2 = time.perf_counter()
            with torch.no_grad():
                out = model.compress(x)
            t3 = time.perf_counter()
            edge_ms[i] = min(edge_ms[i], (t1 - t0) * 1e3)
            torch_ms[i] = min(torch_ms[i], (t3 - t2) * 1e3)
            if rep == 0:
                sizes.append(len(data))
                torch_sizes.append(sum(len(s[0]) for s in out["strings"]))
    result = {
        "command": "facelink bench edge-speed " + " ".join(argv or []),
        "model": enc.bundle.name, "model_id": enc.model_id, "faces": len(crops),
        "face_size": "112x112 aligned crop (ArcFace template), padded to 128x128",
        "threads": 1, "repeats": args.repeats,
        "edge_ms": {"median": float(np.median(edge_ms)), "mean": float(np.mean(edge_ms))},
        "torch_compress_ms": {"median": float(np.median(torch_ms)), "mean": float(np.mean(torch_ms))},
        "edge_over_torch_time_ratio": float(np.median(edge_ms) / np.median(torch_ms)),
        "bytes_per_face": {"mean": float(np.mean(sizes)), "median": float(np.median(sizes)),
                           "min": int(min(sizes)), "max": int(max(sizes))},
        "torch_compress_payload_bytes_mean": float(np.mean(torch_sizes)),
        "format_version": enc.format_version,
        "note": "edge bytes are the whole .flk container (header, CRC and, in version 1, lengths); in version 2 the "
                "crop's 7×7 latent is coded, not the padded 8×8; torch bytes are CompressAI's two payload strings of "
                "the padded 128×128 image without any container",
    }
    emit_json(stamp(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
