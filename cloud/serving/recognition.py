"""From a decoded image to an identity: detect and align (or use the crop's known template), embed, match."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from facelink.cloud.serving.gallery import Gallery, Match
from facelink.cloud.serving.recognizers import Recognizer
from facelink.shared.alignment import TEMPLATE_IDS, align
from facelink.shared.detection import YuNet

# Cosine similarity above which the best gallery match is reported as that person: the accuracy-maximising
# threshold for MobileFaceNet in the deployed setting (uncompressed gallery photo, face crop coded by the default
# model) on 600 pairs of LFW images outside View 2 — benchmarks/results/threshold.json, made by
# `facelink bench calibrate-threshold --pairs 300 --out benchmarks/results/threshold.json`.
DEFAULT_THRESHOLD = 0.285


@dataclass
class Identification:
    face_found: bool
    identity: str = ""
    similarity: float = 0.0
    matches: list[Match] = field(default_factory=list)
    embed_ms: float = 0.0


class FacePipeline:
    def __init__(self, recognizer: Recognizer, gallery: Gallery, detector: YuNet | None = None,
                 threshold: float = DEFAULT_THRESHOLD):
        self.recognizer = recognizer
        self.gallery = gallery
        self.detector = detector or YuNet()
        self.threshold = threshold

    def landmarks(self, image: np.ndarray, template_id: int = 0) -> np.ndarray | None:
        """Five landmarks: the template's points for an aligned crop, else the largest face YuNet finds."""
        if template_id:
            t = TEMPLATE_IDS.get(template_id)
            if t is None:
                raise ValueError(f"unknown face template id {template_id}")
            if image.shape[:2] != (t.height, t.width):
                raise ValueError(f"aligned crop is {image.shape[1]}×{image.shape[0]}, template {t.name} is "
                                 f"{t.width}×{t.height}")
            return t.points
        det = self.detector.largest(image, rgb=True)
        return None if det is None else det.landmarks

    def embed(self, image: np.ndarray, template_id: int = 0) -> np.ndarray | None:
        pts = self.landmarks(image, template_id)
        if pts is None:
            return None
        crop = align(image, pts, self.recognizer.template)
        return self.recognizer.embed(crop[None])[0]

    def identify(self, image: np.ndarray, template_id: int = 0, top_k: int = 3) -> Identification:
        t0 = time.perf_counter()
        emb = self.embed(image, template_id)
        if emb is None:
            return Identification(False, embed_ms=(time.perf_counter() - t0) * 1e3)
        matches = self.gallery.match(emb, top_k)
        best = matches[0] if matches else None
        known = best is not None and best.similarity >= self.threshold
        return Identification(True, best.identity if known else "", best.similarity if best else 0.0, matches,
                              (time.perf_counter() - t0) * 1e3)
