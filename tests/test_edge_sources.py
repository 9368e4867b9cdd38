"""The edge's inputs: every kind of source, and image files that are too large, cut short or odd, each with a clear
message (never a traceback) or converted and coded."""
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from edge_support import standing_person, write_video

from facelink.edge import cli as edge_cli
from facelink.edge.errors import EdgeError
from facelink.edge.sources import open_source, read_image


@pytest.fixture(scope="module")
def face_bgr(demo_faces):
    return cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg"))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height, with no real pixel data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _jpeg_header_only(width: int, height: int) -> bytes:
    """A baseline JPEG whose frame header (SOF0) claims width×height, with no scan behind it."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def _encode(capfd, path, *extra) -> tuple[int, str]:
    rc = edge_cli.main(["encode", str(path), "-o", str(path) + ".flk", "--force", *extra])
    out = capfd.readouterr()
    assert "Traceback" not in out.err
    return rc, out.err


def test_huge_images_are_refused_from_their_header(tmp_path, capfd):
    """A 30000² PNG or a 10000² JPEG must not be decoded at all (gigabytes, tens of seconds): the header says enough."""
    for name, data, mp in (("huge.png", _png_header_only(30000, 30000), "900.0"),
                           ("huge.jpg", _jpeg_header_only(10000, 10000), "100.0")):
        (tmp_path / name).write_bytes(data)
        rc, err = _encode(capfd, tmp_path / name)
        assert rc == 2 and f"is {mp} MP, over the limit of 40 MP" in err and "--max-pixels" in err, err


def test_pixel_limit_is_configurable(tmp_path, face_bgr, capfd):
    cv2.imwrite(str(tmp_path / "face.png"), face_bgr)
    rc, err = _encode(capfd, tmp_path / "face.png", "--max-pixels", "10000")
    assert rc == 2 and "250×250 is 0.1 MP, over the limit of 0.01 MP" in err
    assert _encode(capfd, tmp_path / "face.png", "--max-pixels", "0")[0] == 0


def test_truncated_empty_and_junk_files_get_clear_messages(tmp_path, face_bgr, capfd):
    jpeg = cv2.imencode(".jpg", face_bgr)[1].tobytes()
    png = cv2.imencode(".png", face_bgr)[1].tobytes()
    cases = {"cut.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"), "cut.png": (png[: len(png) // 2], "truncated PNG"),
             "empty.jpg": (b"", "empty file"), "text.png": (b"hello, not an image\n", "not a readable image")}
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        rc, err = _encode(capfd, tmp_path / name)
        assert rc == 2 and f"{name}: {why}" in err, err
        assert "Premature end" not in err and "libpng" not in err  # refused before the decoder could complain
    rc, err = _encode(capfd, tmp_path / "missing.jpg")
    assert rc == 2 and "no such file" in err
    assert cv2.imwrite(str(tmp_path / "face.tiff"), face_bgr)  # compressed, and its size unknown before decoding
    rc, err = _encode(capfd, tmp_path / "face.tiff")
    assert rc == 2 and "face.tiff: not a readable image (not a PNG, JPEG or WebP file" in err, err


def test_odd_but_valid_images_are_converted_and_coded(tmp_path, face_bgr, capfd):
    grey = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)
    odd = {"sixteen.png": face_bgr.astype(np.uint16) * 257, "alpha.png": cv2.cvtColor(face_bgr, cv2.COLOR_BGR2BGRA),
           "grey.jpg": grey, "grey16.png": grey.astype(np.uint16) * 257, "plain.bmp": face_bgr, "grey.pgm": grey,
           "lossless.webp": face_bgr}
    for name, pixels in odd.items():
        assert cv2.imwrite(str(tmp_path / name), pixels)
        assert read_image(tmp_path / name).shape == (250, 250, 3)
        rc, err = _encode(capfd, tmp_path / name)
        assert rc == 0, (name, err)
    sixteen = read_image(tmp_path / "sixteen.png")
    assert sixteen.dtype == np.uint8 and np.abs(sixteen.astype(int) - face_bgr).max() <= 1


def test_sources_by_kind(tmp_path, face_bgr):
    cv2.imwrite(str(tmp_path / "a.png"), face_bgr)
    video = write_video(tmp_path / "v.avi", (face_bgr[:240, :240] for _ in range(3)), fps=10)
    assert open_source("0").kind == "camera" and open_source("rtsp://127.0.0.1:9/cam").kind == "stream"
    assert open_source(str(tmp_path)).kind == "folder" and open_source(str(tmp_path / "a.png")).kind == "image"
    frames = list(open_source(str(video)).frames())
    assert open_source(str(video)).kind == "video" and [f.t for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    for spec, message in (("no/such/thing", "no such file, folder or camera"), (str(tmp_path / "v.avi"), None)):
        if message:
            with pytest.raises(EdgeError, match=message):
                open_source(spec)
    with pytest.raises(EdgeError, match="--max-fps must be > 0"):
        open_source(str(video), max_fps=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeError, match="no images in this folder"):
        open_source(str(tmp_path / "empty"))


def test_unreadable_sources_fail_clearly(tmp_path, capfd):
    (tmp_path / "notavideo.mp4").write_bytes(b"\0" * 1000)
    for spec, message in ((str(tmp_path / "notavideo.mp4"), "not a readable video"),
                          ("rtsp://127.0.0.1:9/cam", "cannot open the stream"), ("no/such/dir", "no such file")):
        assert edge_cli.main(["run", spec, "--offline"]) == 2
        err = capfd.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_a_folder_source_skips_unreadable_frames_and_says_why(tmp_path, demo_faces, capsys):
    frames = list(standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=12))
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame{i:03d}.jpg"), frame)
    data = (tmp_path / "frame005.jpg").read_bytes()
    (tmp_path / "frame005.jpg").write_bytes(data[: len(data) // 3])
    assert edge_cli.main(["run", str(tmp_path), "--offline", "--settle", "0.2"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.err.strip().splitlines()[-1])
    assert report["kind"] == "folder" and report["frames"] == 11 and report["faces_tracked"] == 1
    assert report["unreadable"] == [{"file": str(tmp_path / "frame005.jpg"),
                                     "why": "truncated JPEG (no end-of-image marker)"}]
    assert report["crops_sent"] == 1 and json.loads(out.out)["t"] <= 0.2 + 1e-9  # folder frames at 15 fps


def test_a_live_http_camera_is_read_and_thinned_by_max_fps(demo_faces, capsys):
    """An IP camera's MJPEG stream over HTTP: frames are timed on arrival; those within 1/max-fps of the last one
    taken are grabbed and dropped undecoded (how many depends on the machine's speed, so only the sum is fixed)."""
    from edge_support import mjpeg_stream

    frames = list(standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=30))
    with mjpeg_stream(frames) as url:
        assert edge_cli.main(["run", url, "--offline", "--max-fps", "5", "--settle", "0"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.err.strip().splitlines()[-1])
    assert report["kind"] == "stream" and report["max_fps"] == 5
    assert report["frames"] >= 1 and report["frames"] + report["frames_skipped_by_max_fps"] == 30
    assert report["faces_tracked"] == 1 and report["crops_sent"] >= 1
