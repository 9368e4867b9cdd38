"""Derive five-point templates (in YuNet's landmark convention) for recognizers whose own pipeline aligns faces
differently, so that every recognizer can be fed by ``align(image, yunet_landmarks, template)``.

- ``dlib``: dlib's 150×150 face chip (``dlib.get_face_chip(img, sp5_shape, 150, 0.25)``, what dlib's ResNet
  was trained and published with). For each image, dlib's HOG detector and 5-point shape predictor give the chip;
  (also printed: the median HOG face rectangle in chip coordinates, which ``dlib-resnet`` uses to re-run the
  shape predictor inside an aligned crop);
  the chip's exact image→chip similarity is recovered by extracting a chip of coordinate images (pixel value =
  source x, source y) and fitting; YuNet's landmarks are mapped through it and averaged over images.
- ``facenet``: facenet-pytorch's MTCNN crop (box + margin 14 px at 160×160, the setting of its LFW evaluation);
  YuNet's landmarks are mapped into the crop and averaged.

Only LFW images outside View 2 are used (``datasets.lfw_train_images``); nothing is trained, these are geometric
medians. Run: ``python -m facelink.benchmarks.derive_templates --limit 400`` and paste the printed points into
``shared/alignment.py``.
"""
from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np
from tqdm import tqdm

from facelink.cloud.training import datasets
from facelink.shared.alignment import similarity_transform, transform_points
from facelink.shared.detection import YuNet


def _same_face(face, cx: float, cy: float) -> bool:
    """The other detector's face centre lies inside YuNet's box (both picked the same person)."""
    x, y, w, h = face.box
    return x <= cx <= x + w and y <= cy <= y + h


def _dlib_points(images, det: YuNet) -> tuple[np.ndarray, int]:
    import dlib

    from facelink.cloud.serving.recognizers import dlib_model_path

    hog = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    pts, skipped = [], 0
    for im in tqdm(images, desc="dlib chip template", unit="img"):
        rgb = cv2.imread(str(im.path))[:, :, ::-1].copy()
        rects = hog(rgb, 1)
        face = det.largest(rgb, rgb=True)
        if len(rects) != 1 or face is None or not _same_face(face, rects[0].center().x, rects[0].center().y):
            skipped += 1
            continue
        shape = sp5(rgb, rects[0])
        h, w = rgb.shape[:2]
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        cx = dlib.get_face_chip(gx, shape, 150, 0.25)
        cy = dlib.get_face_chip(gy, shape, 150, 0.25)
        ys, xs = np.mgrid[0:150, 0:150]
        chip_xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        src_xy = np.stack([cx.ravel(), cy.ravel()], 1).astype(np.float64)
        inside = (src_xy[:, 0] > 1) & (src_xy[:, 0] < w - 2) & (src_xy[:, 1] > 1) & (src_xy[:, 1] < h - 2)
        m = similarity_transform(src_xy[inside], chip_xy[inside])  # source image → chip
        r = rects[0]
        corners = transform_points(m, np.array([[r.left(), r.top()], [r.right(), r.bottom()]], dtype=np.float64))
        pts.append(np.vstack([transform_points(m, face.landmarks), corners]))
    return np.array(pts), skipped


def _facenet_points(images, det: YuNet, margin: int = 14, size: int = 160) -> tuple[np.ndarray, int]:
    from facelink.cloud.serving.detectors import MTCNNDetector

    mtcnn = MTCNNDetector(device="cpu")
    pts, skipped = [], 0
    for im in tqdm(images, desc="facenet crop template", unit="img"):
        rgb = cv2.imread(str(im.path))[:, :, ::-1].copy()
        m_face = mtcnn.largest(rgb, rgb=True)
        face = det.largest(rgb, rgb=True)
        if m_face is None or face is None or not _same_face(face, *(m_face.box[:2] + m_face.box[2:] / 2)):
            skipped += 1
            continue
        x, y, bw, bh = m_face.box
        mx, my = margin * bw / (size - margin), margin * bh / (size - margin)
        h, w = rgb.shape[:2]
        x0, y0 = int(max(x - mx / 2, 0)), int(max(y - my / 2, 0))
        x1, y1 = int(min(x + bw + mx / 2, w)), int(min(y + bh + my / 2, h))
        p = (face.landmarks - [x0, y0]) * [size / (x1 - x0), size / (y1 - y0)]
        pts.append(p)
    return np.array(pts), skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.derive_templates", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--limit", type=int, default=400, help="images to average over (spread over LFW-train)")
    ap.add_argument("--which", choices=["dlib", "facenet", "both"], default="both")
    args = ap.parse_args(argv)
    images = datasets.lfw_train_images(args.assets)
    step = max(1, len(images) // args.limit)
    images = images[::step][: args.limit]
    det = YuNet()
    out = {}
    for which, fn in (("dlib", _dlib_points), ("facenet", _facenet_points)):
        if args.which not in (which, "both"):
            continue
        pts, skipped = fn(images, det)
        # Median: robust to the odd landmark failure; the spread is mostly pose (yaw) and the detectors'
        # different landmark definitions (dlib's eye corners vs YuNet's eye centres).
        med = np.median(pts, axis=0)
        out[which] = {"images": len(pts), "skipped": skipped, "points": np.round(med[:5], 2).tolist(),
                      "mean": np.round(pts[:, :5].mean(0), 2).tolist(), "std": np.round(pts[:, :5].std(0), 2).tolist()}
        if pts.shape[1] > 5:  # dlib: its HOG face rectangle in chip coordinates (left, top), (right, bottom)
            out[which]["hog_rect"] = np.round(med[5:], 2).tolist()
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
