"""Face detectors available in the cloud, by name: ``yunet`` (the edge's detector, no torch) and ``mtcnn``
(facenet-pytorch's MTCNN, torch). Both return :class:`facelink.shared.detection.Detection` objects with five
landmarks in the same order (eye on the image's left, eye on the image's right, nose tip, mouth corner on the
image's left, mouth corner on the image's right), so either feeds :func:`facelink.shared.alignment.align`.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from facelink.shared.detection import Detection, FaceDetector, YuNet, verified

# sha256 of the MTCNN weight files inside PyPI facenet-pytorch 2.5.3 (facenet_pytorch/data/*.pt), checked on load.
MTCNN_SHA256 = {
    "pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}

DETECTORS = ("yunet", "mtcnn")


class MTCNNDetector(FaceDetector):
    """MTCNN (Zhang et al. 2016) from facenet-pytorch; same ``detect``/``largest`` interface as :class:`YuNet`."""

    def __init__(self, device: str | None = None, min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)):
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            from facelink.cloud.serving.recognizers import RecognizerUnavailable

            raise RecognizerUnavailable("MTCNN needs facenet-pytorch: pip install 'facenet-pytorch==2.5.3'")
        data = Path(list(spec.submodule_search_locations)[0]) / "data"
        for name, sha in MTCNN_SHA256.items():
            verified(data / name, sha)
        import torch
        from facenet_pytorch import MTCNN

        self.device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._mtcnn = MTCNN(min_face_size=min_face_size, thresholds=list(thresholds), keep_all=True,
                            device=self.device)

    def detect(self, image: np.ndarray, rgb: bool = False) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 image, got shape {image.shape} dtype {image.dtype}")
        rgb_image = image if rgb else np.ascontiguousarray(image[:, :, ::-1])
        boxes, probs, points = self._mtcnn.detect(rgb_image, landmarks=True)
        if boxes is None:
            return []
        out = []
        for b, p, lm in zip(boxes, probs, points):
            box = np.array([b[0], b[1], b[2] - b[0], b[3] - b[1]], dtype=np.float64)
            out.append(Detection(box, np.asarray(lm, dtype=np.float64).reshape(5, 2), float(p)))
        return sorted(out, key=lambda d: d.score, reverse=True)


def get_detector(name: str, device: str | None = None):
    """``yunet`` or ``mtcnn``; both have ``detect(image, rgb=False)`` and ``largest(image, rgb=False)``."""
    if name == "yunet":
        return YuNet()
    if name == "mtcnn":
        return MTCNNDetector(device=device)
    raise KeyError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
