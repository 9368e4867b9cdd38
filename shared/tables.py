"""Model tables: everything edge and cloud must agree on to entropy-code a latent, in one versioned artifact.

``tables.npz`` holds the factorized prior's CDFs for the hyper-latent z, the Gaussian conditional's CDFs and
scale table for y, and the integer hyper-synthesis (:mod:`facelink.shared.hyper_int`); a variable-rate model's
also hold its gain table (``vr_log_gains``: K × M natural logs of the per-channel gains the edge multiplies the
latent by before quantisation, :meth:`ModelTables.gain`). The model id is a content hash of those arrays (not of
the zip file, whose bytes carry timestamps), so two artifacts with the same id code identically.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelink.shared.hyper_int import IntHyperSynthesis, IntLayer, scale_indexes

TABLES_FORMAT = "facelink-tables-v1"
MODEL_ID_BYTES = 8
# Latent geometry of the hyperprior family: y is the image downsampled 16×, z a further 4×.
Y_STRIDE = 16
Z_STRIDE = 64


class TablesError(ValueError):
    pass


@dataclass(frozen=True)
class EntropyTables:
    cdfs: np.ndarray  # int32 (K, L)
    cdf_lengths: np.ndarray  # int32 (K,)
    offsets: np.ndarray  # int32 (K,)


@dataclass(frozen=True)
class ModelTables:
    meta: dict  # architecture, N, M, frac_bits, format
    z: EntropyTables  # one CDF per hyper-latent channel
    y: EntropyTables  # one CDF per scale-table entry
    scale_thresholds: np.ndarray  # int64 (len(scale_table) - 1,)
    hyper: IntHyperSynthesis
    model_id: str  # hex, MODEL_ID_BYTES bytes
    log_gains: np.ndarray | None = None  # float32 (K, M) for a variable-rate model, else None

    @property
    def variable_rate(self) -> bool:
        return self.log_gains is not None

    @property
    def qualities(self) -> int:
        """K, the number of integer qualities of a variable-rate model (1 for a fixed-rate one)."""
        return 1 if self.log_gains is None else int(self.log_gains.shape[0])

    def gain(self, quality: float) -> np.ndarray:
        """The per-channel gain (M,) float32 at a continuous quality in [0, K-1]: exponential interpolation
        between the neighbouring integer qualities' gains (as the torch model's)."""
        if self.log_gains is None:
            raise TablesError("a fixed-rate model has no gains")
        k = self.qualities
        q = float(quality)
        if not (0.0 <= q <= k - 1):
            raise ValueError(f"quality must lie in [0, {k - 1}], got {quality}")
        lo = min(int(np.floor(q)), k - 2)
        t = q - lo
        logs = self.log_gains.astype(np.float64)
        return np.exp((1.0 - t) * logs[lo] + t * logs[lo + 1]).astype(np.float32)

    @property
    def N(self) -> int:
        return int(self.meta["N"])

    @property
    def M(self) -> int:
        return int(self.meta["M"])

    def entropy_parameters(self, z_symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scale indexes, means as float32) for y, from the hyper-latent symbols; identical everywhere."""
        return self.staged_parameters(z_symbols).all()

    def staged_parameters(self, z_symbols: np.ndarray) -> StagedParameters:
        """The same parameters computed by groups of y's channels on demand (a decoder's, which can stop early)."""
        return StagedParameters(self, z_symbols)

    @property
    def model_id_bytes(self) -> bytes:
        return bytes.fromhex(self.model_id)


