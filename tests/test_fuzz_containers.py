"""Property-based fuzzing (hypothesis) of what the server runs on every frame before synthesis: the container parser,
the rANS decoder and the entropy decoding of latents. A bounded, reproducible run (derandomized); the long run is
``python -m facelink.benchmarks.fuzz_containers`` (make fuzz), with the same property, check_container.

The property: bytes are either refused with BitstreamError (RansError for the bare rANS decoder) or accepted, and
then they re-pack to the same bytes and decode to a finite latent of the model's shape."""
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from facelink.benchmarks.fuzz_containers import check_container, golden_seeds, load_tables, with_crc
from facelink.shared import bitstream, rans


def bounded(examples: int) -> settings:
    """A reproducible run of ``examples`` examples, no example database, no per-example time limit."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


SEEDS = golden_seeds()
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="facelink-hypothesis-"))  # its caches stay out of the checkout


@pytest.fixture(scope="module")
def tables():
    return load_tables()


def _check(data, tables):
    assert check_container(data, tables) in ("refused_parse", "unknown_model", "over_pixel_budget", "refused_decode",
                                             "decoded")


@bounded(1500)
@given(data=st.one_of(st.binary(max_size=64),
                      st.tuples(st.sampled_from([0, 1, 2, 3, 255]), st.binary(max_size=48)).map(
                          lambda t: bitstream.MAGIC + bytes([t[0]]) + t[1])),
       fix_crc=st.booleans())
def test_arbitrary_bytes_are_refused_or_canonical(tables, data, fix_crc):
    _check(with_crc(data) if fix_crc else data, tables)


@bounded(400)
@given(seed=st.sampled_from(range(len(SEEDS))),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10_000)), fix_crc=st.booleans())
def test_damaged_golden_containers_are_refused_or_decode(tables, seed, edits, cut, fix_crc):
    """Bytes of a real container (either version, a crop and a full frame) overwritten, and maybe cut short; with the
    CRC recomputed the damage reaches the rANS stream and the integer hyper-synthesis."""
    body = bytearray(SEEDS[seed][:-4])
    for pos, value in edits:
        body[pos % len(body)] = value
    if cut is not None:
        del body[cut % (len(body) + 1):]
    _check(with_crc(bytes(body)) if fix_crc else bytes(body) + SEEDS[seed][-4:], tables)


@bounded(300)
@given(seed=st.sampled_from(range(len(SEEDS))), header=st.binary(min_size=1, max_size=24),
       at=st.integers(3, 24))
def test_rewritten_headers_with_valid_crc(tables, seed, header, at):
    """Version, template, model id and size fields rewritten (the CRC made right), the payload kept."""
    old = SEEDS[seed][:-4]
    _check(with_crc(old[:at] + header + old[at + len(header):]), tables)


@bounded(1000)
@given(stream=st.binary(max_size=200), indexes=st.lists(st.integers(0, 63), max_size=300))
def test_rans_decoder_refuses_or_decodes_any_stream(tables, stream, indexes):
    t = next(iter(tables.values())).y
    idx = np.asarray(indexes, dtype=np.int64) % len(t.cdfs)
    try:
        out = rans.decode_with_indexes(stream, idx, t.cdfs, t.cdf_lengths, t.offsets)
    except rans.RansError:
        return
    assert out.shape == (len(idx),) and out.dtype == np.int64
    # what decodes is what the encoder would write for those symbols: the stream is canonical
    assert rans.encode_with_indexes(out, idx, t.cdfs, t.cdf_lengths, t.offsets) == stream


def test_every_seed_decodes(tables):
    assert {check_container(s, tables) for s in SEEDS} == {"decoded"}
    assert all(struct.unpack("<I", s[-4:])[0] == zlib.crc32(s[:-4]) for s in SEEDS)


@bounded(200)
@given(part=st.sampled_from(["z", "y"]), n=st.integers(1, 3000), spread=st.floats(0.0, 40.0), seed=st.integers(0, 99))
def test_symbol_capacity_bound_never_refuses_a_real_stream(tables, part, n, spread, seed):
    """The bound that refuses impossible claims before decoding holds for every stream the encoder writes, down to
    the most probable symbols (spread 0: the cheapest stream of n symbols)."""
    t = getattr(next(iter(tables.values())), part)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t.cdfs), n)
    peak = np.array([np.argmax(np.diff(t.cdfs[i, : t.cdf_lengths[i]])) for i in idx]) + t.offsets[idx]
    symbols = peak + np.round(rng.normal(scale=spread, size=n)).astype(np.int64)
    stream = rans.encode_with_indexes(symbols, idx, t.cdfs, t.cdf_lengths, t.offsets)
    assert n <= rans.max_symbols(len(stream), t.cdfs, t.cdf_lengths)
    assert np.array_equal(rans.decode_with_indexes(stream, idx, t.cdfs, t.cdf_lengths, t.offsets), symbols)


def test_a_few_bytes_claiming_a_huge_latent_are_refused_before_decoding(tables):
    """16 bytes cannot hold the hyper-latent of a 65535×65535 image (64 × 1024 × 1024 symbols) with a rate point's
    tables: refused before a symbol is decoded. The variable-rate face-v2's hyper-latent has near-certain slots, so
    no stream length bounds its symbols; for it the pixel budget read from the header is the guard
    (tests/test_rans.py, facelink decode --max-pixels; the server's --max-pixels)."""
    import math

    stream = b"\x00\x00\x00\x80\x00\x00\x00\x00" + b"\x01\x02\x03\x04" * 2
    unbounded = {mid for mid, m in tables.items() if not math.isfinite(rans.max_symbols(len(stream), m.z.cdfs,
                                                                                       m.z.cdf_lengths))}
    assert all(tables[mid].variable_rate for mid in unbounded) and len(unbounded) < len(tables)
    for t in (m.z for mid, m in tables.items() if mid not in unbounded):
        capacity = rans.max_symbols(len(stream), t.cdfs, t.cdf_lengths)
        assert capacity < 64 * 1024 * 1024
        with pytest.raises(rans.RansError, match=f"cannot hold {int(capacity) + 1} symbols"):
            rans.StreamDecoder(stream).decode(np.zeros(int(capacity) + 1, dtype=np.int64), t.cdfs, t.cdf_lengths,
                                              t.offsets)
