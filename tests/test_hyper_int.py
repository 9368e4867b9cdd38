"""The integer hyper-synthesis: exact, order-independent, and robust to tiny float perturbations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facelink.shared import bitstream, codec, hyper_int, registry
from facelink.shared.hyper_int import ACT_LIMIT, IntLayer, run_layer


@pytest.mark.parametrize("kind", ["conv", "deconv"])
def test_layer_matches_torch_float64_on_integers(kind):
    rng = np.random.default_rng(0)
    x = rng.integers(-2000, 2000, (6, 5, 7)).astype(np.float64)
    if kind == "conv":
        w = rng.integers(-300, 300, (4, 6, 3, 3))
        ref = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w.astype(np.float64)), stride=1, padding=1)[0]
        layer = IntLayer("conv", w, np.zeros(4, np.int64), 0, 1, 1, 0, False)
    else:
        w = rng.integers(-300, 300, (6, 4, 5, 5))
        ref = F.conv_transpose2d(torch.from_numpy(x)[None], torch.from_numpy(w.astype(np.float64)), stride=2,
                                 padding=2, output_padding=1)[0]
        layer = IntLayer("deconv", w, np.zeros(4, np.int64), 0, 2, 2, 1, False)
    # shift 0 → floor(acc + 0.5) = acc for integers
    out = run_layer(layer, x)
    np.testing.assert_array_equal(out, ref.numpy())


def test_shipped_model_accumulators_are_exact():
    tables = registry.load().tables
    for layer in tables.hyper.layers:
        assert layer.worst_case_accumulator() < 2**53
    assert np.abs(tables.hyper.z_medians).max() < ACT_LIMIT


def test_independent_implementation_agrees_exactly():
    """The shipped model's integer hyper-synthesis, recomputed layer by layer with torch's float64 convolutions
    (another algorithm, another summation order), gives identical integers."""
    tables = registry.load().tables
    rng = np.random.default_rng(1)
    z = rng.integers(-3, 4, (tables.N, 2, 3))
    scales, means = tables.hyper(z)
    x = torch.from_numpy((z * (1 << tables.hyper.frac_bits) + tables.hyper.z_medians[:, None, None]).astype(np.float64))
    for L in tables.hyper.layers:
        w = torch.from_numpy(L.weight.astype(np.float64))
        b = torch.from_numpy(L.bias.astype(np.float64))
        if L.kind == "conv":
            acc = F.conv2d(x[None], w, b, stride=L.stride, padding=L.padding)[0]
        else:
            acc = F.conv_transpose2d(x[None], w, b, stride=L.stride, padding=L.padding,
                                     output_padding=L.output_padding)[0]
        x = torch.floor((acc + 2.0 ** (L.shift - 1)) / 2.0**L.shift)
        if L.relu:
            x = x.clamp(min=0)
        x = x.clamp(-ACT_LIMIT, ACT_LIMIT)
    m = x.shape[0] // 2
    np.testing.assert_array_equal(x[:m].numpy().astype(np.int64), scales)
    np.testing.assert_array_equal(x[m:].numpy().astype(np.int64), means)


def _frame(rng, encoder_tables):
    y = rng.normal(0, 2.0, (encoder_tables.M, 8, 8)).astype(np.float32)
    z = rng.normal(0, 1.5, (encoder_tables.N, 2, 2)).astype(np.float32)
    streams, _ = codec.encode_latents(encoder_tables, y, z, 128, 128)
    return bitstream.unpack(bitstream.pack(bitstream.Frame(encoder_tables.model_id, 128, 128, streams)))


def _perturb_last_layer(monkeypatch, tables, transform):
    """Make the hyper-synthesis' last layer (what both entropy_parameters and the decoder's staged parameters
    compute scales and means with) return ``transform(output, lo, hi)`` for its channels lo..hi."""
    original = type(tables.hyper).last_layer

    class Perturbed:
        def __init__(self, inner):
            self.inner, self.channels = inner, inner.channels

        def __call__(self, lo=0, hi=None):
            hi = self.channels if hi is None else hi
            return transform(self.inner(lo, hi), lo, hi)

    monkeypatch.setattr(type(tables.hyper), "last_layer", lambda self, z: Perturbed(original(self, z)))


def test_perturbed_hyper_synthesis_decodes_exactly_or_is_rejected(monkeypatch):
    """Perturb the cloud's hyper-synthesis output by a relative 1e-6 (as a different device's float arithmetic
    would): the decode is bit-exact or fails cleanly with BitstreamError; it never yields different symbols."""
    tables = registry.load().tables
    rng = np.random.default_rng(5)
    frames = [_frame(rng, tables) for _ in range(6)]
    expected = [codec.decompress_latents(tables, f) for f in frames]

    sign = [1]  # alternates between calls

    def perturbed(out, lo, hi, _rel=1e-6):
        sign[0] = -sign[0]
        # the perturbation acts on the real-valued outputs; the integer grid is 2**-frac_bits
        return np.floor(out * (1.0 + sign[0] * _rel) + 0.5)

    _perturb_last_layer(monkeypatch, tables, perturbed)
    exact = rejected = 0
    for f, want in zip(frames, expected):
        try:
            got = codec.decompress_latents(tables, f)
        except bitstream.BitstreamError:
            rejected += 1
            continue
        assert np.array_equal(got, want), "silently different latents"
        exact += 1
    assert exact + rejected == len(frames)


def test_flipped_scale_index_is_rejected(monkeypatch):
    """A perturbation large enough to move scale indexes must be caught by the stream's end-state check."""
    tables = registry.load().tables
    frame = _frame(np.random.default_rng(9), tables)
    m = tables.M

    def shifted(out, lo, hi):
        out = out.copy()
        scales = slice(0, max(0, min(hi, m) - lo))  # the scale channels among lo..hi
        out[scales] = np.trunc(out[scales] * 1.2)
        return out

    _perturb_last_layer(monkeypatch, tables, shifted)
    with pytest.raises(bitstream.BitstreamError):
        codec.decompress_latents(tables, frame)


