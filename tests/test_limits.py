"""Work limits before work: image sizes from headers, canonical names, the decode pixel budget, and a real server on
loopback answering each hostile request of the kind the issue lists with a clear code (the stream going on)."""
import os
import re
import struct
import threading
import zlib

import cv2
import grpc
import numpy as np
import pytest
from server_support import ServerThread

from facelink.cloud.serving import limits
from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared import bitstream, image_header, registry
from facelink.shared.registry import DEFAULT_MODEL
from facelink.v1 import facelink_pb2 as pb


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int) -> bytes:
    """A PNG declaring side×side RGB pixels with the start of a valid zlib stream of zero rows (its header is what a
    decoder would trust)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compressobj(9)
    idat = rows.compress(bytes(64 << 10)) + rows.flush(zlib.Z_SYNC_FLUSH)
    return image_header.PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def oversize_container(side: int, payload_bytes: int) -> bytes:
    """A well-formed version-2 container (valid CRC) declaring side×side pixels, of the default model."""
    model_id = registry.load(DEFAULT_MODEL).model_id
    payload = np.random.default_rng(0).integers(0, 256, payload_bytes // 4 * 4, dtype=np.uint8).tobytes()
    return bitstream.pack(bitstream.Frame(model_id, side, side, (payload,), 0, 2))


@pytest.mark.parametrize("ext, params", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                         (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                         (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])])
def test_image_header_gives_the_size_of_real_files(ext, params):
    im = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    data = cv2.imencode(ext, im, params)[1].tobytes()
    info = image_header.read_header(data)
    assert (info.width, info.height) == (53, 37) and info.format == {".jpg": "jpeg"}.get(ext, ext[1:])


def test_image_header_refuses_bombs_and_garbage():
    for side in (30000, 40000):
        with pytest.raises(image_header.ImageTooLarge, match=f"{side}×{side}"):
            image_header.check_image(png_bomb(side), 4096 * 4096)
    with pytest.raises(image_header.ImageTooLarge):
        image_header.check_image(jpeg_header(60000, 60000), 4096 * 4096)
    assert image_header.check_image(jpeg_header(640, 480), 4096 * 4096).pixels == 640 * 480
    for bad, why in [(b"GIF89a" + bytes(20), "not a PNG"), (image_header.PNG_MAGIC + bytes(8), "shorter"),
                     (b"\xff\xd8\xff\xda\x00\x02", "scan data"), (jpeg_header(640, 0), "DNL"),
                     (b"\xff\xd8\xff\xe0\x00\x10JFIF", "ends")]:
        with pytest.raises(image_header.ImageHeaderError, match=why):
            image_header.read_header(bad)


@pytest.mark.parametrize("name, why", [
    ("  Colin Powell  ", "canonical form is 'Colin Powell'"), ("Colin  Powell", "canonical"),
    ("Colin\u00a0Powell", "canonical"), ("\uff23olin Powell", "canonical"), ("Colin\u200bPowell", "U+200B"),
    ("\u202eColin Powell", "U+202E"), ("C\u043elin Powell", "mixes"), ("x" * (1 << 20), "limit"), ("", "1–"),
])
def test_names_that_could_alias_are_refused(name, why):
    with pytest.raises(limits.InvalidArgument, match=re.escape(why)) as e:
        limits.check_identity_name(name)
    assert len(str(e.value)) < 300  # never echoes a megabyte back
    assert limits.check_identity_name("Colin Powell") == "Colin Powell"
    assert limits.check_identity_name("Владимир Путин") == "Владимир Путин"  # one script is fine


def test_pixel_budget_bounds_large_frames_only():
    budget = limits.PixelBudget(2 << 20)
    assert budget.acquire(limits.SMALL_FRAME_PIXELS) == 0  # crops never wait
    first = budget.acquire(2 << 20)
    got = threading.Event()
    t = threading.Thread(target=lambda: (budget.acquire(1 << 20), got.set()))
    t.start()
    assert not got.wait(0.2)  # spent: the next large frame waits
    budget.release(first)
    t.join(10)
    assert got.is_set() and budget.used == 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(gallery=str(tmp_path_factory.mktemp("limits") / "g.db"), max_streams=2,
                      stream_window=2) as s:
        yield s


@pytest.fixture(scope="module")
def crop(face_rgb):
    return EdgePipeline(DEFAULT_MODEL).process(face_rgb).data


def _code(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert len(e.value.details()) < 400
    return e.value.code()


def test_hostile_frames_are_answered_in_band_and_the_stream_goes_on(server, crop, face_rgb):
    bomb = oversize_container(4096, 792 << 10)
    big = cv2.resize(face_rgb, (500, 500), interpolation=cv2.INTER_CUBIC)  # 512×512 padded: takes from the budget
    large = EdgePipeline(DEFAULT_MODEL, full_frame=True).process(big).data
    huge = os.urandom(4 << 20)  # over max_frame_bytes (1 MiB), under gRPC's limit (8 MiB + 64 KiB)
    model_id = registry.load(DEFAULT_MODEL).model_id
    noise = np.random.default_rng(1).integers(0, 256, 64 << 10, dtype=np.uint8).tobytes()
    random = bitstream.pack(bitstream.Frame(model_id, 512, 640, (noise,), 0, 2))  # the whole pixel budget
    frames = [("bomb", bomb, 0), ("ok-1", crop, 0), ("huge", huge, 0), ("top-k", crop, 1000), ("large", large, 0),
              ("random", random, 0), ("ok-2", crop, 0)]
    with Client(server.target) as c:
        resp = list(c.recognize_stream(request(rid, data, top_k=k) for rid, data, k in frames))
        (long_id,) = c.recognize_stream([request("i" * 5000, crop)])
    assert [r.id for r in resp] == [f[0] for f in frames]
    codes = {r.id: pb.Error.Code.Name(r.error.code) if r.WhichOneof("outcome") == "error" else "OK" for r in resp}
    assert codes == {"bomb": "FRAME_TOO_LARGE", "ok-1": "OK", "huge": "FRAME_TOO_LARGE", "top-k": "INVALID_ARGUMENT",
                     "large": "OK", "random": "INVALID_BITSTREAM", "ok-2": "OK"}
    assert resp[4].result.face_found and resp[4].result.width == 500 and server.service.budget.used == 0
    assert "4096×4096" in resp[0].error.message and "327680 pixels" in resp[0].error.message
    assert long_id.error.code == pb.Error.INVALID_ARGUMENT and len(long_id.id) == 256


def test_a_message_over_grpcs_limit_ends_its_call_with_a_clear_code(server, crop):
    """Over max_message_bytes gRPC itself refuses the message (nothing is parsed); the server serves on."""
    with Client(server.target) as c:
        assert _code(lambda: list(c.recognize_stream([request("x", os.urandom(17 << 20))]))) == \
            grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(lambda: c.enroll("Tony Blair", image=os.urandom(1 << 10), source_name="s" * (10 << 20))) == \
            grpc.StatusCode.RESOURCE_EXHAUSTED
        (ok,) = c.recognize_stream([request("after", crop)])
    assert ok.WhichOneof("outcome") == "result"


def test_hostile_enrolments_are_refused_with_clear_codes(server, crop, demo_faces):
    photo = (demo_faces / "enroll" / "Tony_Blair_0001.jpg").read_bytes()
    with Client(server.target) as c:
        for side in (30000, 40000):
            assert _code(lambda s=side: c.enroll("Bomb", image=png_bomb(s))) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(lambda: c.enroll("Bomb", image=jpeg_header(60000, 60000))) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(lambda: c.enroll("Junk", image=b"GIF89a" + bytes(100))) == grpc.StatusCode.INVALID_ARGUMENT
        for name in ("  Tony Blair  ", "Tony\u200bBlair", "T\u043eny Blair", "\u202eTony Blair", "n" * (1 << 20)):
            assert _code(lambda n=name: c.enroll(n, image=photo)) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: c.enroll("Tony Blair", image=photo, source_name="s" * 300)
                     ) == grpc.StatusCode.INVALID_ARGUMENT  # over 256 characters (10 MB: gRPC's limit, above)
        assert c.enroll("Tony Blair", image=photo, source_name="tb.jpg").samples == 1
        assert [i.name for i in c.identities().identities] == ["Tony Blair"]


def test_streams_over_the_limit_are_refused(server, crop):
    release = threading.Event()

    def held(rid):
        yield request(rid, crop)
        release.wait(60)

    with Client(server.target) as c:
        open_streams = [c.recognize_stream(held(f"s{k}")) for k in range(2)]
        for s in open_streams:
            assert next(s).WhichOneof("outcome") == "result"  # both streams are being served
        assert _code(lambda: next(c.recognize_stream(held("s3")))) == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        for s in open_streams:
            assert list(s) == []
        # a closed stream frees its place; a stream of many frames through a window of 2 is answered in order
        frames = [request(f"f{i}", crop) for i in range(12)]
        assert [r.id for r in c.recognize_stream(iter(frames))] == [f.id for f in frames]
