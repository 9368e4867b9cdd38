"""Five-point face templates and similarity alignment (numpy + OpenCV, no torch: the edge uses it too).

Landmark order everywhere: eye on the image's left, eye on the image's right, nose tip, mouth corner on the
image's left, mouth corner on the image's right (YuNet's order).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Template:
    name: str
    width: int
    height: int
    points: np.ndarray  # (5, 2) float64, pixel coordinates in a width×height crop


def _t(name, w, h, pts) -> Template:
    arr = np.array(pts, dtype=np.float64).reshape(5, 2)
    arr.setflags(write=False)
    return Template(name, w, h, arr)


# MobileFaceNet/SphereFace 96×112 template (the recognizer's own; see ../shared/assets/README.md).
MOBILEFACENET_96x112 = _t("mobilefacenet-96x112", 96, 112, [
    (30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366), (33.5493, 92.3655), (62.7299, 92.2041)])
# The same points centred in 112×112 (ArcFace's template): the edge's canonical face crop.
ARCFACE_112 = _t("arcface-112", 112, 112, MOBILEFACENET_96x112.points + np.array([8.0, 0.0]))


def scaled(template: Template, size: int, name: str) -> Template:
    """``template`` shrunk (or grown) to a ``size``×``size`` crop of the same framing: every point scaled alike."""
    if template.width != template.height:
        raise ValueError(f"{template.name} is not square")
    return _t(name, size, size, template.points * (size / template.width))


# The ArcFace framing at 96×96 (and 80×80): the same face in fewer pixels, for links too thin for 112×112. The cloud
# re-warps the decoded crop to each recognizer's template, as it does any crop, which upsamples it.
ARCFACE_96 = scaled(ARCFACE_112, 96, "arcface-96")
ARCFACE_80 = scaled(ARCFACE_112, 80, "arcface-80")

# SFace (OpenCV's FaceRecognizerSF) aligns to exactly the ArcFace 112×112 template.
SFACE_112 = ARCFACE_112
# dlib's ResNet: its 150×150 chip (dlib.get_face_chip(image, 5-point shape, 150, padding 0.25)) expressed in YuNet's
# five points: the median, over 381 LFW images outside View 2, of YuNet's landmarks mapped into dlib's own chip.
# Made by `python -m facelink.benchmarks.derive_templates --limit 400` (spread per point 3-8 px, mostly pose).
DLIB_150 = _t("dlib-150", 150, 150, [
    (46.55, 44.85), (103.10, 45.46), (74.91, 77.45), (50.66, 102.12), (99.37, 102.34)])
# facenet-pytorch's InceptionResnetV1: MTCNN box + 14 px margin resized to 160×160, in YuNet's five points
# (median over 390 LFW images outside View 2, same command; the box crop is not rotated, so the spread is larger).
FACENET_160 = _t("facenet-160", 160, 160, [
    (47.75, 63.59), (118.10, 62.97), (83.92, 92.02), (55.23, 114.76), (114.40, 114.20)])

TEMPLATES = {t.name: t for t in (MOBILEFACENET_96x112, ARCFACE_112, ARCFACE_96, ARCFACE_80, DLIB_150, FACENET_160)}
# Template ids carried in the bitstream container (one byte); 0 means "not an aligned crop".
TEMPLATE_IDS = {1: ARCFACE_112, 2: ARCFACE_96, 3: ARCFACE_80}
# The templates a face crop can be sent as (those the container can name), by name.
CROP_TEMPLATES = {t.name: t for t in TEMPLATE_IDS.values()}


def template_id(template: Template) -> int:
    for k, t in TEMPLATE_IDS.items():
        if t.name == template.name:
            return k
    raise KeyError(f"template {template.name} has no bitstream id")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` points onto ``dst``.

    Umeyama's closed form; returns a 2×3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (n, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    var_s = (s**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("degenerate source points")
    scale = np.trace(np.diag(sig) @ e) / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align(image: np.ndarray, landmarks: np.ndarray, template: Template) -> np.ndarray:
    """Warp ``image`` so that ``landmarks`` land on ``template``'s points; returns a template-sized crop."""
    m = similarity_transform(landmarks, template.points)
    return cv2.warpAffine(image, m, (template.width, template.height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]
