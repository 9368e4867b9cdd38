"""The numpy rANS coder writes CompressAI's bytes and reads CompressAI's streams."""
import numpy as np
import pytest
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.google import get_scale_table

from facelink.shared import rans


@pytest.fixture(scope="module")
def gaussian_tables():
    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    return gc._quantized_cdf.numpy(), gc._cdf_length.numpy(), gc._offset.numpy()


@pytest.fixture(scope="module")
def factorized_tables():
    torch.manual_seed(3)
    eb = EntropyBottleneck(16)
    with torch.no_grad():
        eb.quantiles.add_(torch.randn_like(eb.quantiles) * 0.5)
    eb.update(force=True)
    return eb._quantized_cdf.numpy(), eb._cdf_length.numpy(), eb._offset.numpy()


def _vectors(tables, seed, n=4000, spread=1.0):
    cdfs, lengths, offsets = tables
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(cdfs), n)
    span = (lengths[idx] - 2) * spread
    sym = np.round(rng.normal(0, span / 4 + 0.5)).astype(np.int64) + offsets[idx] + (lengths[idx] - 2) // 2
    sym[:6] = [offsets[idx[0]] - 1, offsets[idx[1]] + lengths[idx[1]] - 2, 10**6, -(10**6), 2**26, -(2**26)]
    return sym, idx


@pytest.mark.parametrize("seed,spread", [(0, 1.0), (1, 2.5), (2, 0.2)])
def test_bytes_equal_compressai_gaussian(gaussian_tables, seed, spread):
    cdfs, lengths, offsets = gaussian_tables
    sym, idx = _vectors(gaussian_tables, seed, spread=spread)
    ref = RansEncoder().encode_with_indexes(
        sym.tolist(), idx.tolist(), cdfs.tolist(), lengths.tolist(), offsets.tolist()
    )
    assert rans.encode_with_indexes(sym, idx, cdfs, lengths, offsets) == ref
    # each side reads the other's stream
    np.testing.assert_array_equal(rans.decode_with_indexes(ref, idx, cdfs, lengths, offsets), sym)
    back = RansDecoder().decode_with_indexes(ref, idx.tolist(), cdfs.tolist(), lengths.tolist(), offsets.tolist())
    np.testing.assert_array_equal(back, sym)


def test_bytes_equal_compressai_factorized(factorized_tables):
    cdfs, lengths, offsets = factorized_tables
    sym, idx = _vectors(factorized_tables, 7, n=3000, spread=1.5)
    ref = RansEncoder().encode_with_indexes(
        sym.tolist(), idx.tolist(), cdfs.tolist(), lengths.tolist(), offsets.tolist()
    )
    assert rans.encode_with_indexes(sym, idx, cdfs, lengths, offsets) == ref


def test_short_inputs(gaussian_tables):
    cdfs, lengths, offsets = gaussian_tables
    # CompressAI's encoder sizes its output buffer at one word per symbol and writes past it for fewer than
    # about three symbols (heap corruption), so tiny inputs are checked on our side only
    for sym, idx in (([], []), ([0], [5]), ([-40], [0])):
        data = rans.encode_with_indexes(sym, idx, cdfs, lengths, offsets)
        np.testing.assert_array_equal(rans.decode_with_indexes(data, idx, cdfs, lengths, offsets), sym)
    sym, idx = [0, 3, -2, 1000, 0, 0, 1, -1], [5, 20, 7, 3, 0, 63, 40, 10]
    ref = RansEncoder().encode_with_indexes(sym, idx, cdfs.tolist(), lengths.tolist(), offsets.tolist())
    assert rans.encode_with_indexes(sym, idx, cdfs, lengths, offsets) == ref


