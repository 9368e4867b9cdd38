"""Capture domains: deterministic transforms of a face image that stand for the cameras a fleet has.

Each domain is a documented transform of an RGB uint8 image (in practice the edge's aligned face crop, so a
camera's condition is simulated on exactly what the codec receives). Parameters are drawn per image from ranges
held here, by a generator seeded from (``DOMAIN_SEED``, domain name, image key): the same image always gets the same
transform, in training and in the benchmark, on any machine.

- ``source``: the image as it is (the data the rate points were trained on).
- ``nir``: night-time near-infrared camera: grey (luma only), dark (gain and a gamma), Gaussian sensor noise.
- ``far``: a far-away face: few pixels (down-scaled by area to a side of 18-30 px), up-scaled back bilinearly.
- ``jpeg``: a camera that already delivers a low-quality JPEG (quality 6-14, 4:2:0).
- ``webcam`` (the held-out domain: no adapter and no gate ever trains on it): a cheap colour webcam, mildly
  down-scaled (to a side of 36-52 px) and JPEG-compressed (quality 18-32): between ``far`` and ``jpeg``.

:data:`TRAINED` are the domains that get an adapter (``source`` first) and that the gate classifies;
:data:`UNSEEN` is the held-out one.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

DOMAIN_SEED = 20  # the one seed of every per-image draw

# Parameter ranges, one home: each value is drawn uniformly in [lo, hi] per image.
NIR_GAIN = (0.22, 0.45)  # brightness multiplier after the gamma
NIR_GAMMA = (1.1, 1.5)  # exponent on [0, 1] luma (> 1 darkens the mid-tones)
NIR_NOISE_SIGMA = (4.0, 9.0)  # sensor noise, in 8-bit levels
FAR_SIDE = (18, 30)  # pixels on the longer side the face is captured with
JPEG_QUALITY = (6, 14)
WEBCAM_SIDE = (36, 52)
WEBCAM_QUALITY = (18, 32)


def _rng(domain: str, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{DOMAIN_SEED}:{domain}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _integer(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _resample(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return rgb.copy()
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _source(rgb, rng):
    return rgb.copy(), {}


def _nir(rgb, rng):
    p = {"gain": _uniform(rng, NIR_GAIN), "gamma": _uniform(rng, NIR_GAMMA),
         "noise_sigma": _uniform(rng, NIR_NOISE_SIGMA)}
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    dark = 255.0 * p["gain"] * luma ** p["gamma"]
    noisy = dark + rng.normal(0.0, p["noise_sigma"], size=dark.shape)
    grey = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2), p


def _far(rgb, rng):
    p = {"side": _integer(rng, FAR_SIDE)}
    return _resample(rgb, p["side"]), p


def _jpeg_camera(rgb, rng):
    p = {"quality": _integer(rng, JPEG_QUALITY)}
    return _jpeg(rgb, p["quality"]), p


def _webcam(rgb, rng):
    p = {"side": _integer(rng, WEBCAM_SIDE), "quality": _integer(rng, WEBCAM_QUALITY)}
    return _jpeg(_resample(rgb, p["side"]), p["quality"]), p


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    transform: object  # (rgb, rng) -> (rgb, parameters)

    def apply(self, rgb: np.ndarray, key: str) -> np.ndarray:
        """``rgb`` (H×W×3 uint8) as this domain's camera would deliver it; ``key`` names the image (its path
        relative to its data set) and fixes the drawn parameters."""
        return self.apply_with_parameters(rgb, key)[0]

    def apply_with_parameters(self, rgb: np.ndarray, key: str) -> tuple[np.ndarray, dict]:
        if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
            raise ValueError(f"domain {self.name}: expected an H×W×3 uint8 RGB image, got "
                             f"{getattr(rgb, 'shape', None)} {getattr(rgb, 'dtype', None)}")
        out, params = self.transform(np.ascontiguousarray(rgb), _rng(self.name, key))
        return out, params


DOMAINS = {d.name: d for d in (
    Domain("source", "the image as it is", _source),
    Domain("nir", "night-time near-infrared: grey, dark, sensor noise", _nir),
    Domain("far", "far-away face: few pixels, up-scaled", _far),
    Domain("jpeg", "low-quality JPEG camera", _jpeg_camera),
    Domain("webcam", "held out: cheap colour webcam, mildly down-scaled and JPEG-compressed", _webcam),
)}
TRAINED = ("source", "nir", "far", "jpeg")  # adapter order; the gate's classes
UNSEEN = "webcam"


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}")
    return DOMAINS[name]