class StagedParameters:
    """y's entropy parameters from the hyper-latent symbols, by groups of channels: the hyper-synthesis up to its last
    layer at once, then that layer's scale channels as asked (:meth:`indexes`) and its mean channels last
    (:meth:`means`). The same integers as :meth:`ModelTables.entropy_parameters` whatever the grouping; a decoder
    that finds a stream bad in y's first channels has not paid for the rest (nor for the means)."""

    def __init__(self, tables: ModelTables, z_symbols: np.ndarray):
        self._last = tables.hyper.last_layer(z_symbols)
        self._m = tables.M
        self._thresholds = tables.scale_thresholds
        self._frac_bits = tables.hyper.frac_bits

    def indexes(self, lo: int, hi: int) -> np.ndarray:
        """The scale indexes of y's channels ``lo`` to ``hi``: int64 (hi − lo, 4h, 4w)."""
        if not 0 <= lo <= hi <= self._m:
            raise ValueError(f"channels {lo}..{hi} outside y's {self._m}")
        return scale_indexes(self._last(lo, hi).astype(np.int64), self._thresholds)

    def means(self) -> np.ndarray:
        """The means of every channel of y: float32 (M, 4h, 4w)."""
        return self._means(self._last(self._m, 2 * self._m))

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale indexes, means) of every channel, from one product (the cheapest when nothing may stop early)."""
        out = self._last()
        return scale_indexes(out[: self._m].astype(np.int64), self._thresholds), self._means(out[self._m :])

    def _means(self, fixed_point: np.ndarray) -> np.ndarray:
        return (fixed_point.astype(np.int64).astype(np.float64) / float(1 << self._frac_bits)).astype(np.float32)


def _arrays(meta: dict, z: EntropyTables, y: EntropyTables, thresholds: np.ndarray,
            hyper: IntHyperSynthesis, log_gains: np.ndarray | None = None) -> dict[str, np.ndarray]:
    arrays = {
        "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
        "z_cdfs": z.cdfs.astype(np.int32), "z_cdf_lengths": z.cdf_lengths.astype(np.int32),
        "z_offsets": z.offsets.astype(np.int32), "z_medians_fixed": hyper.z_medians.astype(np.int64),
        "y_cdfs": y.cdfs.astype(np.int32), "y_cdf_lengths": y.cdf_lengths.astype(np.int32),
        "y_offsets": y.offsets.astype(np.int32), "y_scale_thresholds": thresholds.astype(np.int64),
    }
    if log_gains is not None:  # absent for fixed-rate models, whose ids are unchanged by this key's existence
        arrays["vr_log_gains"] = np.asarray(log_gains, dtype=np.float32)
    for i, L in enumerate(hyper.layers):
        arrays[f"hs{i}_weight"] = L.weight.astype(np.int32)  # canonical dtype for the hash; stored as int16
        arrays[f"hs{i}_bias"] = L.bias.astype(np.int64)
        arrays[f"hs{i}_config"] = np.array(
            [{"conv": 0, "deconv": 1}[L.kind], L.shift, L.stride, L.padding, L.output_padding, int(L.relu)],
            dtype=np.int64)
    return arrays


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(TABLES_FORMAT.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[: 2 * MODEL_ID_BYTES]


def build(meta: dict, z: EntropyTables, y: EntropyTables, thresholds: np.ndarray,
          hyper: IntHyperSynthesis, log_gains: np.ndarray | None = None) -> ModelTables:
    meta = dict(meta, format=TABLES_FORMAT, frac_bits=hyper.frac_bits)
    if log_gains is not None:
        log_gains = np.asarray(log_gains, dtype=np.float32)
        if log_gains.ndim != 2 or log_gains.shape[0] < 2 or log_gains.shape[1] != int(meta["M"]):
            raise TablesError(f"gain table must be K × M (K ≥ 2, M = {meta['M']}), got {log_gains.shape}")
    model_id = content_hash(_arrays(meta, z, y, thresholds, hyper, log_gains))
    return ModelTables(meta, z, y, np.asarray(thresholds, dtype=np.int64), hyper, model_id, log_gains)


def _stored(name: str, a: np.ndarray) -> np.ndarray:
    """How an array lies in the file: hyper-synthesis weights (|w| ≤ 2**14) as int16, everything else as is.
    Storage only: :func:`content_hash` always sees the canonical dtypes of :func:`_arrays`."""
    if name.endswith("_weight") and a.size and np.abs(a).max() <= np.iinfo(np.int16).max:
        return a.astype(np.int16)
    return a


def _canonical(name: str, a: np.ndarray) -> np.ndarray:
    return a.astype(np.int32) if name.endswith("_weight") else a


def save(tables: ModelTables, path: str | Path) -> None:
    arrays = _arrays(tables.meta, tables.z, tables.y, tables.scale_thresholds, tables.hyper, tables.log_gains)
    np.savez_compressed(path, **{k: _stored(k, a) for k, a in arrays.items()})


def load(path: str | Path) -> ModelTables:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: _canonical(k, f[k]) for k in f.files}
    except (OSError, ValueError) as e:
        raise TablesError(f"cannot read model tables {path}: {e}") from e
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("format") != TABLES_FORMAT:
            raise TablesError(f"{path}: tables format {meta.get('format')!r}, this facelink reads {TABLES_FORMAT!r}")
        layers = []
        i = 0
        while f"hs{i}_weight" in arrays:
            kind, shift, stride, pad, opad, relu = arrays[f"hs{i}_config"].tolist()
            layers.append(IntLayer(("conv", "deconv")[kind], arrays[f"hs{i}_weight"].astype(np.int64),
                                   arrays[f"hs{i}_bias"],
                                   shift, stride, pad, opad, bool(relu)))
            i += 1
        hyper = IntHyperSynthesis(tuple(layers), int(meta["frac_bits"]), arrays["z_medians_fixed"])
        z = EntropyTables(arrays["z_cdfs"], arrays["z_cdf_lengths"], arrays["z_offsets"])
        y = EntropyTables(arrays["y_cdfs"], arrays["y_cdf_lengths"], arrays["y_offsets"])
    except KeyError as e:
        raise TablesError(f"{path}: model tables lack {e}") from e
    return ModelTables(meta, z, y, arrays["y_scale_thresholds"], hyper, content_hash(arrays),
                       arrays.get("vr_log_gains"))
