"""YuNet face detection through ``cv2.FaceDetectorYN`` (no torch; runs on the edge and in the cloud)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelink.shared.paths import DETECTORS_DIR

YUNET_FILE = "face_detection_yunet.onnx"
YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x, y, w, h
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth (image's left/right)
    score: float


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class IntegrityError(RuntimeError):
    """A shipped file does not match the checksum recorded for it."""


def verified(path: Path, sha256: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    got = sha256_file(path)
    if got != sha256:
        raise IntegrityError(f"{path}: sha256 {got} does not match the recorded {sha256}")
    return path


class FaceDetector:
    """A detector: ``detect`` returns faces sorted by score; ``largest`` picks the most prominent one."""

    def detect(self, image: np.ndarray, rgb: bool = False) -> list[Detection]:
        raise NotImplementedError

    def largest(self, image: np.ndarray, rgb: bool = False) -> Detection | None:
        """The most prominent face: largest box among detections (ties broken by score)."""
        faces = self.detect(image, rgb=rgb)
        if not faces:
            return None
        return max(faces, key=lambda d: (d.box[2] * d.box[3], d.score))


class YuNet(FaceDetector):
    """Face detector; ``detect`` takes a BGR or RGB uint8 image (YuNet was trained on BGR; pass ``rgb=True``)."""

    def __init__(self, model: str | Path | None = None, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 top_k: int = 50):
        path = Path(model) if model else verified(DETECTORS_DIR / YUNET_FILE, YUNET_SHA256)
        self._det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold, top_k)
        self._size = (320, 320)

    def detect(self, image: np.ndarray, rgb: bool = False) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 image, got shape {image.shape} dtype {image.dtype}")
        bgr = image[:, :, ::-1].copy() if rgb else image
        h, w = bgr.shape[:2]
        if (w, h) != self._size:
            self._det.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self._det.detect(bgr)
        if faces is None:
            return []
        out = [Detection(f[0:4].astype(np.float64), f[4:14].reshape(5, 2).astype(np.float64), float(f[14]))
               for f in faces]
        return sorted(out, key=lambda d: d.score, reverse=True)
