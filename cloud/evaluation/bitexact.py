"""Bit-exactness check: encode images by the edge path, decode by the cloud path, count any disagreement.

For every image: onnxruntime analysis + numpy entropy coder (edge) → container → container parsing + entropy
decoding with entropy parameters re-derived from the decoded hyper-latent (cloud). A mismatch is any decoded
symbol differing from what the edge coded, or any decode error. Results are written as JSON.

  facelink verify-bitexact --dataset lfw [--limit N] [--workers 2] [--out benchmarks/results/bitexact_lfw.json]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.cloud.training import datasets
from facelink.shared import bitstream, codec

_state: dict = {}


def _init(model: str | None) -> None:
    from threadpoolctl import threadpool_limits

    from facelink.edge.encoder import EdgeEncoder

    threadpool_limits(1)  # one BLAS thread per worker process (numpy was imported before this runs)

    _state["enc"] = EdgeEncoder(model, threads=1)


def check_image(path: str) -> dict:
    enc = _state["enc"]
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    if im is None:
        return {"file": path, "ok": False, "error": "unreadable image"}
    rgb = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
    data, sent = enc.encode_with_symbols(rgb)  # the edge path
    try:  # the cloud path, from the bytes alone
        got = codec.decode_symbols(enc.bundle.tables, bitstream.unpack(data))
    except bitstream.BitstreamError as e:
        return {"file": path, "ok": False, "error": str(e), "bytes": len(data)}
    ok = all(np.array_equal(getattr(got, f), getattr(sent, f)) for f in ("z", "indexes", "means", "y"))
    return {"file": path, "ok": bool(ok), "bytes": len(data), "pixels": rgb.shape[0] * rgb.shape[1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink verify-bitexact", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dataset",
        choices=["lfw", "celeba"],
        default="lfw",
        help="data set whose images are coded (default %(default)s)",
    )
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--model", help="codec rate point from the registry (default: the shipped default)")
    ap.add_argument("--limit", type=int, help="first N images only")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    ap.add_argument("--out", type=Path, help="result JSON (with provenance)")
    args = ap.parse_args(argv)
    if args.dataset == "lfw":
        files = [str(im.path) for im in datasets.lfw_all_images(args.assets)]
    else:
        files = [str(im.path) for im in datasets.celeba_images(args.assets)]
    files = files[: args.limit] if args.limit else files
    t0 = time.time()
    results = []
    with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(args.model,)) as pool:
        for r in tqdm(pool.imap(check_image, files, chunksize=8), total=len(files), desc="edge→cloud", unit="img"):
            results.append(r)
    seconds = time.time() - t0
    bad = [r for r in results if not r["ok"]]
    from facelink.shared import registry

    bundle = registry.load(args.model)
    summary = {
        "command": "facelink verify-bitexact " + " ".join(argv if argv is not None else []),
        "dataset": args.dataset,
        "images": len(results),
        "mismatches": len(bad),
        "mismatched_files": [r["file"] for r in bad][:100],
        "errors": [r.get("error") for r in bad][:100],
        "seconds": round(seconds, 1),
        "workers": args.workers,
        "model": bundle.name,
        "model_id": bundle.model_id,
        "mean_bytes": float(np.mean([r["bytes"] for r in results if "bytes" in r])),
        "mean_bpp": float(np.mean([8 * r["bytes"] / r["pixels"] for r in results if "pixels" in r])),
    }
    emit_json(stamp(summary), args.out)
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