def test_damage_is_reported_not_decoded(gaussian_tables):
    cdfs, lengths, offsets = gaussian_tables
    sym, idx = _vectors(gaussian_tables, 11)
    data = rans.encode_with_indexes(sym, idx, cdfs, lengths, offsets)
    with pytest.raises(rans.RansError):
        rans.decode_with_indexes(data[:-4], idx, cdfs, lengths, offsets)
    with pytest.raises(rans.RansError):
        rans.decode_with_indexes(data[:-1], idx, cdfs, lengths, offsets)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(rans.RansError):
        rans.decode_with_indexes(bytes(flipped), idx, cdfs, lengths, offsets)
    # wrong tables: shifting every index by one
    with pytest.raises(rans.RansError):
        rans.decode_with_indexes(data, np.minimum(idx + 1, len(cdfs) - 1), cdfs, lengths, offsets)
    rng = np.random.default_rng(0)
    for _ in range(20):
        garbage = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        with pytest.raises(rans.RansError):
            rans.decode_with_indexes(garbage, idx[:200], cdfs, lengths, offsets)


def test_unencodable_escape_is_refused(gaussian_tables):
    cdfs, lengths, offsets = gaussian_tables
    with pytest.raises(ValueError, match="escape"):
        rans.encode_with_indexes([2**29], [3], cdfs, lengths, offsets)


@pytest.mark.parametrize("seed,spread", [(0, 1.0), (4, 2.5)])
def test_symbol_bits_add_up_to_the_stream(gaussian_tables, seed, spread):
    """Per-symbol code lengths (escapes included) sum to the coded size, to within the final state's flush."""
    sym, idx = _vectors(gaussian_tables, seed, spread=spread)
    bits = rans.symbol_bits(sym, idx, *gaussian_tables)
    assert bits.shape == sym.shape and (bits > 0).all()
    coded = 8 * len(rans.encode_with_indexes(sym, idx, *gaussian_tables))
    assert coded - 64 <= bits.sum() <= coded + 32
    assert bits[2] > bits[10:].max()  # an escaped value costs its bypass chunks on top


def test_one_stream_for_two_parts_reads_back_in_order(gaussian_tables, factorized_tables):
    """z and y in one stream (container version 2): the bytes are CompressAI's for the two runs coded as one with
    both tables side by side, and the parts decode in order, each with its own tables."""
    z_sym, z_idx = _vectors(factorized_tables, 11, n=256)
    y_sym, y_idx = _vectors(gaussian_tables, 12, n=3000)
    data = rans.encode_parts([(z_sym, z_idx, *factorized_tables), (y_sym, y_idx, *gaussian_tables)])
    (fc, fl, fo), (gc, gl, go) = factorized_tables, gaussian_tables
    width = max(fc.shape[1], gc.shape[1])
    both = np.zeros((len(fc) + len(gc), width), dtype=np.int64)
    both[: len(fc), : fc.shape[1]] = fc
    both[len(fc) :, : gc.shape[1]] = gc
    ref = RansEncoder().encode_with_indexes(
        np.concatenate([z_sym, y_sym]).tolist(),
        np.concatenate([z_idx, y_idx + len(fc)]).tolist(),
        both.tolist(),
        np.concatenate([fl, gl]).tolist(),
        np.concatenate([fo, go]).tolist(),
    )
    assert data == ref
    assert len(data) < len(rans.encode_with_indexes(z_sym, z_idx, *factorized_tables)) + len(
        rans.encode_with_indexes(y_sym, y_idx, *gaussian_tables)
    )
    dec = rans.StreamDecoder(data)
    np.testing.assert_array_equal(dec.decode(z_idx, *factorized_tables), z_sym)
    np.testing.assert_array_equal(dec.decode(y_idx, *gaussian_tables), y_sym)
    dec.finish()
    # stopping early, or reading a part with the other part's tables, is an error, not wrong values
    early = rans.StreamDecoder(data)
    early.decode(z_idx, *factorized_tables)
    with pytest.raises(rans.RansError):
        early.finish()
    with pytest.raises((rans.RansError, ValueError)):
        wrong = rans.StreamDecoder(data)
        wrong.decode(z_idx % len(gc), *gaussian_tables)
        wrong.decode(y_idx, *gaussian_tables)
        wrong.finish()


