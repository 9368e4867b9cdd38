"""The native rANS core (shared/_rans.c) against the pure Python coder and CompressAI: the same bytes, the same
symbols, the same errors on damaged and hostile streams, and no out-of-bounds read for any argument."""
import contextlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facelink.shared import rans

native = rans._native
pytestmark = pytest.mark.skipif(native is None, reason="facelink.shared._rans is not built (no C compiler at install, "
                                "or FACELINK_PURE_RANS is set): the pure Python coder is in use")


@contextlib.contextmanager
def pure_python():
    """rans with its native core switched off for the duration."""
    previous = rans.set_backend("python")
    try:
        yield
    finally:
        rans.set_backend(previous)


def both(fn):
    """fn() under each backend: ("ok", result) or ("error", exception type, message)."""
    outcomes = []
    for python in (False, True):
        with pure_python() if python else contextlib.nullcontext():
            try:
                r = fn()
                outcomes.append(("ok", r.tolist() if isinstance(r, np.ndarray) else r))
            except ValueError as e:
                outcomes.append(("error", type(e), str(e)))
    return outcomes


def random_tables(rng, rows=12, width=40, min_length=3, dtype=np.int32):
    """Valid 16-bit CDF rows of random lengths (padding after each row's length), random offsets."""
    cdfs = np.zeros((rows, width), dtype=dtype)
    lengths = rng.integers(min_length, width + 1, rows).astype(dtype)
    for k, n in enumerate(lengths):
        freqs = 1 + rng.multinomial((1 << 16) - (n - 1), rng.dirichlet(np.full(n - 1, 0.5)))
        cdfs[k, 1:n] = np.cumsum(freqs)
        cdfs[k, n:] = rng.integers(0, 1 << 17, width - n)  # padding: never read
    offsets = rng.integers(-30, 5, rows).astype(dtype)
    return cdfs, lengths, offsets


def random_symbols(rng, tables, n, spread=1.0):
    cdfs, lengths, offsets = tables
    idx = rng.integers(0, len(cdfs), n)
    span = (lengths[idx] - 2).astype(np.int64)
    sym = np.round(rng.normal(span / 2, span * spread / 3 + 0.5)).astype(np.int64) + offsets[idx]
    if n >= 8:  # escapes both ways, and the widest escapable values
        sym[:8] = [offsets[idx[0]] - 1, offsets[idx[1]] + span[1], 10**6, -(10**6), 2**26, -(2**26),
                   offsets[idx[6]] + span[6] + (rans.MAX_ESCAPE >> 1), offsets[idx[7]] - 1 - (rans.MAX_ESCAPE >> 1)]
    return sym, idx


