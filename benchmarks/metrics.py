"""Headline metrics on accuracy-versus-bpp curves: Bjøntegaard delta rate and bpp-at-parity.

Both work on a codec's *operating curve*: its (bpp, quality) points, where quality is verification accuracy or
TAR@FAR. Recognition curves saturate and carry sampling noise, so they are often not monotonic. The rule used
everywhere here (:func:`pareto_curve`):

    Sort the points by bpp and keep a point only if its quality is strictly higher than that of every point
    with lower bpp (its Pareto-efficient points: the settings one would actually choose). Ties in bpp keep the
    higher quality. The kept points have strictly increasing bpp and quality, so log-bpp is a function of
    quality and can be interpolated.

Interpolation is monotone piecewise-cubic (PCHIP, the default) or Akima, of log(bpp) as a function of quality.

- BD-rate (Bjøntegaard 2001, with the piecewise-cubic variant of VCEG-AL22 / JVET-CTC): the average difference of
  log(bpp) between the two curves over the quality interval both cover, as a percentage
  ``100·(exp(mean Δ log bpp) − 1)``; negative means the test codec needs fewer bits for the same quality.
  Undefined (``nan``) when either curve has fewer than two Pareto points or the quality intervals do not overlap.
- BD-quality: the average quality difference over the common log-bpp interval (same rule, roles swapped).
- bpp-at-parity: the bpp at which a codec's curve reaches a reference quality (the IPR paper's: the accuracy of
  HEVC at CRF 23), interpolated on the codec's own Pareto curve, also as a percentage of the reference bpp.
  If the codec's lowest setting already reaches the reference, the answer is an upper bound (its lowest bpp);
  if its highest setting never reaches it, there is no parity.

Also the per-image and per-call figures the benchmarks share: :func:`psnr` of two uint8 images and
:func:`timing_stats` of a list of times.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("pchip", "akima")
QUALITY_DECIMALS = 9


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255; identical images give 100 dB, the MSE floored at 1e-10)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def timing_stats(ms: Sequence[float]) -> dict:
    """Median, 99th percentile and mean (3 decimals) and the count of a list of times."""
    a = np.asarray(ms, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}


def pareto_curve(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto-efficient points of a curve: bpp and quality both strictly increasing (see module doc)."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"rate and quality must be 1-D and the same length, got {r.shape} and {q.shape}")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    # Accuracies are means of fold fractions: round away float noise (1e-16) so equal values compare equal.
    r, q = r[ok], np.round(q[ok], QUALITY_DECIMALS)
    order = np.lexsort((-q, r))  # by rate, then higher quality first
    keep_r, keep_q = [], []
    best = -math.inf
    for i in order:
        if keep_r and r[i] == keep_r[-1]:
            continue  # same rate, lower quality
        if q[i] > best:
            keep_r.append(r[i])
            keep_q.append(q[i])
            best = q[i]
    return np.array(keep_r), np.array(keep_q)


def _interpolator(x: np.ndarray, y: np.ndarray, method: str):
    from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

    if method == "pchip":
        return PchipInterpolator(x, y, extrapolate=False)
    if method == "akima":
        if len(x) < 3:  # Akima needs three points; with two it is the straight line anyway
            return PchipInterpolator(x, y, extrapolate=False)
        return Akima1DInterpolator(x, y)
    raise ValueError(f"unknown interpolation {method!r}; expected one of {METHODS}")


def _integral(f, lo: float, hi: float) -> float:
    return float(f.integrate(lo, hi))


def bd_rate(anchor_rate, anchor_quality, test_rate, test_quality, method: str = "pchip") -> float:
    """Bjøntegaard delta rate of ``test`` against ``anchor`` in percent (negative: ``test`` saves bits)."""
    ra, qa = pareto_curve(anchor_rate, anchor_quality)
    rt, qt = pareto_curve(test_rate, test_quality)
    if len(ra) < 2 or len(rt) < 2:
        return math.nan
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return math.nan
    fa = _interpolator(qa, np.log(ra), method)
    ft = _interpolator(qt, np.log(rt), method)
    avg = (_integral(ft, lo, hi) - _integral(fa, lo, hi)) / (hi - lo)
    return 100.0 * (math.exp(avg) - 1.0)


def bd_quality(anchor_rate, anchor_quality, test_rate, test_quality, method: str = "pchip") -> float:
    """Bjøntegaard delta quality (e.g. accuracy points) of ``test`` against ``anchor`` over the common log-bpp
    interval (positive: ``test`` is more accurate at equal bpp)."""
    ra, qa = pareto_curve(anchor_rate, anchor_quality)
    rt, qt = pareto_curve(test_rate, test_quality)
    if len(ra) < 2 or len(rt) < 2:
        return math.nan
    la, lt = np.log(ra), np.log(rt)
    lo, hi = max(la[0], lt[0]), min(la[-1], lt[-1])
    if not hi > lo:
        return math.nan
    fa = _interpolator(la, qa, method)
    ft = _interpolator(lt, qt, method)
    return (_integral(ft, lo, hi) - _integral(fa, lo, hi)) / (hi - lo)


@dataclass(frozen=True)
class Parity:
    """Where a codec reaches a reference quality."""

    bpp: float  # nan when not reached
    percent_of_reference: float  # 100·bpp / reference bpp (nan when not reached)
    status: str  # "interpolated" | "upper_bound" (lowest setting already reaches it) | "not_reached"
    target_quality: float
    reference_bpp: float
    best_quality: float = math.nan  # the codec's highest quality on its curve (how close a "not reached" came)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def rate_at_quality(rate, quality, target: float, method: str = "pchip") -> tuple[float, str]:
    """bpp at which the curve's Pareto interpolant reaches ``target`` quality, and how it was found."""
    r, q = pareto_curve(rate, quality)
    target = round(float(target), QUALITY_DECIMALS)
    if len(r) == 0:
        return math.nan, "not_reached"
    if target <= q[0]:
        return float(r[0]), "upper_bound" if target < q[0] else "interpolated"
    if target > q[-1]:
        return math.nan, "not_reached"
    if target == q[-1]:
        return float(r[-1]), "interpolated"
    f = _interpolator(q, np.log(r), method)
    return float(math.exp(float(f(target)))), "interpolated"


def quality_at_rate(rate, quality, target_rate: float, method: str = "pchip") -> float:
    """Quality of the curve's Pareto interpolant (quality over log bpp) at ``target_rate``; NaN outside the
    curve's bpp range (no extrapolation)."""
    r, q = pareto_curve(rate, quality)
    if len(r) == 0 or not (math.isfinite(target_rate) and r[0] <= target_rate <= r[-1]):
        return math.nan
    if len(r) == 1:
        return float(q[0])
    return float(_interpolator(np.log(r), q, method)(math.log(target_rate)))


def bpp_at_parity(rate, quality, reference_bpp: float, reference_quality: float, method: str = "pchip") -> Parity:
    """bpp-at-parity of a codec curve against a reference operating point (bpp, quality)."""
    bpp, status = rate_at_quality(rate, quality, reference_quality, method)
    pct = 100.0 * bpp / reference_bpp if math.isfinite(bpp) and reference_bpp > 0 else math.nan
    q = np.asarray(quality, dtype=float)
    best = float(np.nanmax(q)) if np.isfinite(q).any() else math.nan
    return Parity(bpp, pct, status, float(reference_quality), float(reference_bpp), best)
