"""The compress/decompress contract on latents, shared by edge and cloud (numpy only, no torch).

The edge computes ``y`` and ``z`` with the ONNX encoder and calls :func:`encode_latents`; the cloud calls
:func:`decompress_latents` and runs the synthesis transform on the result. Entropy parameters come from the
integer hyper-synthesis in the tables, so both sides derive them bit-identically.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelink.shared import bitstream, rans
from facelink.shared.tables import ModelTables

# y's channels whose scales the decoder computes at once when y has at least GROUPED_POSITIONS positions (a group's
# symbols are decoded before the next group's scales): few enough that a bad stream stops early, enough that the
# matrix products stay efficient (each one packs the layer's whole input: 32 channels at once cost ~20 % more per
# channel, 64 about the same as all at once). Smaller latents (face crops: 8×8) cost little either way and take
# scales and means in one pass.
Y_CHANNEL_GROUP = 64
GROUPED_POSITIONS = 16 * 16


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


def encode_latents(tables: ModelTables, y: np.ndarray, z: np.ndarray, height: int, width: int,
                   version: int = bitstream.FORMAT_VERSION) -> tuple[tuple[bytes, ...], DecodedSymbols]:
    """The rANS stream(s) of a container of ``version`` for an image of ``height``×``width`` whose padded latents are
    y (M, 4h, 4w) and z (N, h, w), float32; also what was coded (what a decoder must reproduce exactly).

    Version 1: two streams, z and the whole y. Version 2: one stream, z then the y positions that cover the
    image (:func:`facelink.shared.bitstream.coded_latent_shape`); the others are not sent, and their symbols are 0,
    so both sides take the entropy model's mean there."""
    if y.ndim != 3 or z.ndim != 3 or y.shape[0] != tables.M or z.shape[0] != tables.N:
        raise ValueError(f"latent shapes {y.shape}, {z.shape} do not fit model N={tables.N}, M={tables.M}")
    if y.shape[1:] != (4 * z.shape[1], 4 * z.shape[2]):
        raise ValueError(f"y {y.shape} must be 4× the spatial size of z {z.shape}")
    ch, cw = bitstream.coded_latent_shape(height, width, version)
    if ch > y.shape[1] or cw > y.shape[2]:
        raise ValueError(f"a {height}×{width} image needs a latent of at least {ch}×{cw}, got {y.shape[1:]}")
    z_sym = quantize_z(tables, z)
    z_part = (z_sym, z_indexes(z.shape), tables.z.cdfs, tables.z.cdf_lengths, tables.z.offsets)
    idx, means = tables.entropy_parameters(z_sym)
    idx = idx.reshape(means.shape)
    y_sym = np.zeros(means.shape, dtype=np.int64)
    # float32 as CompressAI's torch.round(y - means)
    y_sym[:, :ch, :cw] = np.round(y[:, :ch, :cw].astype(np.float32) - means[:, :ch, :cw]).astype(np.int64)
    y_part = (y_sym[:, :ch, :cw], idx[:, :ch, :cw], tables.y.cdfs, tables.y.cdf_lengths, tables.y.offsets)
    if version == 1:
        streams = (rans.encode_with_indexes(*z_part), rans.encode_with_indexes(*y_part))
    else:
        streams = (rans.encode_parts([z_part, y_part]),)
    return streams, DecodedSymbols(z_sym, idx, means, y_sym, (ch, cw))


@dataclass(frozen=True)
class DecodedSymbols:
    z: np.ndarray  # (N, h, w) hyper-latent symbols
    indexes: np.ndarray  # (M, 4h, 4w) Gaussian scale indexes, from the integer hyper-synthesis
    means: np.ndarray  # (M, 4h, 4w) float32
    y: np.ndarray  # (M, 4h, 4w) latent symbols; 0 outside the coded part
    coded_shape: tuple[int, int]  # the top-left part of y that the container codes

    @property
    def y_hat(self) -> np.ndarray:
        return (self.y.astype(np.float32) + self.means).astype(np.float32)


def decode_symbols(tables: ModelTables, frame: bitstream.Frame) -> DecodedSymbols:
    """Entropy-decode a parsed container; raises BitstreamError (or ModelMismatchError) if it is bad."""
    if frame.model_id != tables.model_id:
        raise ModelMismatchError(f"bitstream made by model {frame.model_id}, this decoder has {tables.model_id}")
    zh, zw = frame.z_shape
    z_shape = (tables.N, zh, zw)
    ch, cw = frame.coded_y_shape
    z_tables = (tables.z.cdfs, tables.z.cdf_lengths, tables.z.offsets)
    y_tables = (tables.y.cdfs, tables.y.cdf_lengths, tables.y.offsets)
    try:
        streams = [rans.StreamDecoder(s) for s in frame.streams]
        # the cheap checks first: a stream too short for the symbols its header claims is refused before any work
        # proportional to that claim (the indexes, the hyper-synthesis)
        n_z, n_y = tables.N * zh * zw, tables.M * ch * cw
        streams[0].check_capacity(n_z, tables.z.cdfs, tables.z.cdf_lengths)
        streams[-1].check_capacity(n_y, tables.y.cdfs, tables.y.cdf_lengths)
        # and one too long for them (version 1: a stream each; versions 2-3: one stream holds both)
        for s, n in zip(streams, (n_z, n_y) if len(streams) == 2 else (n_z + n_y,)):
            s.check_length(n)
        z_sym = streams[0].decode(z_indexes(z_shape), *z_tables).reshape(z_shape)
        if len(streams) == 2:  # version 1: z's own stream is checked whole before the hyper-synthesis
            streams[0].finish()
        m, shape = tables.M, (tables.M, 4 * zh, 4 * zw)
        y_sym = np.zeros(shape, dtype=np.int64)
        if shape[1] * shape[2] < GROUPED_POSITIONS:  # a small latent (a face crop): every parameter in one pass
            params, groups = None, [(0, m)]
            idx, means = tables.entropy_parameters(z_sym)
        else:
            # y's scales by groups of channels, each group's symbols decoded before the next group's scales, the
            # means once every symbol is: a bad stream is refused at its first impossible symbol, before most of the
            # hyper-synthesis' last layer (the bulk of a full frame's entropy decoding)
            params, groups = tables.staged_parameters(z_sym), [(lo, min(m, lo + Y_CHANNEL_GROUP))
                                                               for lo in range(0, m, Y_CHANNEL_GROUP)]
            idx = np.empty(shape, dtype=np.int64)
        for lo, hi in groups:
            if params is not None:
                idx[lo:hi] = params.indexes(lo, hi)
            y_sym[lo:hi, :ch, :cw] = streams[-1].decode(idx[lo:hi, :ch, :cw], *y_tables).reshape(hi - lo, ch, cw)
        streams[-1].finish()
        if params is not None:
            means = params.means()
    except rans.RansError as e:
        # the error's traceback keeps this frame (in a server, until the garbage collector breaks the cycle through
        # the future that carried it): not its large arrays, the hyper-synthesis' columns among them
        params = idx = means = y_sym = None
        raise bitstream.BitstreamError(str(e)) from e
    return DecodedSymbols(z_sym, idx, means, y_sym, (ch, cw))


def decompress_latents(tables: ModelTables, frame: bitstream.Frame) -> np.ndarray:
    """The dequantized latent ŷ (M, 4h, 4w) float32 of a parsed container, the entropy model's means where the
    container codes nothing; raises BitstreamError if bad."""
    return decode_symbols(tables, frame).y_hat
