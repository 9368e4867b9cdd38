"""Integer hyper-synthesis: the entropy parameters (Gaussian scale indexes and means) are computed from the
decoded hyper-latent with integer arithmetic only, so edge and cloud derive them bit-identically on any
CPU, BLAS or accelerator (the failure of CompressAI issues #279 and #309 cannot happen by construction).

Every tensor here holds integers. Convolutions run as float64 matrix products whose every product and partial
sum is an integer below 2**53, which float64 represents exactly whatever the summation order; the export
(:func:`facelink.cloud.training.export.integerize_hyper_synthesis`) checks that bound for the worst case. Activations
are fixed point with ``frac_bits`` fractional bits; weights carry their own power-of-two scale per layer;
each layer rounds half up by an exact power-of-two division, applies ReLU and clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

EXACT_LIMIT = 2**53
ACT_LIMIT = 2**24  # activations are clipped to ±ACT_LIMIT (never reached by trained models; keeps the bound)


@dataclass(frozen=True)
class IntLayer:
    kind: str  # "conv" or "deconv" (torch Conv2d / ConvTranspose2d semantics)
    weight: np.ndarray  # int64, torch layout: conv (O, C, k, k); deconv (C, O, k, k)
    bias: np.ndarray  # int64 (O,), at scale 2**(frac_bits + shift)
    shift: int  # weight scale: w_float ≈ weight / 2**shift
    stride: int
    padding: int
    output_padding: int
    relu: bool

    def __post_init__(self):
        if self.kind not in ("conv", "deconv"):
            raise ValueError(f"unknown layer kind {self.kind!r}")

    def worst_case_accumulator(self) -> int:
        """Largest |accumulator| any input within ±ACT_LIMIT can produce (bias and rounding included)."""
        per_output = np.abs(self.weight.astype(np.int64))
        per_output = per_output.sum(axis=(1, 2, 3)) if self.kind == "conv" else per_output.sum(axis=(0, 2, 3))
        return int(per_output.max()) * ACT_LIMIT + int(np.abs(self.bias).max()) + 2**self.shift

    @cached_property
    def _plan(self):
        """Weights as float64 matrices, once. A stride-s transposed convolution is split into s×s phases, each
        an ordinary correlation with a sub-kernel (no multiplications by inserted zeros)."""
        w = self.weight.astype(np.float64)
        k = w.shape[-1]
        if self.kind == "conv":
            return [(None, None, k, k, np.ascontiguousarray(w.reshape(w.shape[0], -1)))]
        s, p = self.stride, self.padding
        phases = []
        for y0 in range(s):
            ry = (y0 + p) % s
            for x0 in range(s):
                rx = (x0 + p) % s
                sub = w[:, :, ry::s, rx::s][:, :, ::-1, ::-1]  # (C, O, T, U), flipped for correlation
                t, u = sub.shape[2:]
                phases.append((y0, x0, t, u, np.ascontiguousarray(sub.transpose(1, 0, 2, 3).reshape(sub.shape[1], -1))))
        return phases


def _columns(x: np.ndarray, t: int, u: int, ho: int, wo: int, stride: int = 1) -> np.ndarray:
    """The (C·t·u, ho·wo) matrix whose product with a (O, C·t·u) kernel matrix is the valid cross-correlation of
    x (C, H, W) → (O, ho·wo)."""
    c = x.shape[0]
    cols = np.empty((c, t, u, ho, wo), dtype=np.float64)
    for i in range(t):
        for j in range(u):
            cols[:, i, j] = x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
    return cols.reshape(c * t * u, ho * wo)


def _parts(layer: IntLayer, x: np.ndarray):
    """The layer's output size (O, ho, wo) and its parts, each a correlation: (output rows, output columns, kernel
    matrix, input view, t, u, n, m, stride) with :func:`_columns`' arguments; one part for a convolution, one per
    phase for a transposed one."""
    c, h, w = x.shape
    k, s, p = layer.weight.shape[-1], layer.stride, layer.padding
    if layer.kind == "conv":
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        (_, _, t, u, w2d), = layer._plan
        parts = [(slice(None), slice(None), w2d, np.pad(x, ((0, 0), (p, p), (p, p))), t, u, ho, wo, s)]
        return (layer.weight.shape[0], ho, wo), parts
    # output size (h-1)·s - 2p + k + output_padding, as torch's ConvTranspose2d
    ho, wo = (h - 1) * s - 2 * p + k + layer.output_padding, (w - 1) * s - 2 * p + k + layer.output_padding
    xp = np.pad(x, ((0, 0), (k, k), (k, k)))
    parts = []
    for y0, x0, t, u, w2d in layer._plan:
        n, m = len(range(y0, ho, s)), len(range(x0, wo, s))
        qy, qx = (y0 + p) // s, (x0 + p) // s  # input row/col of the phase's first output, tap 0
        sy, sx = qy - (t - 1) + k, qx - (u - 1) + k
        parts.append((slice(y0, None, s), slice(x0, None, s), w2d, xp[:, sy : sy + n + t - 1, sx : sx + m + u - 1],
                      t, u, n, m, 1))
    return (layer.weight.shape[1], ho, wo), parts


def _finish(layer: IntLayer, acc: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Output channels lo..hi from their accumulators: bias, rounding, ReLU, clipping."""
    acc += layer.bias[lo:hi].astype(np.float64)[:, None, None]
    # round half up: floor((acc + 2**(shift-1)) / 2**shift), exact for integers below 2**53
    out = np.floor((acc + float(2 ** (layer.shift - 1))) / float(2**layer.shift))
    if layer.relu:
        np.maximum(out, 0.0, out=out)
    np.clip(out, -ACT_LIMIT, ACT_LIMIT, out=out)
    return out


