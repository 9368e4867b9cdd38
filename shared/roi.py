"""Face regions of interest: where in a frame a recognizer looks, and a background blur that keeps only that.

A full frame coded at a low rate spends most of its bits on background that no recognizer sees. The edge knows
where the faces are (it runs the detector anyway), so before coding a full frame it can blur everything outside
them: smooth areas cost any codec almost nothing, the faces keep their bits, and the cloud still gets a whole
frame (nothing changes in the bitstream or the decoder). numpy and OpenCV only: the edge uses it.

The region of one face is a template's rectangle (by default ArcFace's 112×112, which contains MobileFaceNet's
96×112, SFace's crop and dlib's 150×150 chip once grown by 10 %) mapped back into the frame through the
similarity that aligns the face's five landmarks to the template, grown by ``margin`` × its size on every side,
with a linear ``ramp`` (in template pixels) down to the background.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from facelink.shared.alignment import ARCFACE_112, Template, similarity_transform


def region_weights(matrices: np.ndarray, height: int, width: int, template: Template, background: float = 0.0,
                   margin: float = 0.1, ramp: float = 8.0) -> np.ndarray:
    """N×H×W float32 weights: 1 inside each face region, ``background`` outside it.

    ``matrices``: N×2×3 similarity matrices mapping frame pixels onto ``template`` (as
    :func:`facelink.shared.alignment.similarity_transform` of the landmarks gives). A pixel is inside when its
    template coordinates lie in the template rectangle grown by ``margin`` × its size on every side; the weight
    falls linearly to ``background`` over ``ramp`` template pixels outside it.
    """
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    tx = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None]
    ty = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None]
    mx, my = margin * template.width, margin * template.height
    dx = np.maximum(np.maximum(-mx - 0.5 - tx, tx - (template.width - 0.5 + mx)), 0.0)
    dy = np.maximum(np.maximum(-my - 0.5 - ty, ty - (template.height - 0.5 + my)), 0.0)
    dist = np.hypot(dx, dy)
    inside = np.clip(1.0 - dist / ramp, 0.0, 1.0) if ramp > 0 else (dist == 0).astype(np.float64)
    return (background + (1.0 - background) * inside).astype(np.float32)


@dataclass(frozen=True)
class BackgroundBlur:
    """Blur a frame outside its faces' regions (Gaussian, ``sigma`` pixels), feathered over ``ramp``."""

    sigma: float = 16.0
    margin: float = 0.1
    ramp: float = 16.0
    template: Template = field(default=ARCFACE_112, compare=False)

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"background blur sigma must be > 0, got {self.sigma}")
        if self.margin < 0 or self.ramp < 0:
            raise ValueError(f"margin and ramp must be ≥ 0, got {self.margin} and {self.ramp}")

    def settings(self) -> dict:
        """What determines the output (for benchmark cache keys and result files)."""
        d = asdict(self)
        d["template"] = self.template.name
        return d

    def mask(self, height: int, width: int, landmarks: Sequence[np.ndarray]) -> np.ndarray:
        """H×W float32 in [0, 1]: 1 on every face's region (the union of all faces), 0 on the background."""
        if len(landmarks) == 0:
            return np.zeros((height, width), np.float32)
        mats = np.stack([similarity_transform(lm, self.template.points) for lm in landmarks])
        return region_weights(mats, height, width, self.template, 0.0, self.margin, self.ramp).max(axis=0)

    def apply(self, rgb: np.ndarray, landmarks: Sequence[np.ndarray]) -> np.ndarray:
        """``rgb`` with everything outside the faces blurred; unchanged (the same array) when there is no face."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
        if len(landmarks) == 0:
            return rgb
        w = self.mask(rgb.shape[0], rgb.shape[1], landmarks)[..., None]
        blurred = cv2.GaussianBlur(rgb, (0, 0), self.sigma, borderType=cv2.BORDER_REPLICATE)
        out = w * rgb.astype(np.float32) + (1.0 - w) * blurred.astype(np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def around_faces(self, rgb: np.ndarray, detector) -> np.ndarray:
        """:meth:`apply` around every face ``detector`` (a :class:`facelink.shared.detection.FaceDetector`) finds."""
        return self.apply(rgb, [d.landmarks for d in detector.detect(rgb, rgb=True)])
