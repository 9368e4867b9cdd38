"""rANS entropy coder, byte-compatible with CompressAI's ``compressai.ans`` (ryg_rans, 64-bit state).

No torch (the edge encodes with it). ``tests/test_rans.py`` and ``tests/test_rans_native.py`` check that its bytes
equal CompressAI's ``RansEncoder.encode_with_indexes`` on the same symbols and tables, and that CompressAI's
decoder reads what it writes.

The format (CompressAI's): 16-bit CDF precision; each symbol value is offset by its CDF's ``offset``; a value
outside ``[0, cdf_length - 2)`` is coded as the last CDF entry followed by an escape in 4-bit bypass chunks
(count of chunks in unary-ish 4-bit groups, then the chunks of ``raw``). Words are 32-bit little-endian; the
stream starts with the final 64-bit encoder state.

The decoder is bounds-checked and, unlike CompressAI's, verifies that the stream ends exactly where the
encoder began (state back at ``RANS_L``, every word consumed): a wrong table or a damaged stream is reported
as :class:`RansError` instead of decoding to wrong values.

Two backends, the same bytes and the same errors: the native core ``facelink.shared._rans`` (shared/_rans.c, built
by ``pip install``, bounds-checked, GIL released while it codes) when it is importable, else the pure Python loops
below. ``FACELINK_PURE_RANS=1`` in the environment forces pure Python; :data:`BACKEND` says which one is active.
"""
from __future__ import annotations

import os
import struct
from bisect import bisect_right

import numpy as np

try:
    if os.environ.get("FACELINK_PURE_RANS", "") not in ("", "0"):
        raise ImportError("FACELINK_PURE_RANS is set")
    from facelink.shared import _rans as _native
except ImportError:
    _native = None

PRECISION = 16
BYPASS_BITS = 4
MAX_BYPASS = (1 << BYPASS_BITS) - 1
RANS_L = 1 << 31
_MASK32 = 0xFFFFFFFF
# Escaped values must fit in 28 bits: CompressAI's encoder loops forever on wider ones (a 32-bit shift by 32).
_MAX_RAW_CHUNKS = 7
MAX_ESCAPE = (1 << (BYPASS_BITS * _MAX_RAW_CHUNKS)) - 1


_NATIVE = _native
#: "native" (the C core) or "python" (the pure Python loops): which backend codes in this process.
BACKEND = "native" if _native is not None else "python"
_TABLES_MSG = ("cdfs are not 16-bit CDFs (each row rising from 0 to 65536 within its cdf_length, 2 <= cdf_length <= "
               "row width)")


class RansError(ValueError):
    """A rANS stream that cannot have come from these tables: damaged, truncated or the wrong model."""


def set_backend(name: str) -> str:
    """Switch this process to the ``"native"`` or ``"python"`` backend (same bytes; for before/after measurements)
    and return the previous one; ``"native"`` raises RuntimeError where the extension is not built or
    FACELINK_PURE_RANS is set."""
    global _native, BACKEND
    if name not in ("native", "python"):
        raise ValueError(f"rANS backend must be 'native' or 'python', not {name!r}")
    if name == "native" and _NATIVE is None:
        raise RuntimeError("the native rANS core facelink.shared._rans is not available (not built, or "
                           "FACELINK_PURE_RANS is set)")
    previous = BACKEND
    _native, BACKEND = (_NATIVE if name == "native" else None), name
    return previous


# Each coded symbol grows the encoder's state (its words and final state read as one integer) by a factor of at least
# 2^PRECISION / freq · (1 − 2^-14), as the state stays ≥ RANS_L and freq ≤ 2^PRECISION; the integer starts at RANS_L
# and ends below 2^(8·bytes). So n symbols need 8·bytes > n · (PRECISION − log2(max freq) − _BITS_SLACK).
_BITS_SLACK = 1e-4


def max_symbols(n_bytes: int, cdfs, cdf_lengths) -> float:
    """The most symbols a stream of ``n_bytes`` can hold with these tables (inf when a CDF has a slot so wide that
    symbols may cost next to nothing): a stream that claims more is refused before any is decoded."""
    cdfs = _ints(cdfs)
    lengths = _ints(cdf_lengths).reshape(-1)
    if cdfs.ndim != 2 or not len(cdfs) or cdfs.shape[1] < 2:
        return float("inf")
    if _native is not None and len(lengths) == len(cdfs):
        widest = _native.widest_slot(cdfs, lengths)
    else:
        valid = np.arange(cdfs.shape[1] - 1)[None, :] < (lengths[:, None] - 1)
        widest = int(np.where(valid, np.diff(cdfs.astype(np.int64), axis=1), 0).max())
    min_bits = PRECISION - np.log2(max(widest, 1)) - _BITS_SLACK
    return float("inf") if min_bits <= 0 else 8 * n_bytes / min_bits