def test_backend_is_reported_and_can_be_forced_off():
    assert rans.BACKEND == "native"
    with pure_python():
        assert rans.BACKEND == "python" and rans._native is None
    assert rans.BACKEND == "native" and rans._native is native
    with pytest.raises(ValueError):
        rans.set_backend("fast")
    code = "from facelink.shared import rans; print(rans.BACKEND, rans._native)"
    env = dict(os.environ, FACELINK_PURE_RANS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["python", "None"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_bytes_equal_python_and_compressai(seed, dtype):
    from compressai.ans import RansDecoder, RansEncoder

    rng = np.random.default_rng(seed)
    tables = random_tables(rng, dtype=dtype)
    sym, idx = random_symbols(rng, tables, int(rng.integers(50, 3000)), spread=[0.3, 1, 3][seed % 3])
    data = rans.encode_with_indexes(sym, idx, *tables)
    with pure_python():
        assert rans.encode_with_indexes(sym, idx, *tables) == data
    lists = [t.tolist() for t in tables]
    assert RansEncoder().encode_with_indexes(sym.tolist(), idx.tolist(), *lists) == data
    np.testing.assert_array_equal(rans.decode_with_indexes(data, idx, *tables), sym)
    np.testing.assert_array_equal(RansDecoder().decode_with_indexes(data, idx.tolist(), *lists), sym)


def test_multi_part_and_empty_streams():
    rng = np.random.default_rng(7)
    parts = []
    for n in (0, 300, 0, 5, 2000, 1):
        tables = random_tables(rng, rows=int(rng.integers(1, 9)), width=int(rng.integers(2, 60)), min_length=2)
        parts.append((*random_symbols(rng, tables, n), *tables))
    for chosen in (parts, parts[:1], [], [parts[3]]):
        data = rans.encode_parts(chosen)
        with pure_python():
            assert rans.encode_parts(chosen) == data
        for python in (False, True):
            with pure_python() if python else contextlib.nullcontext():
                dec = rans.StreamDecoder(data)
                for sym, idx, *tables in chosen:
                    np.testing.assert_array_equal(dec.decode(idx, *tables), sym)
                dec.finish()
    assert rans.encode_parts([]) == rans.encode_with_indexes([], [], *parts[1][2:]) == b"\x00\x00\x00\x80\0\0\0\0"


def test_argument_errors_match():
    rng = np.random.default_rng(3)
    tables = random_tables(rng)
    sym, idx = random_symbols(rng, tables, 100)
    cdfs, lengths, offsets = tables
    bad_row = cdfs.copy()
    bad_row[2, lengths[2] - 1] = 60000
    non_monotone = cdfs.copy()
    non_monotone[idx[20], sym[20] - offsets[idx[20]] + 1] = 0
    cases = [
        lambda: rans.encode_with_indexes(sym, idx[:-1], *tables),
        lambda: rans.encode_with_indexes(sym, idx + len(cdfs), *tables),
        lambda: rans.encode_with_indexes(sym, -idx - 1, *tables),
        lambda: rans.encode_with_indexes([2**40], [0], *tables),
        lambda: rans.encode_with_indexes([-(2**63)], [0], *tables),
        lambda: rans.encode_with_indexes(sym, idx, bad_row, lengths, offsets),
        lambda: rans.encode_with_indexes(sym, idx, non_monotone, lengths, offsets),
        lambda: rans.encode_with_indexes(sym, idx, cdfs, np.minimum(lengths + 100, 1000), offsets),
        lambda: rans.encode_with_indexes(sym, idx, cdfs, lengths * 0 + 1, offsets),
        lambda: rans.encode_with_indexes(sym, idx, cdfs[:, :, None], lengths, offsets),
        lambda: rans.encode_with_indexes(sym, idx, cdfs, lengths[:-1], offsets),
        lambda: rans.decode_with_indexes(b"\0" * 64, idx + 100, *tables),
        lambda: rans.decode_with_indexes(b"\0" * 64, idx, bad_row, lengths, offsets),
    ]
    for case in cases:
        outcome = both(case)
        assert outcome[0][0] == "error" and outcome[0] == outcome[1], outcome


def test_damaged_streams_fail_alike():
    rng = np.random.default_rng(11)
    tables = random_tables(rng, rows=20, width=64)
    sym, idx = random_symbols(rng, tables, 1500, spread=2)
    data = rans.encode_with_indexes(sym, idx, *tables)
    damaged = [data[:-4], data[:-1], data[:8], data + b"\0" * 4, b"", b"\0" * 4]
    for _ in range(200):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        damaged.append(bytes(b))
        damaged.append(bytes(b[: int(rng.integers(0, len(b) // 4)) * 4]))
        damaged.append(rng.integers(0, 256, 4 * int(rng.integers(2, 40)), dtype=np.uint8).tobytes())
    messages = set()
    for d in damaged:
        outcome = both(lambda d=d: rans.decode_with_indexes(d, idx, *tables))
        assert outcome[0] == outcome[1]
        messages.add(outcome[0][2] if outcome[0][0] == "error" else "ok")
    assert {rans.RansError} == {type for kind, type, *_ in
                                (both(lambda d=d: rans.decode_with_indexes(d, idx, *tables))[0] for d in damaged[:8])}
    assert len(messages) >= 3  # the decoder's different refusals were all reached, by both backends


def _escape_heavy_tables():
    """Two-entry rows: every symbol is an escape, so random bytes run through the bypass paths."""
    cdfs = np.array([[0, 65536, 0], [0, 1, 65536]], dtype=np.int32)
    return cdfs, np.array([2, 3], dtype=np.int32), np.array([0, -1], dtype=np.int32)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=120), picks=st.lists(st.integers(0, 1), min_size=0, max_size=40),
       split=st.integers(0, 40))
def test_hostile_bytes_decode_alike(data, picks, split):
    """Any bytes, any split into two parts: both backends give the same symbols or the same RansError."""
    tables = _escape_heavy_tables()
    idx = np.array(picks, dtype=np.int64)

    def run():
        dec = rans.StreamDecoder(data)
        a = dec.decode(idx[:split], *tables)
        b = dec.decode(idx[split:], *tables)
        dec.finish()
        return np.concatenate([a, b])

    outcome = both(run)
    assert outcome[0] == outcome[1]
    assert outcome[0][0] == "ok" or issubclass(outcome[0][1], rans.RansError)


def test_the_c_entry_points_refuse_bad_arguments():
    """Called directly, whatever the Python layer would have caught: ValueError/TypeError, never a bad read."""
    cdfs, lengths, offsets = _escape_heavy_tables()
    idx = np.zeros(4, dtype=np.int64)
    out = np.zeros(4, dtype=np.int64)
    data = b"\0\0\0\x80\0\0\0\0" + b"\xff" * 16
    bad_calls = [
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, offsets, out[:3], rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, offsets, out.astype(np.int32), rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, offsets, out.astype(np.float64), rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, offsets, bytes(32), rans.RansError),
        lambda: native.decode(data, 2**31, 99, idx, cdfs, lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**31, -1, idx, cdfs, lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, -1, 2, idx, cdfs, lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**64, 2, idx, cdfs, lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx + 2, cdfs, lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs[:, ::2], lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs.ravel(), lengths, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths + 1, offsets, out, rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, offsets[:1], out, rans.RansError),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, offsets, out, "not a class"),
        lambda: native.decode(data, 2**31, 2, idx, cdfs, lengths, np.full(2, 2**62), out, rans.RansError),
        lambda: native.encode([(idx, idx, cdfs, lengths)]),
        lambda: native.encode([(idx, idx[:2], cdfs, lengths, offsets)]),
        lambda: native.encode([(idx.astype(np.uint64), idx, cdfs, lengths, offsets)]),
        lambda: native.encode([(idx, idx.astype(np.int16), cdfs, lengths, offsets)]),
        lambda: native.encode(None),
        lambda: native.encode([None]),
        lambda: native.widest_slot(cdfs, lengths[:1]),
    ]
    for call in bad_calls:
        with pytest.raises((ValueError, TypeError, OverflowError)):
            call()
    # an offset that overflows int64 on a decoded escape: refused, not wrapped
    data = rans.encode_with_indexes([1], [0], cdfs, lengths, offsets)
    x = int.from_bytes(data[:8], "little")
    big = np.array([2**63 - 1, 2**63 - 1], dtype=np.int64)
    with pytest.raises(ValueError, match="int64"):
        native.decode(data, x, 2, idx[:1], cdfs, lengths, big, out[:1], rans.RansError)


def test_threads_decode_in_parallel_to_the_same_symbols():
    """The GIL is released while a stream decodes; concurrent decoders do not disturb each other."""
    rng = np.random.default_rng(5)
    jobs = []
    for _ in range(8):
        tables = random_tables(rng, rows=30, width=200)
        sym, idx = random_symbols(rng, tables, 20000, spread=1.5)
        jobs.append((rans.encode_with_indexes(sym, idx, *tables), sym, idx, tables))
    results = [None] * len(jobs)

    def work(j):
        data, _, idx, tables = jobs[j]
        results[j] = [rans.decode_with_indexes(data, idx, *tables) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (_, sym, _, _), decoded in zip(jobs, results):
        for d in decoded:
            np.testing.assert_array_equal(d, sym)