def run_layer(layer: IntLayer, x: np.ndarray) -> np.ndarray:
    shape, parts = _parts(layer, x)
    acc = np.empty(shape, dtype=np.float64)
    for rows, columns, w2d, view, t, u, n, m, stride in parts:  # each part's columns only while it is computed
        acc[:, rows, columns] = (w2d @ _columns(view, t, u, n, m, stride)).reshape(-1, n, m)
    return _finish(layer, acc, 0, shape[0])


class LayerOutput:
    """A layer applied to x, its output channels computed on demand, in any groups: the input's column matrices are
    built once, and each group is the product of its rows of the kernel matrices with them. Every output element is
    the same integer as :func:`run_layer`'s whatever the grouping (products and partial sums are exact integers in
    float64), so a decoder can compute y's scales by groups of channels and stop at the first symbol that proves a
    stream bad."""

    def __init__(self, layer: IntLayer, x: np.ndarray):
        self.layer = layer
        (self.channels, *self.size), parts = _parts(layer, x)
        self._parts = [(rows, columns, w2d, _columns(view, t, u, n, m, stride), n, m)
                       for rows, columns, w2d, view, t, u, n, m, stride in parts]

    def __call__(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Output channels ``lo`` to ``hi`` (all by default): (hi − lo, ho, wo) integers in float64."""
        hi = self.channels if hi is None else hi
        acc = np.empty((hi - lo, *self.size), dtype=np.float64)
        for rows, columns, w2d, cols, n, m in self._parts:
            acc[:, rows, columns] = (w2d[lo:hi] @ cols).reshape(-1, n, m)
        return _finish(self.layer, acc, lo, hi)


@dataclass(frozen=True)
class IntHyperSynthesis:
    layers: tuple[IntLayer, ...]
    frac_bits: int
    z_medians: np.ndarray  # int64 (N,): round(median * 2**frac_bits)

    def __call__(self, z_symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hyper-latent symbols (N, h, w) → (scales, means) as int64 fixed point, each (M, 4h, 4w)."""
        out = self.last_layer(z_symbols)().astype(np.int64)
        m = out.shape[0] // 2
        return out[:m], out[m:]

    def last_layer(self, z_symbols: np.ndarray) -> LayerOutput:
        """Every layer but the last applied to the hyper-latent symbols (N, h, w); the last one's output channels
        (the M scales, then the M means) on demand."""
        z = np.asarray(z_symbols, dtype=np.int64)
        if z.ndim != 3 or z.shape[0] != len(self.z_medians):
            raise ValueError(f"expected hyper-latent symbols of shape ({len(self.z_medians)}, h, w), got {z.shape}")
        x = z * (1 << self.frac_bits) + self.z_medians[:, None, None]
        x = np.clip(x, -ACT_LIMIT, ACT_LIMIT).astype(np.float64)
        for layer in self.layers[:-1]:
            x = run_layer(layer, x)
        return LayerOutput(self.layers[-1], x)


def scale_indexes(scales: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """CompressAI's ``build_indexes`` on fixed-point scales: index = number of table entries below the scale.

    ``thresholds[j] = floor(scale_table[j] * 2**frac_bits)`` for every table entry but the last, so that
    ``scale <= scale_table[j]`` ⇔ ``scales_int <= thresholds[j]`` exactly.
    """
    return np.searchsorted(thresholds, scales, side="left").astype(np.int64)
