"""Core v2 end to end: a tiny variable-rate model trained a few steps, exported (ONNX encoder with a gain input,
tables with the gain table under the model id), coded on the edge at a quality or within a byte budget into
container version 3, and decoded bit-exactly in the cloud with the inverse gain of the carried quality."""
import numpy as np
import pytest
import torch
from vr_support import tiny_vr_model

from facelink.cloud.serving.decoder import CloudDecoder
from facelink.cloud.serving.variable_rate import apply_inverse_gain
from facelink.edge.encoder import EdgeEncoder, EdgePipeline
from facelink.edge.rate_control import BudgetError, encode_within
from facelink.shared import bitstream, codec, registry
from facelink.shared import tables as tables_mod
from facelink.shared.alignment import ARCFACE_112
from facelink.shared.bitstream import BitstreamError, Frame, pack, unpack


@pytest.fixture(scope="module")
def vr_model(tmp_path_factory):
    """A 16/24 variable-rate model with an 8-channel analysis transform after a few training steps on random
    patches, exported to a temporary registry folder."""
    return tiny_vr_model(tmp_path_factory.mktemp("registry"), description="test")


@pytest.fixture(scope="module")
def crop(face_rgb):
    return EdgePipeline().cropper.crop(face_rgb)[0]


def test_version_3_carries_the_quality_and_versions_1_2_are_unchanged():
    f = Frame("00" * 8, 112, 112, (b"\x05" * 40,), template_id=1, version=3, quality=2.75)
    data = pack(f)
    assert len(data) == 15 + 40 + 4 and data[3] == 3
    assert unpack(data) == f and unpack(data).coded_y_shape == (7, 7)
    full = Frame("00" * 8, 250, 250, (b"\x05" * 40,), version=3, quality=0.0)
    assert unpack(pack(full)) == full
    assert bitstream.quantize_quality(2.7) == round(2.7 * 256) / 256
    for bad, msg in [(dict(version=3), "carries the quality"), (dict(version=2, quality=1.0), "carry"),
                     (dict(version=3, quality=1.001), "grid"), (dict(version=3, quality=-1.0), "cannot be stored")]:
        with pytest.raises(BitstreamError, match=msg):
            pack(Frame("00" * 8, 112, 112, (b"\x05",), template_id=1, **bad))
    damaged = bytearray(data)
    damaged[13] ^= 1  # the quality is under the checksum
    with pytest.raises(bitstream.ChecksumError):
        unpack(bytes(damaged))


def test_tables_hold_the_gain_table_under_the_model_id(vr_model, tmp_path):
    model, folder = vr_model
    t = tables_mod.load(folder / "tables.npz")
    assert t.variable_rate and t.qualities == 8 and t.meta["architecture"] == "facelink-vr-msh-v1"
    assert t.meta["N_analysis"] == 8 and registry.load(str(folder)).manifest["N_analysis"] == 8
    g, _ = model.gains(torch.tensor([3.3]))
    np.testing.assert_allclose(t.gain(3.3), g[0].detach().numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="quality must lie"):
        t.gain(7.5)
    changed = tables_mod.build(t.meta, t.z, t.y, t.scale_thresholds, t.hyper, t.log_gains + 0.01)
    assert changed.model_id != t.model_id  # the gains are part of what the id names
    tables_mod.save(t, tmp_path / "t.npz")
    assert tables_mod.load(tmp_path / "t.npz").model_id == t.model_id


