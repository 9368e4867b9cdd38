"""Integer hyper-synthesis: the entropy parameters (Gaussian scale indexes and means) are computed from the
decoded hyper-latent with integer arithmetic only, so edge and cloud derive them bit-identically on any
CPU, BLAS or accelerator (the failure of CompressAI issues #279 and #309 cannot happen by construction).

Every tensor here holds integers. Convolutions run as float64 matrix products whose every product and partial
sum is an integer below 2**53, which float64 represents exactly whatever the summation order; the export
(:func:`facelink.cloud.export.integerize_hyper_synthesis`) checks that bound for the worst case. Activations
are fixed point with ``frac_bits`` fractional bits; weights carry their own power-of-two scale per layer;
each layer rounds half up by an exact power-of-two division, applies ReLU and clips.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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

    @property
    def conv_weight(self) -> np.ndarray:
        """The (O, C, k, k) kernel of the equivalent stride-1 convolution, as float64 integers."""
        w = self.weight.astype(np.float64)
        if self.kind == "deconv":
            w = np.flip(w, axis=(2, 3)).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(w)

    def worst_case_accumulator(self) -> int:
        """Largest |accumulator| any input within ±ACT_LIMIT can produce (bias and rounding included)."""
        per_output = np.abs(self.weight.astype(np.int64))
        per_output = per_output.sum(axis=(1, 2, 3)) if self.kind == "conv" else per_output.sum(axis=(0, 2, 3))
        return int(per_output.max()) * ACT_LIMIT + int(np.abs(self.bias).max()) + 2**self.shift


def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad_lo: int, pad_hi: int) -> np.ndarray:
    """Stride-``stride`` 2-D convolution (cross-correlation) of x (C, H, W) with w (O, C, k, k)."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (pad_lo, pad_hi), (pad_lo, pad_hi)))
    win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # (C, Ho, Wo, k, k)
    return np.tensordot(w, win, axes=([1, 2, 3], [0, 3, 4]))  # (O, Ho, Wo)


def run_layer(layer: IntLayer, x: np.ndarray) -> np.ndarray:
    k = layer.weight.shape[-1]
    if layer.kind == "conv":
        acc = _conv(x, layer.conv_weight, layer.stride, layer.padding, layer.padding)
    else:
        c, h, w = x.shape
        s = layer.stride
        up = np.zeros((c, (h - 1) * s + 1, (w - 1) * s + 1), dtype=np.float64)
        up[:, ::s, ::s] = x
        lo = k - 1 - layer.padding
        # output size (h-1)·s - 2p + k + output_padding, as torch's ConvTranspose2d
        acc = _conv(up, layer.conv_weight, 1, lo, lo + layer.output_padding)
    acc += layer.bias.astype(np.float64)[:, None, None]
    # round half up: floor((acc + 2**(shift-1)) / 2**shift), exact for integers below 2**53
    out = np.floor((acc + float(2 ** (layer.shift - 1))) / float(2**layer.shift))
    if layer.relu:
        np.maximum(out, 0.0, out=out)
    np.clip(out, -ACT_LIMIT, ACT_LIMIT, out=out)
    return out


@dataclass(frozen=True)
class IntHyperSynthesis:
    layers: tuple[IntLayer, ...]
    frac_bits: int
    z_medians: np.ndarray  # int64 (N,): round(median * 2**frac_bits)

    def __call__(self, z_symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hyper-latent symbols (N, h, w) → (scales, means) as int64 fixed point, each (M, 4h, 4w)."""
        z = np.asarray(z_symbols, dtype=np.int64)
        if z.ndim != 3 or z.shape[0] != len(self.z_medians):
            raise ValueError(f"expected hyper-latent symbols of shape ({len(self.z_medians)}, h, w), got {z.shape}")
        x = z * (1 << self.frac_bits) + self.z_medians[:, None, None]
        x = np.clip(x, -ACT_LIMIT, ACT_LIMIT).astype(np.float64)
        for layer in self.layers:
            x = run_layer(layer, x)
        out = x.astype(np.int64)
        m = out.shape[0] // 2
        return out[:m], out[m:]


def scale_indexes(scales: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """CompressAI's ``build_indexes`` on fixed-point scales: index = number of table entries below the scale.

    ``thresholds[j] = floor(scale_table[j] * 2**frac_bits)`` for every table entry but the last, so that
    ``scale <= scale_table[j]`` ⇔ ``scales_int <= thresholds[j]`` exactly.
    """
    return np.searchsorted(thresholds, scales, side="left").astype(np.int64)
