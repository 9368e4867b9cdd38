"""Every codec round-trips real faces, and is charged exactly the bits the brief says."""
import re

import numpy as np
import pytest
from PIL import Image

from facelink.benchmarks.codecs import CLASSICAL, HEVC, CodecUnavailable, FacelinkCodec, get_codec, parse_codec_spec
from facelink.shared.paths import assets_dir

LFW_IMAGE = assets_dir() / "lfw" / "lfw-deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"


@pytest.fixture(scope="module")
def face():
    if not LFW_IMAGE.is_file():
        pytest.skip(f"LFW not found at {LFW_IMAGE}")
    with Image.open(LFW_IMAGE) as im:
        return np.asarray(im.convert("RGB")).copy()


def psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(float) - b) ** 2))


@pytest.mark.parametrize("name", CLASSICAL)
def test_roundtrip_and_whole_file_bits(name, face):
    codec = get_codec(name)
    codec.check_available()
    lo, hi = codec.qualities[0], codec.qualities[-1]
    data_lo, data_hi = codec.encode(face, lo), codec.encode(face, hi)
    out_lo, bits_lo = codec.roundtrip(face, lo)
    out_hi, bits_hi = codec.roundtrip(face, hi)
    assert out_hi.shape == face.shape and out_hi.dtype == np.uint8
    assert bits_lo < bits_hi, "the sweep must be ordered from low to high rate"
    assert psnr(out_hi, face) > psnr(out_lo, face) > 20
    if name == "hevc":
        assert bits_hi == 8 * len(codec.elementary_stream(data_hi))
    else:  # charged for the whole file, headers included
        assert bits_hi == 8 * len(data_hi) and bits_lo == 8 * len(data_lo)
        magic = {"jpeg": b"\xff\xd8", "webp": b"RIFF", "avif": b"\x00\x00\x00", "jxl": b"\xff\x0a"}[name]
        assert data_hi.startswith(magic)


def test_hevc_bits_are_the_raw_elementary_stream(face):
    codec = HEVC()
    es = codec.elementary_stream(codec.encode(face, 23))
    # Annex-B NAL units: VPS (32), SPS (33), PPS (34), then IDR slice data; no SEI (39: x265 settings, off).
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", es)]
    types = [(es[s + 3] >> 1) & 0x3F for s in starts]
    assert es.startswith(b"\x00\x00\x00\x01")
    assert types[:3] == [32, 33, 34] and 39 not in types and set(types[3:]) <= {19, 20}
    assert codec.bits(codec.encode(face, 23)) == 8 * len(es)
    # The settings SEI really is what `info=0` removes (~2 KB otherwise).
    assert len(es) < 8 * 1024


def test_hevc_odd_size_is_padded_and_cropped(face):
    crop = np.ascontiguousarray(face[10:121, 20:133])  # 111 x 113
    out, bits = HEVC().roundtrip(crop, 23)
    assert out.shape == crop.shape and psnr(out, crop) > 30 and bits > 0


def test_hevc_batches_are_the_same_bytes_and_pixels_as_single_encodes(face):
    """encode_many / decode_many run one ffmpeg process for many images, never changing a bit or a pixel;
    mixed and odd sizes included."""
    codec = HEVC()
    images = [face, np.ascontiguousarray(face[10:121, 20:133]), np.ascontiguousarray(face[::-1]),
              np.ascontiguousarray(face[40:152, 60:172])]
    single = [codec.encode(im, 33) for im in images]
    assert codec.encode_many(images, 33) == single
    for out, data, im in zip(codec.decode_many(single), single, images):
        assert out.shape == im.shape and np.array_equal(out, codec.decode(data))
    with pytest.raises(ValueError, match="not a facelink HEVC"):
        codec.decode_many([single[0], b"\x00"])


def test_uncompressed_is_24_bpp(face):
    codec = get_codec("uncompressed")
    out, bits = codec.roundtrip(face, "rgb24")
    assert bits == 24 * face.shape[0] * face.shape[1] and np.array_equal(out, face)
    data = codec.encode(face, "rgb24")
    assert codec.bits(data) == bits and np.array_equal(codec.decode(data), face)


def test_jxl_is_a_bare_codestream(face):
    data = get_codec("jxl").encode(face, 50)
    assert data[:2] == b"\xff\x0a"  # naked codestream, not the ISOBMFF container


def test_codec_specs():
    c = parse_codec_spec("hevc:23,33")
    assert c.name == "hevc" and c.qualities == (23, 33)
    assert parse_codec_spec("jpeg").qualities == get_codec("jpeg").qualities
    with pytest.raises(KeyError):
        get_codec("nope")


