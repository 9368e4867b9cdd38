"""From a decoded image to an identity: detect and align (or use the crop's known template), embed, match.

Thread safety: the server calls one :class:`FacePipeline` from several worker threads at once. OpenCV's
``cv2.FaceDetectorYN`` keeps per-call state (its input size, its network's buffers) and is not safe to share, so
each thread gets its own YuNet (made on first use); a detector passed in is shared and used under a lock.
Network inference runs under a lock, one call of a network at a time, each with all of torch's threads, as when
it runs alone (tests/test_server_concurrency.py requires bit-identical answers under load); a non-re-entrant
recognizer (dlib) is safe under it too. By default that lock is :data:`inference_lock`, which the server's synthesis
takes too (with several intra-op threads each call already uses every core); a server on one intra-op thread gives
each network its own lock (``lock=``), so that the synthesis of some frames and the recognizer of others run on two
cores at once. The Python-side work of other frames (entropy decoding, detection, alignment, gallery match) goes on
meanwhile.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from facelink.cloud.serving.gallery import Gallery, Match
from facelink.cloud.serving.recognizers import Recognizer
from facelink.cloud.serving.settings import DEFAULT_THRESHOLD
from facelink.shared.alignment import TEMPLATE_IDS, align
from facelink.shared.detection import YuNet


@dataclass
class Identification:
    face_found: bool
    identity: str = ""
    similarity: float = 0.0
    matches: list[Match] = field(default_factory=list)
    embed_ms: float = 0.0


# One network call at a time in this process (see the module's docstring); the default lock of every pipeline.
inference_lock = threading.Lock()


class FacePipeline:
    def __init__(self, recognizer: Recognizer, gallery: Gallery, detector: YuNet | None = None,
                 threshold: float = DEFAULT_THRESHOLD, lock: threading.Lock | None = None):
        self.recognizer = recognizer
        self.lock = lock or inference_lock  # held around each call of the recognizer
        self.gallery = gallery
        self.threshold = threshold
        self._shared_detector = detector
        self._detector_lock = threading.Lock()
        self._local = threading.local()

    @property
    def detector(self) -> YuNet:
        """This thread's detector (or the shared one passed in, which :meth:`landmarks` uses under a lock)."""
        if self._shared_detector is not None:
            return self._shared_detector
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = YuNet()
        return det

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """``N×H×W×3`` crops aligned to the recognizer's template → ``N×dim`` unit-norm embeddings."""
        with self.lock:
            return self.recognizer.embed(crops)

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
        if self._shared_detector is not None:
            with self._detector_lock:
                det = self._shared_detector.largest(image, rgb=True)
        else:
            det = self.detector.largest(image, rgb=True)
        return None if det is None else det.landmarks

    def embed(self, image: np.ndarray, template_id: int = 0) -> np.ndarray | None:
        pts = self.landmarks(image, template_id)
        if pts is None:
            return None
        return self.embed_crops(self.crop(image, pts)[None])[0]

    def crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return align(image, landmarks, self.recognizer.template)

    def identify(self, image: np.ndarray, template_id: int = 0, top_k: int = 3) -> Identification:
        t0 = time.perf_counter()
        emb = self.embed(image, template_id)
        if emb is None:
            return Identification(False, embed_ms=(time.perf_counter() - t0) * 1e3)
        return self.identify_embedding(emb, top_k, t0)

    def identify_embedding(self, emb: np.ndarray, top_k: int = 3, t0: float | None = None) -> Identification:
        """The gallery's answer for an embedding (``t0``: when the frame's recognition began, for ``embed_ms``)."""
        matches = self.gallery.match(emb, top_k)
        best = matches[0] if matches else None
        known = best is not None and best.similarity >= self.threshold
        return Identification(True, best.identity if known else "", best.similarity if best else 0.0, matches,
                              (time.perf_counter() - t0) * 1e3 if t0 is not None else 0.0)
