"""Rate control on the edge: the quality a byte budget allows, for a variable-rate model.

A camera on a thin link has a budget in bytes, not a λ. :func:`encode_within` finds, by bisection over the
container's quality grid, the highest quality whose whole container (header and checksum included) is at most
``max_bytes``, and returns that container: the budget is never exceeded. The container size grows with the
quality (more bits for every latent as the gains grow) almost everywhere; where it does not, the search still
returns a container within the budget, possibly a slightly lower quality than the best one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelink.shared import bitstream
from facelink.shared.alignment import Template

SEARCH_STEP = 1 / 32  # resolution of the search in quality units (a multiple of the container's 1/256 grid)


class BudgetError(ValueError):
    """Even the lowest quality does not fit the byte budget."""


@dataclass(frozen=True)
class RateControlled:
    data: bytes
    quality: float
    tries: int  # encodes the search ran


def encode_within(encoder, rgb: np.ndarray, max_bytes: int, template: Template | None = None,
                  step: float = SEARCH_STEP) -> RateControlled:
    """The container of ``rgb`` at the highest quality (on a grid of ``step``) whose size is ≤ ``max_bytes``.

    ``encoder``: a :class:`facelink.edge.encoder.EdgeEncoder` of a variable-rate model. Raises
    :class:`BudgetError` when quality 0 is already too large (the message gives its size)."""
    if not encoder.variable_rate:
        raise ValueError(f"model {encoder.bundle.name} has one rate; a byte budget needs a variable-rate model")
    if not (isinstance(max_bytes, (int, np.integer)) and max_bytes > 0):
        raise ValueError(f"the byte budget must be a positive whole number, got {max_bytes!r}")
    if not (step > 0 and (step * bitstream.QUALITY_SCALE).is_integer()):
        raise ValueError(f"the search step must be a positive multiple of 1/{bitstream.QUALITY_SCALE}, got {step}")
    top = encoder.bundle.tables.qualities - 1
    n = int(round(top / step))  # grid points 0 .. n
    tries = 0

    def at(i: int) -> bytes:
        nonlocal tries
        tries += 1
        return encoder.encode(rgb, template, quality=i * step)

    best = at(n)
    if len(best) <= max_bytes:
        return RateControlled(best, n * step, tries)
    best = at(0)
    if len(best) > max_bytes:
        raise BudgetError(f"the lowest quality needs {len(best)} bytes, more than the budget of {max_bytes}")
    lo, hi = 0, n  # invariant: lo fits (best is its container), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        data = at(mid)
        if len(data) <= max_bytes:
            lo, best = mid, data
        else:
            hi = mid
    return RateControlled(best, lo * step, tries)
