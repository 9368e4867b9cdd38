"""The edge's face region of interest: faces kept, background blurred, fewer bits, same bitstream contract."""
import json

import cv2
import numpy as np
import pytest

from facelink.benchmarks.codecs import BackgroundBlurred, get_codec, parse_codec_spec
from facelink.edge import cli as edge_cli
from facelink.edge.encoder import EdgePipeline
from facelink.shared.alignment import ARCFACE_112, align
from facelink.shared.detection import YuNet
from facelink.shared.roi import BackgroundBlur, region_weights


@pytest.fixture(scope="module")
def frame(demo_faces):
    rgb = cv2.cvtColor(cv2.imread(str(demo_faces / "probe" / "Tony_Blair_0002.jpg")), cv2.COLOR_BGR2RGB)
    det = YuNet().largest(rgb, rgb=True)
    assert det is not None
    return rgb, det.landmarks


def test_region_is_the_template_rectangle_mapped_back():
    # identity mapping: the region is the 112×112 rectangle itself, grown by the margin, feathered by the ramp
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    w = region_weights(m[None], 160, 160, ARCFACE_112, background=0.0, margin=0.0, ramp=4.0)[0]
    assert w[0, 0] == 1 and w[111, 111] == 1 and w[56, 56] == 1
    assert 0 < w[111, 113] < 1 and w[111, 116] == 0 and w[150, 150] == 0
    grown = region_weights(m[None], 160, 160, ARCFACE_112, background=0.25, margin=0.1, ramp=4.0)[0]
    assert grown[111, 122] == 1 and grown[150, 150] == 0.25


def test_blur_keeps_the_face_and_smooths_the_rest(frame):
    rgb, lm = frame
    roi = BackgroundBlur()
    out = roi.apply(rgb, [lm])
    assert out.shape == rgb.shape and out.dtype == np.uint8
    mask = roi.mask(*rgb.shape[:2], [lm])
    # what the recognizers crop (the ArcFace 112×112 square) is untouched
    face = align(rgb, lm, ARCFACE_112).astype(int)
    assert np.abs(align(out, lm, ARCFACE_112).astype(int) - face).max() <= 1
    assert (mask[mask > 0] > 0).all() and (mask == 1).mean() > 0.1 and (mask == 0).mean() > 0.1
    bg = mask == 0
    lap = lambda im: np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F))  # noqa: E731
    assert lap(out)[bg].mean() < 0.25 * lap(rgb)[bg].mean()
    # no face: the frame goes as it is; two faces: the union of both regions
    assert roi.apply(rgb, []) is rgb
    shifted = lm + [60.0, 0.0]
    both = roi.mask(*rgb.shape[:2], [lm, shifted])
    assert np.array_equal(both, np.maximum(mask, roi.mask(*rgb.shape[:2], [shifted])))


def test_bad_settings_and_input_are_refused():
    with pytest.raises(ValueError, match="sigma"):
        BackgroundBlur(sigma=0)
    with pytest.raises(ValueError, match="margin"):
        BackgroundBlur(margin=-1)
    with pytest.raises(ValueError, match="uint8"):
        BackgroundBlur().apply(np.zeros((8, 8), np.uint8), [])


def test_roi_codec_wraps_any_codec_and_costs_fewer_bits(frame):
    rgb, _ = frame
    plain, roi = get_codec("hevc"), parse_codec_spec("hevc+roi:33")
    assert isinstance(roi, BackgroundBlurred) and roi.name == "hevc+roi" and roi.qualities == (33,)
    assert roi.settings_for(33)["roi"] == BackgroundBlur().settings() and "preset" in roi.settings_for(33)
    data = roi.encode(rgb, 33)
    assert roi.bits(data) == plain.bits(data) < plain.bits(plain.encode(rgb, 33))
    assert roi.decode(data).shape == rgb.shape
    # the image the base codec gets is the edge's: the same detector, the same blur
    assert np.array_equal(roi.prepare(rgb), BackgroundBlur().around_faces(rgb, YuNet()))
    with pytest.raises(KeyError):
        get_codec("nope+roi")


def test_edge_full_frame_blur_background(tmp_path, demo_faces, capsys):
    src = demo_faces / "probe" / "Tony_Blair_0002.jpg"
    sizes = {}
    for flags in ([], ["--blur-background"]):
        out = tmp_path / f"{len(flags)}.flk"
        assert edge_cli.main(["encode", str(src), "--full-frame", "-o", str(out), *flags]) == 0
        info = json.loads(capsys.readouterr().out)
        sizes[bool(flags)] = info["bytes"]
        assert info["background_blur"] == (BackgroundBlur.sigma if flags else None)
    assert sizes[True] < sizes[False]
    assert edge_cli.main(["encode", str(src), "--blur-background", "-o", str(tmp_path / "x.flk")]) == 2
    assert "needs --full-frame" in capsys.readouterr().err
    assert edge_cli.main(["encode", str(src), "--full-frame", "--blur-background", "0",
                          "-o", str(tmp_path / "y.flk")]) == 2
    assert "sigma" in capsys.readouterr().err
    with pytest.raises(ValueError, match="full-frame"):
        EdgePipeline(blur_background=BackgroundBlur())


def test_bit_allocation_reports_where_the_bits_go(tmp_path, capsys):
    from facelink.benchmarks import bit_allocation
    from facelink.shared import registry

    out = tmp_path / "alloc.json"
    assert bit_allocation.main(["--models", registry.DEFAULT_MODEL, "--images", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    m = doc["models"][0]
    assert m["images"] == 3 and m["model"] == registry.DEFAULT_MODEL
    payload = (m["y_bits_mean"] + m["z_bits_mean"]) / 8
    assert payload < m["bytes_mean"] < payload + 64  # the container adds its header, lengths and CRC
    assert 0 < m["face_region_share_of_y_bits"] < 1 and 0 < m["face_region_share_of_area"] < 1
    assert 0 < m["z_share_of_payload_bits"] < 0.5
    assert m["face_region_bytes_mean"] + m["background_bytes_mean"] == pytest.approx(payload)
    assert 0 < m["crop_bytes_mean"] < m["bytes_mean"] and m["face_region_pixels_per_crop_pixel"] > 0.5
    with pytest.raises(SystemExit, match="one quality"):  # a rate point has no qualities to choose
        bit_allocation.main(["--models", "face-ipr-q1", "--images", "1", "--qualities", "2"])
    blurred = tmp_path / "blur.json"
    assert bit_allocation.main(["--models", registry.DEFAULT_MODEL, "--images", "3", "--blur-background",
                                "--out", str(blurred)]) == 0
    assert json.loads(blurred.read_text())["models"][0]["bytes_mean"] < m["bytes_mean"]