# The other way round, decoding one symbol takes at most PRECISION bits off the state for its slot (a frequency of at
# least 1) and BYPASS_BITS per bypass chunk (an escape's count and at most _MAX_RAW_CHUNKS chunks), a hair more for
# the state's integer division (< 1e-4 bit per step from a state ≥ RANS_L); reading a word takes none. The state starts
# ≥ RANS_L in a stream an encoder wrote and must end at RANS_L with every word read, so n symbols fill at most
# n · _MAX_SYMBOL_BITS bits beyond the stream's first 64-bit state.
_MAX_SYMBOL_BITS = PRECISION + BYPASS_BITS * (1 + _MAX_RAW_CHUNKS) + 1e-3


def max_bytes(n_symbols: int) -> int:
    """The longest stream ``n_symbols`` symbols can fill, whatever the tables: a longer one is refused before any
    symbol is decoded."""
    return 8 + 4 * int(n_symbols * _MAX_SYMBOL_BITS // 32)


def _ints(a) -> np.ndarray:
    """``a`` as a C-contiguous int32 or int64 array, copied only when it is neither (then as int64)."""
    a = np.asarray(a)
    if a.dtype not in (np.int32, np.int64) or not a.flags.c_contiguous or not a.dtype.isnative:
        a = np.ascontiguousarray(a, dtype=np.int64)
    return a


def _as_tables(cdfs, cdf_lengths, offsets, check_rows: bool = True):
    """The tables as the coders take them; ``check_rows``: refuse CDF lengths outside [2, row width] and rows that
    do not run from 0 to 2^16 (what every coded slot relies on)."""
    cdfs = _ints(cdfs)
    cdf_lengths = _ints(cdf_lengths).reshape(-1)
    offsets = _ints(offsets).reshape(-1)
    if cdfs.ndim != 2 or len(cdfs) != len(cdf_lengths) or len(cdfs) != len(offsets):
        raise ValueError("cdfs must be 2-D with one row per cdf_lengths/offsets entry")
    if check_rows and len(cdfs):
        if cdf_lengths.min() < 2 or cdf_lengths.max() > cdfs.shape[1]:
            raise ValueError(_TABLES_MSG)
        rows = np.arange(len(cdfs))
        if (cdfs[:, 0] != 0).any() or (cdfs[rows, cdf_lengths - 1] != 1 << PRECISION).any():
            raise ValueError(_TABLES_MSG)
    return cdfs, cdf_lengths, offsets


def _check_values(cdfs, cdf_lengths) -> None:
    """Every entry within the rows' lengths in [0, 2^16] (the pure Python decoder's arithmetic relies on it; the
    native one checks the entries it reads)."""
    valid = np.arange(cdfs.shape[1])[None, :] < cdf_lengths[:, None]
    if ((cdfs < 0) | (cdfs > 1 << PRECISION))[valid].any():
        raise ValueError(_TABLES_MSG)


def _coding_terms(symbols, indexes, cdfs, cdf_lengths, offsets):
    """Per symbol: the CDF slot it is coded in (``max_value`` for an escape), that maximum, the escape's raw value
    (0 when none), and the slot's start and frequency at ``PRECISION`` bits."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    indexes = np.asarray(indexes, dtype=np.int64).reshape(-1)
    cdfs, cdf_lengths, offsets = _as_tables(cdfs, cdf_lengths, offsets)
    if symbols.shape != indexes.shape:
        raise ValueError("symbols and indexes must have the same number of elements")
    if len(indexes) and (indexes.min() < 0 or indexes.max() >= len(cdfs)):
        raise ValueError("CDF index out of range")
    value = symbols - offsets[indexes]
    max_value = cdf_lengths[indexes] - 2
    raw = np.zeros_like(value)
    neg = value < 0
    over = value >= max_value
    raw[neg] = -2 * value[neg] - 1
    raw[over] = 2 * (value[over] - max_value[over])
    if len(raw) and (raw.max() > MAX_ESCAPE or raw.min() < 0):  # < 0: int64 wrapped round
        raise ValueError(f"symbol too far outside its CDF's support to code (escape > {MAX_ESCAPE})")
    value = np.where(neg | over, max_value, value)
    start = cdfs[indexes, value].astype(np.int64)
    freq = cdfs[indexes, value + 1] - start
    if len(freq) and ((start < 0) | (freq < 1) | (start + freq > 1 << PRECISION)).any():
        raise ValueError(_TABLES_MSG)
    return value, max_value, raw, start, freq


def _escape_chunks(r: int) -> list[int]:
    """The 4-bit bypass chunks that follow an escaped symbol: the chunk count (in groups of at most
    ``MAX_BYPASS``), then ``r``'s chunks, least significant first."""
    n_bypass = 0
    while (r >> (n_bypass * BYPASS_BITS)) != 0:
        n_bypass += 1
    chunks = []
    v = n_bypass
    while v >= MAX_BYPASS:
        chunks.append(MAX_BYPASS)
        v -= MAX_BYPASS
    chunks.append(v)
    return chunks + [(r >> (j * BYPASS_BITS)) & MAX_BYPASS for j in range(n_bypass)]


def symbol_bits(symbols, indexes, cdfs, cdf_lengths, offsets) -> np.ndarray:
    """Each symbol's ideal code length in bits as :func:`encode_with_indexes` codes it: −log2(freq / 2^16), plus
    the escape's bypass chunks (count, then value, 4 bits each). Their sum is the payload to within the coder's
    flush (≤ 64 bits), so it shows where in a latent the bits go."""
    value, max_value, raw, _, freq = _coding_terms(symbols, indexes, cdfs, cdf_lengths, offsets)
    bits = PRECISION - np.log2(freq.astype(np.float64))
    for i in np.flatnonzero(value == max_value):
        bits[i] += BYPASS_BITS * len(_escape_chunks(int(raw[i])))
    return bits


def encode_with_indexes(symbols, indexes, cdfs, cdf_lengths, offsets) -> bytes:
    """Encode integer ``symbols``, each with the CDF row ``indexes[i]``; same bytes as CompressAI."""
    return encode_parts([(symbols, indexes, cdfs, cdf_lengths, offsets)])


def encode_parts(parts) -> bytes:
    """One rANS stream for several runs of symbols, each ``(symbols, indexes, cdfs, cdf_lengths, offsets)`` with
    its own tables. A :class:`StreamDecoder` reads the parts back in the same order, so a later part's indexes may
    depend on an earlier part's values (y's scales on z). The stream begins with one 64-bit state, not one per
    part. A single part gives exactly CompressAI's ``encode_with_indexes`` bytes."""
    if _native is not None:
        return _native.encode([(_ints(s).reshape(-1), _ints(i).reshape(-1), *_as_tables(c, n, o, check_rows=False))
                               for s, i, c, n, o in parts])
    starts, freqs, shifts = [], [], []
    for part in parts:
        s, f, sh = _coded_slots(*part)
        starts += s
        freqs += f
        shifts += sh
    x = RANS_L
    words = []
    emit = words.append
    for s, f, sh in zip(reversed(starts), reversed(freqs), reversed(shifts)):
        if x >= f << (63 - sh):
            emit(x & _MASK32)
            x >>= 32
        q, r = divmod(x, f)
        x = (q << sh) + r + s
    words.reverse()
    return struct.pack("<II", x & _MASK32, x >> 32) + struct.pack(f"<{len(words)}I", *words)


def _coded_slots(symbols, indexes, cdfs, cdf_lengths, offsets) -> tuple[list[int], list[int], list[int]]:
    """(start, freq, scale_bits) of every coded slot in CompressAI's order; a bypass chunk is a slot of frequency
    1 at 4-bit precision (Rans64EncPutBits is exactly Rans64EncPut with freq 1)."""
    value, max_value, raw, start, freq = _coding_terms(symbols, indexes, cdfs, cdf_lengths, offsets)
    starts = start.tolist()
    freqs = freq.tolist()
    shifts = [PRECISION] * len(starts)
    escapes = np.flatnonzero(value == max_value)
    if not len(escapes):
        return starts, freqs, shifts
    starts_l, freqs_l, shifts_l = [], [], []
    prev = 0
    raw_l = raw.tolist()
    for i in escapes.tolist():
        starts_l += starts[prev : i + 1]
        freqs_l += freqs[prev : i + 1]
        shifts_l += shifts[prev : i + 1]
        prev = i + 1
        chunks = _escape_chunks(raw_l[i])
        starts_l += chunks
        freqs_l += [1] * len(chunks)
        shifts_l += [BYPASS_BITS] * len(chunks)
    return starts_l + starts[prev:], freqs_l + freqs[prev:], shifts_l + shifts[prev:]


def _get_bits(x: int, p: int, words) -> tuple[int, int, int]:
    """Rans64DecGetBits with 4 bits: (value, new state, new word position)."""
    v = x & MAX_BYPASS
    x >>= BYPASS_BITS
    if x < RANS_L:
        if p >= len(words):
            raise RansError("rANS stream ends inside an escape")
        x = (x << 32) | words[p]
        p += 1
    return v, x, p


def decode_with_indexes(data: bytes, indexes, cdfs, cdf_lengths, offsets) -> np.ndarray:
    """Decode ``len(indexes)`` symbols from ``data``; raises :class:`RansError` on any inconsistency."""
    dec = StreamDecoder(data)
    out = dec.decode(indexes, cdfs, cdf_lengths, offsets)
    dec.finish()
    return out


class StreamDecoder:
    """Reads the parts of an :func:`encode_parts` stream in order: :meth:`decode` once per part, then
    :meth:`finish`, which checks that the stream ends exactly where its encoder began."""

    def __init__(self, data: bytes):
        if len(data) % 4 or len(data) < 8:
            raise RansError(f"rANS stream of {len(data)} bytes: not a whole number of 32-bit words, or shorter than 8")
        self.data = bytes(data)
        self.n_words = len(data) // 4
        lo, hi = struct.unpack_from("<II", self.data)
        self.x = lo | (hi << 32)
        self.p = 2
        self._words = None  # the pure Python decoder's words, unpacked on first use

    def decode(self, indexes, cdfs, cdf_lengths, offsets) -> np.ndarray:
        """The next ``len(indexes)`` symbols, each with its CDF row ``indexes[i]`` of these tables."""
        indexes = _ints(indexes).reshape(-1)
        cdfs, cdf_lengths, offsets = _as_tables(cdfs, cdf_lengths, offsets)
        if len(indexes) and (indexes.min() < 0 or indexes.max() >= len(cdfs)):
            raise ValueError("CDF index out of range")
        self.check_capacity(len(indexes), cdfs, cdf_lengths)
        if _native is not None:
            out = np.empty(len(indexes), dtype=np.int64)
            self.x, self.p = _native.decode(self.data, self.x, self.p, indexes, cdfs, cdf_lengths, offsets, out,
                                            RansError)
            return out
        _check_values(cdfs, cdf_lengths)
        if self._words is None:
            self._words = struct.unpack(f"<{self.n_words}I", self.data)
        words, n_words, x, p = self._words, self.n_words, self.x, self.p
        rows = [row[:n].tolist() for row, n in zip(cdfs, cdf_lengths.tolist())]
        max_values = (cdf_lengths - 2).tolist()
        offs = offsets.tolist()
        out = []
        append = out.append
        low = (1 << PRECISION) - 1
        for idx in indexes.tolist():
            cdf = rows[idx]
            cum = x & low
            s = bisect_right(cdf, cum) - 1
            start = cdf[s]
            x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
            if x < RANS_L:
                if p >= n_words:
                    raise RansError("rANS stream ends before all symbols were decoded")
                x = (x << 32) | words[p]
                p += 1
            if s == max_values[idx]:
                # escape: a 4-bit chunk count (values fit 28 bits, so the count is one chunk), then raw's chunks
                n_bypass, x, p = _get_bits(x, p, words)
                if n_bypass > _MAX_RAW_CHUNKS:
                    raise RansError("escaped value wider than 28 bits")
                raw = 0
                for j in range(n_bypass):
                    v, x, p = _get_bits(x, p, words)
                    raw |= v << (j * BYPASS_BITS)
                s = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + s
            append(s + offs[idx])
        self.x, self.p = x, p
        return np.asarray(out, dtype=np.int64)

    def check_capacity(self, n_symbols: int, cdfs, cdf_lengths) -> None:
        """Refuse ``n_symbols`` symbols of these tables when this stream is too short to hold them
        (:func:`max_symbols`): done before any work proportional to a count the stream's header only claims."""
        capacity = max_symbols(4 * self.n_words, cdfs, cdf_lengths)
        if n_symbols > capacity:
            raise RansError(f"a rANS stream of {4 * self.n_words} bytes cannot hold {n_symbols} symbols of these "
                            f"tables (at most {int(capacity)})")

    def check_length(self, n_symbols: int) -> None:
        """Refuse a stream longer than ``n_symbols`` symbols can fill (:func:`max_bytes`): all the symbols it holds,
        every part included, before any is decoded."""
        if 4 * self.n_words > max_bytes(n_symbols):
            raise RansError(f"a rANS stream of {4 * self.n_words} bytes is longer than {n_symbols} symbols can fill "
                            f"(at most {max_bytes(n_symbols)} bytes)")

    def finish(self) -> None:
        if self.x != RANS_L or self.p != self.n_words:
            raise RansError("rANS stream does not end where its encoder began: damaged stream or wrong model tables")
