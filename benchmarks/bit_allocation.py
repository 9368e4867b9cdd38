"""Where a learned rate point spends its bits on full frames: the face region against the background.

  facelink bench bit-allocation --models face-iprf-q0 face-iprf-q3 [--images 100] [--blur-background]
                                [--qualities 0 3 6] [--out benchmarks/results/bit_allocation.json]

Each image (LFW, outside View 2) is coded exactly as the edge codes a full frame (onnxruntime encoder, the shared
entropy coder); every coded symbol's code length (:func:`facelink.shared.rans.symbol_bits`) is assigned to its
place in the frame: a y symbol to its 16×16 block, a z symbol to its 64×64 block. The face region is the edge's
(:class:`facelink.shared.roi.BackgroundBlur`'s mask around YuNet's landmarks: ArcFace rectangle grown 10 %,
feathered). Reported per model: bytes, the share of y bits inside the face region against the region's share of
the frame's area, and the share of the hyper-latent z. ``--blur-background`` codes the frames the edge's
``--blur-background`` makes instead.

A variable-rate model (core v2) is measured at each of ``--qualities`` (default its manifest's default quality).
Beside every frame the same face is coded as the edge's aligned crop (the face-crop mode, at the same quality):
``crop_bytes_mean`` against the frame's ``face_region_bytes_mean`` (the y bits inside the face region, the z bits
shared by area) tells how much of a full frame's cost is the face's larger size in the frame, and
``face_region_pixels_per_crop_pixel`` how much larger it is (the region's area against the crop's).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facelink.cloud.evaluation.provenance import emit_json, stamp
from facelink.shared import rans
from facelink.shared.codec import z_indexes
from facelink.shared.roi import BackgroundBlur
from facelink.shared.tables import Y_STRIDE


def frame_bits(encoder, rgb: np.ndarray, quality: float | None = None) -> tuple[np.ndarray, float, int]:
    """(bits of y per 16×16 block, total bits of z, container bytes) of one full frame, coded as the edge does
    (``quality``: a variable-rate model's)."""
    t = encoder.bundle.tables
    data, sym = encoder.encode_with_symbols(rgb, quality=quality)
    ch, cw = sym.coded_shape  # the container codes this part of the latent; the rest costs nothing
    y_bits = np.zeros(sym.y.shape)
    y_bits[:, :ch, :cw] = rans.symbol_bits(sym.y[:, :ch, :cw], sym.indexes[:, :ch, :cw], t.y.cdfs, t.y.cdf_lengths,
                                           t.y.offsets).reshape(-1, ch, cw)
    z_bits = rans.symbol_bits(sym.z, z_indexes(sym.z.shape), t.z.cdfs, t.z.cdf_lengths, t.z.offsets).sum()
    return y_bits.sum(axis=0), float(z_bits), len(data)


def block_means(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The mask (padded by edge replication as the frame is) averaged over each latent block."""
    h, w = shape[0] * Y_STRIDE, shape[1] * Y_STRIDE
    m = np.pad(mask, ((0, h - mask.shape[0]), (0, w - mask.shape[1])), mode="edge")
    return m.reshape(shape[0], Y_STRIDE, shape[1], Y_STRIDE).mean(axis=(1, 3))


def allocation(model: str, frames: list[tuple[np.ndarray, np.ndarray]], blur: BackgroundBlur | None,
               quality: float | None = None) -> dict:
    from facelink.edge.encoder import EdgeEncoder
    from facelink.shared.alignment import ARCFACE_112, align

    enc = EdgeEncoder(model)
    roi = blur or BackgroundBlur()
    y_total = y_face = z_total = area = 0.0
    sizes, crop_sizes = [], []
    for rgb, lm in tqdm(frames, desc=model if quality is None else f"{model} q{quality:g}", unit="img"):
        crop_sizes.append(len(enc.encode(align(rgb, lm, ARCFACE_112), ARCFACE_112, quality)))
        if blur is not None:
            rgb = blur.apply(rgb, [lm])
        y_map, z_bits, size = frame_bits(enc, rgb, quality)
        mask = roi.mask(*rgb.shape[:2], [lm])
        w = block_means(mask, y_map.shape)
        y_total += y_map.sum()
        y_face += (y_map * w).sum()
        z_total += z_bits
        area += mask.mean()
        sizes.append(size)
    n = len(frames)
    pixels = frames[0][0].shape[0] * frames[0][0].shape[1]
    face_share = y_face / y_total
    payload_bytes = (y_total + z_total) / 8 / n
    face_bytes = (y_face + z_total * area / n) / 8 / n  # z shared out by the region's mean share of the area
    out = {"model": model, "model_id": enc.model_id, "images": n}
    if quality is not None:
        out["quality"] = quality
    return {**out, "bytes_mean": float(np.mean(sizes)), "bpp_mean": float(8 * np.mean(sizes) / pixels),
            "y_bits_mean": y_total / n, "z_bits_mean": z_total / n,
            "z_share_of_payload_bits": z_total / (y_total + z_total),
            "face_region_share_of_y_bits": face_share,
            "face_region_share_of_area": area / n,
            "face_region_bytes_mean": float(face_bytes),
            "background_bytes_mean": float(payload_bytes - face_bytes),
            "crop_bytes_mean": float(np.mean(crop_sizes)),
            "face_region_pixels_per_crop_pixel": float(area / n * pixels / (ARCFACE_112.width * ARCFACE_112.height))}


def _qualities(model: str, qualities: list[float] | None) -> list[float | None]:
    """The qualities ``model`` is measured at: ``qualities`` for a variable-rate model, None (its one) otherwise."""
    from facelink.shared import registry

    if not registry.load(model).tables.variable_rate:
        if qualities:
            raise SystemExit(f"facelink bench bit-allocation: {model} is a rate point with one quality; "
                             "--qualities applies to a variable-rate model")
        return [None]
    return list(qualities) if qualities else [None]


def load_frames(n: int, assets=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` LFW images outside View 2 with a detected face: (RGB frame, its largest face's landmarks)."""
    from facelink.cloud.training import datasets
    from facelink.shared.detection import YuNet

    det, frames = YuNet(), []
    for im in datasets.lfw_train_images(assets):
        rgb = cv2.cvtColor(cv2.imread(str(im.path)), cv2.COLOR_BGR2RGB)
        d = det.largest(rgb, rgb=True)
        if d is not None:
            frames.append((rgb, d.landmarks))
        if len(frames) == n:
            break
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench bit-allocation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True, metavar="NAME", help="rate points from the registry")
    ap.add_argument("--images", type=int, default=100, help="LFW frames coded per rate point (default %(default)s)")
    ap.add_argument("--blur-background", nargs="?", type=float, const=BackgroundBlur.sigma, metavar="SIGMA",
                    help="code the frames as the edge's --blur-background makes them")
    ap.add_argument("--qualities", nargs="+", type=float, metavar="Q",
                    help="qualities a variable-rate model is measured at (default its default quality)")
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--out", type=Path, help="result JSON (with provenance)")
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be ≥ 1")
    blur = None if args.blur_background is None else BackgroundBlur(sigma=args.blur_background)
    frames = load_frames(args.images, args.assets)
    result = {"command": "facelink bench bit-allocation " + " ".join(argv or []),
              "frames": "LFW full frames 250×250 (padded to 256×256), outside View 2",
              "face_region": (blur or BackgroundBlur()).settings(),
              "background_blur": None if blur is None else blur.settings(),
              "models": [allocation(m, frames, blur, q) for m in args.models for q in _qualities(m, args.qualities)]}
    emit_json(stamp(result), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