def test_onnx_encoder_matches_torch_at_a_quality(vr_model, crop):
    model, folder = vr_model
    enc = EdgeEncoder(str(folder))
    padded = np.pad(crop, ((0, 16), (0, 16), (0, 0)), mode="edge")
    y, z = enc.analyse(crop, quality=4.25)
    x = torch.from_numpy(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.no_grad():
        gain, _ = model.gains(torch.tensor([4.25]))
        y_ref = model.g_a(x) * gain[:, :, None, None]
        z_ref = model.h_a(y_ref)
    np.testing.assert_allclose(y, y_ref[0].numpy(), atol=2e-3 * float(y_ref.abs().max()))
    np.testing.assert_allclose(z, z_ref[0].numpy(), atol=2e-3 * float(z_ref.abs().max()))


def test_round_trip_is_bit_exact_and_applies_the_inverse_gain(vr_model, crop):
    model, folder = vr_model
    enc = EdgeEncoder(str(folder), quality=5.5)
    data, sent = enc.encode_with_symbols(crop, ARCFACE_112)
    frame = unpack(data)
    assert frame.version == 3 and frame.quality == 5.5 and frame.model_id == enc.model_id
    got = codec.decode_symbols(registry.load(str(folder)).tables, frame)
    np.testing.assert_array_equal(got.y, sent.y)
    np.testing.assert_array_equal(got.indexes, sent.indexes)
    decoded = CloudDecoder(models=[str(folder)], device="cpu").decode(data)
    with torch.no_grad():
        y = apply_inverse_gain(model, torch.from_numpy(got.y_hat)[None], 5.5)
        ref = model.g_s(y).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    assert decoded.image.shape == (112, 112, 3)
    assert np.abs(decoded.image.astype(float) - ref[:112, :112]).max() <= 1.0
    # the same latents read at another quality decode differently: the inverse gain is applied
    other = pack(Frame(frame.model_id, 112, 112, frame.streams, frame.template_id, 3, 1.0))
    assert not np.array_equal(CloudDecoder(models=[str(folder)], device="cpu").decode(other).image, decoded.image)
    with pytest.raises(BitstreamError, match="quality"):
        CloudDecoder(models=[str(folder)], device="cpu").decode(
            pack(Frame(frame.model_id, 112, 112, frame.streams, frame.template_id, 3, 9.0)))


def test_quality_is_checked_and_a_variable_rate_model_writes_version_3(vr_model, crop):
    _, folder = vr_model
    with pytest.raises(ValueError, match="version 3"):
        EdgeEncoder(str(folder), format_version=2)
    with pytest.raises(ValueError, match="quality must lie"):
        EdgeEncoder(str(folder), quality=7.5)
    enc = EdgeEncoder(str(folder))
    assert enc.quality == 3.5  # the manifest's default_quality
    sizes = [len(enc.encode(crop, ARCFACE_112, quality=q)) for q in (0.0, 3.5, 7.0)]
    assert sizes[0] <= sizes[1] <= sizes[2] and sizes[0] < sizes[2]
    with pytest.raises(ValueError, match="one quality"):
        EdgeEncoder("face-ipr-q1", quality=2.0)  # a rate point


def test_max_bytes_is_never_exceeded(vr_model, crop):
    _, folder = vr_model
    enc = EdgeEncoder(str(folder))
    low, high = len(enc.encode(crop, ARCFACE_112, quality=0.0)), len(enc.encode(crop, ARCFACE_112, quality=7.0))
    for budget in (low, (low + high) // 2, high - 1, high + 50):
        r = encode_within(enc, crop, budget, ARCFACE_112)
        assert len(r.data) <= budget and unpack(r.data).quality == r.quality
        if budget >= high:
            assert r.quality == 7.0 and r.tries == 1
        else:  # the next grid point up no longer fits (the search is exact on a monotone curve)
            assert r.quality < 7.0
    with pytest.raises(BudgetError, match="lowest quality needs"):
        encode_within(enc, crop, low - 1, ARCFACE_112)
    pipe = EdgePipeline(str(folder), max_bytes=(low + high) // 2)
    assert pipe.encoder.variable_rate
    with pytest.raises(ValueError, match="variable-rate"):
        EdgePipeline("face-ipr-q1", max_bytes=500)


def test_a_rate_point_in_version_3_carries_quality_0_and_decodes_as_before(face_rgb):
    v2 = EdgePipeline("face-ipr-q1").process(face_rgb).data
    v3 = EdgePipeline("face-ipr-q1", format_version=3).process(face_rgb).data
    f2, f3 = unpack(v2), unpack(v3)
    assert f3.version == 3 and f3.quality == 0.0 and f3.streams == f2.streams and len(v3) == len(v2) + 2
    dec = CloudDecoder(device="cpu")
    np.testing.assert_array_equal(dec.decode(v3).image, dec.decode(v2).image)
