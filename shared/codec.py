"""The compress/decompress contract on latents, shared by edge and cloud (numpy only, no torch).

The edge computes ``y`` and ``z`` with the ONNX encoder and calls :func:`compress_latents`; the cloud calls
:func:`decompress_latents` and runs the synthesis transform on the result. Entropy parameters come from the
integer hyper-synthesis in the tables, so both sides derive them bit-identically.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelink.shared import bitstream, rans
from facelink.shared.tables import ModelTables


class ModelMismatchError(bitstream.BitstreamError):
    """The bitstream was made by a model whose tables this side does not have."""


def z_indexes(shape) -> np.ndarray:
    """The factorized prior's CDF index of every hyper-latent element: its channel."""
    n, h, w = shape
    return np.broadcast_to(np.arange(n, dtype=np.int64)[:, None, None], (n, h, w)).reshape(-1)


def quantize_z(tables: ModelTables, z: np.ndarray) -> np.ndarray:
    """Hyper-latent symbols: round(z − median), the medians being the tables' fixed-point ones."""
    med = tables.hyper.z_medians.astype(np.float64) / float(1 << tables.hyper.frac_bits)
    return np.round(z.astype(np.float64) - med[:, None, None]).astype(np.int64)


def compress_latents(tables: ModelTables, y: np.ndarray, z: np.ndarray) -> tuple[bytes, bytes]:
    """(z payload, y payload) for one image's latents y (M, 4h, 4w) and z (N, h, w), float32."""
    z_bytes, y_bytes, _ = compress_latents_with_symbols(tables, y, z)
    return z_bytes, y_bytes


def compress_latents_with_symbols(tables: ModelTables, y: np.ndarray, z: np.ndarray):
    """As :func:`compress_latents`, also returning what was coded (z symbols, indexes, means, y symbols)."""
    if y.ndim != 3 or z.ndim != 3 or y.shape[0] != tables.M or z.shape[0] != tables.N:
        raise ValueError(f"latent shapes {y.shape}, {z.shape} do not fit model N={tables.N}, M={tables.M}")
    if y.shape[1:] != (4 * z.shape[1], 4 * z.shape[2]):
        raise ValueError(f"y {y.shape} must be 4× the spatial size of z {z.shape}")
    z_sym = quantize_z(tables, z)
    z_bytes = rans.encode_with_indexes(z_sym, z_indexes(z.shape), tables.z.cdfs, tables.z.cdf_lengths,
                                       tables.z.offsets)
    idx, means = tables.entropy_parameters(z_sym)
    y_sym = np.round(y.astype(np.float32) - means).astype(np.int64)  # float32 as CompressAI's torch.round(y - means)
    y_bytes = rans.encode_with_indexes(y_sym, idx, tables.y.cdfs, tables.y.cdf_lengths, tables.y.offsets)
    return z_bytes, y_bytes, DecodedSymbols(z_sym, idx.reshape(means.shape), means, y_sym)


@dataclass(frozen=True)
class DecodedSymbols:
    z: np.ndarray  # (N, h, w) hyper-latent symbols
    indexes: np.ndarray  # (M, 4h, 4w) Gaussian scale indexes, from the integer hyper-synthesis
    means: np.ndarray  # (M, 4h, 4w) float32
    y: np.ndarray  # (M, 4h, 4w) latent symbols

    @property
    def y_hat(self) -> np.ndarray:
        return (self.y.astype(np.float32) + self.means).astype(np.float32)


def decode_symbols(tables: ModelTables, frame: bitstream.Frame) -> DecodedSymbols:
    """Entropy-decode a parsed container; raises BitstreamError (or ModelMismatchError) if it is bad."""
    if frame.model_id != tables.model_id:
        raise ModelMismatchError(f"bitstream made by model {frame.model_id}, this decoder has {tables.model_id}")
    zh, zw = frame.z_shape
    z_shape = (tables.N, zh, zw)
    try:
        z_sym = rans.decode_with_indexes(frame.z_bytes, z_indexes(z_shape), tables.z.cdfs,
                                         tables.z.cdf_lengths, tables.z.offsets).reshape(z_shape)
        idx, means = tables.entropy_parameters(z_sym)
        y_sym = rans.decode_with_indexes(frame.y_bytes, idx, tables.y.cdfs, tables.y.cdf_lengths,
                                         tables.y.offsets).reshape(means.shape)
    except rans.RansError as e:
        raise bitstream.BitstreamError(str(e)) from e
    return DecodedSymbols(z_sym, idx.reshape(means.shape), means, y_sym)


def decompress_latents(tables: ModelTables, frame: bitstream.Frame) -> np.ndarray:
    """The dequantized latent ŷ (M, 4h, 4w) float32 of a parsed container; raises BitstreamError if bad."""
    return decode_symbols(tables, frame).y_hat