def test_a_huge_claim_is_refused_before_work_proportional_to_it(monkeypatch):
    """decode_symbols checks that the streams can hold the symbols the header claims before it builds the hyper-latent's
    indexes or runs the hyper-synthesis: a 65535×65535 claim in a few bytes costs nothing. That bound needs tables
    without a near-certain slot (a rate point's hyper-latent); where one has such a slot (face-v2's), a short stream
    may hold any number of symbols, and the guard is the pixel budget read from the header (next test)."""
    from facelink.shared import bitstream, codec, registry

    tables = registry.load("face-ipr-q1").tables
    frame = bitstream.Frame(tables.model_id, 65535, 65535, (b"\x00\x00\x00\x80\x00\x00\x00\x00" + b"\x01" * 56,), 0, 2)

    def too_late(*args, **kwargs):
        raise AssertionError("work proportional to the claimed size was done before the capacity check")

    monkeypatch.setattr(codec, "z_indexes", too_late)
    monkeypatch.setattr(type(tables), "entropy_parameters", too_late)
    monkeypatch.setattr(type(tables), "staged_parameters", too_late)
    with pytest.raises(bitstream.BitstreamError, match="cannot hold"):
        codec.decode_symbols(tables, frame)


def test_a_huge_claim_to_facelink_decode_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    """facelink decode refuses a container declaring more pixels than --max-pixels before any entropy decoding,
    for every model: the guard where the tables alone cannot bound the symbols a stream holds."""
    from facelink.cloud import cli as cloud_cli
    from facelink.shared import bitstream, codec, registry

    tables = registry.load(registry.DEFAULT_MODEL).tables
    frame = bitstream.Frame(tables.model_id, 65535, 65535, (b"\x00\x00\x00\x80\x00\x00\x00\x00" + b"\x01" * 56,), 0,
                            bitstream.VARIABLE_RATE_VERSION, quality=2.0)
    path = tmp_path / "huge.flk"
    path.write_bytes(bitstream.pack(frame))

    def too_late(*args, **kwargs):
        raise AssertionError("entropy decoding began before the size check")

    monkeypatch.setattr(codec, "decode_symbols", too_late)
    assert cloud_cli.main(["decode", str(path), "-o", str(tmp_path / "x.png")]) == 2
    assert "over the server's limit of 16777216 pixels" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["typical", "widest escapes"])
def test_no_stream_is_longer_than_its_symbols_can_fill(gaussian_tables, factorized_tables, kind):
    """max_bytes bounds what n symbols can fill whatever the tables, escapes of 28 bits at the rarest slot
    included, so refusing a longer stream never refuses one an encoder wrote."""
    rng = np.random.default_rng(4)
    for tables in (gaussian_tables, factorized_tables):
        cdfs, lengths, offsets = tables
        if kind == "typical":
            sym, idx = _vectors(tables, 5, n=3000, spread=3.0)
        else:  # the escape slot, then a raw value of 28 bits: the most a symbol can cost
            idx = rng.integers(0, len(cdfs), 3000)
            sym = offsets[idx] + lengths[idx] - 2 + (rans.MAX_ESCAPE >> 1)
        data = rans.encode_with_indexes(sym, idx, cdfs, lengths, offsets)
        assert len(data) <= rans.max_bytes(len(idx))
        rans.StreamDecoder(data).check_length(len(idx))
        np.testing.assert_array_equal(rans.decode_with_indexes(data, idx, cdfs, lengths, offsets), sym)
    with pytest.raises(rans.RansError, match="longer than"):
        rans.StreamDecoder(data + bytes(rans.max_bytes(len(idx)) - len(data) + 4)).check_length(len(idx))


def test_a_payload_too_long_for_its_frame_is_refused_before_the_hyper_synthesis(monkeypatch):
    """A face crop's container (6,528 symbols: at most ~39 KB of stream) carrying 100 KB of noise is refused from
    the lengths alone."""
    from facelink.shared import bitstream, codec, registry

    tables = registry.load(registry.DEFAULT_MODEL).tables
    noise = np.random.default_rng(2).integers(0, 256, 100 << 10, dtype=np.uint8).tobytes()
    frame = bitstream.Frame(tables.model_id, 112, 112, (noise,), 1, 2)

    def too_late(*args, **kwargs):
        raise AssertionError("the hyper-synthesis ran for a stream its frame cannot fill")

    monkeypatch.setattr(type(tables), "staged_parameters", too_late)
    with pytest.raises(bitstream.BitstreamError, match="longer than"):
        codec.decode_symbols(tables, frame)
