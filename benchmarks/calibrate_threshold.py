"""Calibrate the server's match threshold: the cosine similarity that best separates same-person from
different-person pairs in the deployed setting (gallery photograph uncompressed; probe coded by the edge as an
aligned face crop and decoded by the cloud), with the server's recognizer and no flip averaging.

Pairs are drawn (fixed seed) from LFW images that LFW View 2 never references, so no benchmark image is used.

  facelink bench calibrate-threshold [--pairs 600] [--model NAME] [--out benchmarks/results/threshold.json]
"""
from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facelink.cloud.evaluation.provenance import emit_json, stamp


def sample_pairs(n_per_class: int, seed: int, assets=None):
    from facelink.cloud.training import datasets

    by_person = defaultdict(list)
    for im in datasets.lfw_train_images(assets):
        by_person[im.identity].append(im.path)
    rng = random.Random(seed)
    multi = sorted(p for p, ims in by_person.items() if len(ims) >= 2)
    people = sorted(by_person)
    matched, mismatched = set(), set()
    while len(matched) < n_per_class:
        p = rng.choice(multi)
        a, b = rng.sample(by_person[p], 2)
        matched.add((a, b))
    while len(mismatched) < n_per_class:
        p, q = rng.sample(people, 2)
        mismatched.add((rng.choice(by_person[p]), rng.choice(by_person[q])))
    return [(a, b, True) for a, b in sorted(matched)] + [(a, b, False) for a, b in sorted(mismatched)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench calibrate-threshold", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=600, help="pairs per class")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pair sampling (default 0)")
    ap.add_argument("--model", help="codec rate point from the registry (default: the shipped default)")
    ap.add_argument("--recognizer", default="mobilefacenet", help="the server's recognizer (default %(default)s)")
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--out", type=Path, help="result JSON (with provenance)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from facelink.cloud.evaluation.codec import LearnedCodec
    from facelink.cloud.evaluation.verification import best_threshold
    from facelink.cloud.serving.recognizers import get_recognizer
    from facelink.edge.encoder import FaceCropper
    from facelink.shared.alignment import align

    rec = get_recognizer(args.recognizer)
    cropper = FaceCropper()
    codec = LearnedCodec(args.model)
    pairs = sample_pairs(args.pairs, args.seed, args.assets)
    gallery, probe, no_face = {}, {}, 0

    def rgb(p):
        return cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)

    scores, labels = [], []
    for a, b, same in tqdm(pairs, desc="pairs", unit="pair"):
        if a not in gallery:
            found = cropper.detector.largest(rgb(a), rgb=True)
            gallery[a] = None if found is None else rec.embed(align(rgb(a), found.landmarks, rec.template)[None])[0]
        if b not in probe:
            found = cropper.crop(rgb(b))
            if found is None:
                probe[b] = None
            else:
                decoded = codec.decode(codec.encoder.encode(found[0], cropper.template))
                probe[b] = rec.embed(align(decoded, cropper.template.points, rec.template)[None])[0]
        if gallery[a] is None or probe[b] is None:
            no_face += 1
            continue
        scores.append(float(gallery[a] @ probe[b]))
        labels.append(same)
    thr, acc = best_threshold(np.array(scores), np.array(labels))
    s, y = np.array(scores), np.array(labels)
    result = {"command": "facelink bench calibrate-threshold " + " ".join(argv or []), "recognizer": rec.name,
              "model": codec.name, "model_id": codec.model_id,
              **({"quality": codec.encoder.quality} if codec.encoder.quality is not None else {}),
              "pairs_scored": len(scores),
              "pairs_without_face": no_face, "threshold": round(thr, 4), "accuracy_at_threshold": round(acc, 4),
              "same_person_similarity_median": float(np.median(s[y])),
              "different_person_similarity_median": float(np.median(s[~y])),
              "pairs": f"LFW images outside View 2, seed {args.seed}, {args.pairs} per class"}
    emit_json(stamp(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