def test_learned_codec_is_charged_for_the_whole_container(demo_faces):
    """facelink's entry sweeps the registry's rate points, facelink-v2 the default variable-rate model's qualities;
    their bits are the whole .flk container."""
    import cv2

    from facelink.benchmarks.codecs import variable_rate_models
    from facelink.shared import bitstream, registry

    codec = get_codec("facelink")
    rate_points = tuple(n for n in registry.available() if n not in variable_rate_models())
    assert codec.qualities == rate_points and "face-ipr-q1" in rate_points
    assert registry.DEFAULT_MODEL in variable_rate_models()  # the default (face-v2) is swept by its own codec
    assert get_codec("facelink-v2").model == registry.DEFAULT_MODEL
    rgb = cv2.cvtColor(cv2.imread(str(demo_faces / "probe" / "Tony_Blair_0002.jpg")), cv2.COLOR_BGR2RGB)
    for c, q, model in ((get_codec("facelink-v2"), 2, registry.DEFAULT_MODEL), (codec, "face-ipr-q1", "face-ipr-q1")):
        data = c.encode(rgb, q)
        assert c.bits(data) == 8 * len(data)
        assert bitstream.unpack(data).model_id == registry.load(model).model_id
    out, bits = codec.roundtrip(rgb, "face-ipr-q1")
    assert out.shape == rgb.shape and bits == 8 * len(data)
    # face crops are coded as the edge sends them: with their template id, so the container omits their size
    from facelink.edge.encoder import FaceCropper

    crop = FaceCropper().crop(rgb)[0]
    (aligned,) = codec.encode_crops([crop], "face-ipr-q1", "arcface-112")
    plain = codec.encode(crop, "face-ipr-q1")
    assert bitstream.unpack(aligned).template_id == 1 and len(aligned) == len(plain) - 2
    assert np.array_equal(codec.decode(aligned), codec.decode(plain))
    assert get_codec("hevc").encode_crops([crop], 38, "arcface-112") == [get_codec("hevc").encode(crop, 38)]
    assert codec.settings_for("face-ipr-q1")["format_version"] == bitstream.FORMAT_VERSION


def test_learned_families_are_curves_of_their_own(tmp_path, monkeypatch):
    """face-<family>-q<k> rate points form one codec per family; an extra registry folder adds families."""
    import shutil

    from facelink.benchmarks.codecs import learned_families
    from facelink.shared import registry

    extra = tmp_path / "models"
    shutil.copytree(registry.load().path, extra / "face-abl-q4")
    monkeypatch.setenv(registry.MODELS_PATH_ENV, str(extra))
    assert "face-abl-q4" in registry.available() and "facelink-abl" in learned_families()
    fam = get_codec("facelink-abl")
    assert fam.qualities == ("face-abl-q4",) and fam.name == "facelink-abl"
    assert get_codec("facelink-msh").qualities == ("face-msh-q4",)
    # a model re-exported under the same name is a different setting (the cache never serves stale results)
    before = fam.settings_for("face-abl-q4")
    (extra / "face-abl-q4" / "manifest.json").write_text(
        (extra / "face-abl-q4" / "manifest.json").read_text().replace('"tables.npz": "', '"tables.npz": "0'))
    registry._load.cache_clear()
    assert get_codec("facelink-abl").settings_for("face-abl-q4") != before
    registry._load.cache_clear()


def test_learned_codec_adapter_is_lazy_and_explicit():
    codec = FacelinkCodec(models=("no-such-model",))
    assert codec.quality_name == "model" and codec.qualities == ("no-such-model",)
    try:
        import facelink.cloud.evaluation.codec  # noqa: F401
    except ImportError:
        with pytest.raises(CodecUnavailable, match="LearnedCodec"):
            codec.check_available()


def test_family_labels_and_partners_are_the_ladders_and_the_manifests(tmp_path, monkeypatch):
    """A family's curve label, ablation and tuned-from come from its research ladder; a family without one takes
    the label its models' manifests give."""
    import json
    import shutil

    from facelink.benchmarks.codecs import ablation_of, tuned_from
    from facelink.cloud.training import ladder
    from facelink.shared import registry

    assert get_codec("facelink-iprc").label == ladder.load("iprc").label == "facelink IPR, face-crop-tuned"
    assert get_codec("facelink-pix").label == "facelink pixel loss (ablation)"  # ladder pixel, family pix
    assert ablation_of("facelink-iprch+roi") == "facelink-pixc+roi" and ablation_of("facelink-ipr") == "facelink-pix"
    assert tuned_from("facelink-pixv") == "facelink-pixc" and tuned_from("facelink-iprb") is None
    assert ablation_of("hevc") is None and tuned_from("facelink-pixc") == "facelink-pixb"
    extra = tmp_path / "models"
    shutil.copytree(registry.load("face-ipr-q1").path, extra / "face-zzz-q4")
    manifest = extra / "face-zzz-q4" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": "face-zzz-q4", "label": "zzz"}))
    monkeypatch.setenv(registry.MODELS_PATH_ENV, str(extra))
    registry._load.cache_clear()
    assert get_codec("facelink-zzz").label == "zzz" and ablation_of("facelink-zzz") is None