def _budget_frame(tables, payload: bytes) -> bitstream.Frame:
    """A container declaring 640×512, the server's default pixel budget, with ``payload`` as its rANS stream."""
    return bitstream.unpack(bitstream.pack(bitstream.Frame(tables.model_id, 512, 640, (payload,), 0, 2)))


def _channel_calls(monkeypatch, tables) -> list[tuple[int, int]]:
    """Record which output channels of the hyper-synthesis' last layer get computed (lo, hi per call)."""
    calls = []
    original = hyper_int.LayerOutput.__call__

    def recorded(self, lo=0, hi=None):
        if self.layer is tables.hyper.layers[-1]:
            calls.append((lo, self.channels if hi is None else hi))
        return original(self, lo, hi)

    monkeypatch.setattr(hyper_int.LayerOutput, "__call__", recorded)
    return calls


def test_full_frames_decode_by_channel_groups_to_the_same_symbols(monkeypatch):
    """A valid full frame decodes by groups of y's channels (scales group by group, means last) to exactly what the
    encoder coded and what the single-pass entropy parameters give."""
    tables = registry.load().tables
    rng = np.random.default_rng(11)
    y = rng.normal(0, 2.0, (tables.M, 32, 40)).astype(np.float32)
    z = rng.normal(0, 1.5, (tables.N, 8, 10)).astype(np.float32)
    streams, coded = codec.encode_latents(tables, y, z, 500, 640)
    calls = _channel_calls(monkeypatch, tables)
    got = codec.decode_symbols(tables, bitstream.unpack(bitstream.pack(bitstream.Frame(tables.model_id, 500, 640,
                                                                                       streams))))
    assert len(calls) > 2 and calls[-1] == (tables.M, 2 * tables.M)  # grouped scales, then the means
    idx, means = tables.entropy_parameters(got.z)
    for a, b in ((got.z, coded.z), (got.y, coded.y), (got.indexes, coded.indexes), (got.indexes, idx),
                 (got.means, coded.means), (got.means, means)):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("seed", range(8))
def test_random_payloads_at_the_pixel_budget_are_refused_before_the_means(monkeypatch, seed):
    """Random payloads declaring the whole default pixel budget are refused (BitstreamError) at their first
    impossible symbol: the last layer's mean channels are never computed, nor any scale group after the one that
    proved the stream bad."""
    tables = registry.load().tables
    payload = np.random.default_rng(seed).integers(0, 256, 64 << 10, dtype=np.uint8).tobytes()
    calls = _channel_calls(monkeypatch, tables)
    with pytest.raises(bitstream.BitstreamError):
        codec.decode_symbols(tables, _budget_frame(tables, payload))
    assert calls and all(hi <= tables.M for _, hi in calls), "means computed for a stream already refused"
    assert all(hi - lo == codec.Y_CHANNEL_GROUP for lo, hi in calls)


def test_a_refused_stream_leaves_no_large_arrays_in_its_traceback():
    """A server keeps a refused frame's error (and its traceback's frames) until the garbage collector breaks the
    cycle through the future that carried it: the frames must not hold the hyper-synthesis' columns or y's arrays."""
    tables = registry.load().tables
    payload = np.random.default_rng(3).integers(0, 256, 64 << 10, dtype=np.uint8).tobytes()
    with pytest.raises(bitstream.BitstreamError) as info:
        codec.decode_symbols(tables, _budget_frame(tables, payload))
    held = []
    for exc in (info.value, info.value.__cause__):
        tb = exc.__traceback__
        while tb is not None:
            for name, value in tb.tb_frame.f_locals.items():
                if hasattr(value, "_last") or isinstance(value, hyper_int.LayerOutput) or \
                        getattr(value, "nbytes", 0) > 1 << 20:
                    held.append(f"{tb.tb_frame.f_code.co_name}: {name}")
            tb = tb.tb_next
    assert not held
