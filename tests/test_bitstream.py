"""The .flk container: round trip of both versions, and a clear error for every way it can be wrong."""
import struct
import zlib

import pytest

from facelink.shared import bitstream
from facelink.shared.bitstream import BitstreamError, ChecksumError, Frame, TruncatedError, pack, unpack

MID = "0123456789abcdef"


def _frame(**kw):
    args = dict(model_id=MID, height=112, width=112, streams=(b"\x02" * 312,), template_id=1)
    args.update(kw)
    return Frame(**args)


def _v1(**kw):
    return _frame(streams=(b"\x01" * 12, b"\x02" * 300), version=1, **kw)


def _recrc(data: bytes) -> bytes:
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_and_size():
    f = _frame()
    data = pack(f)
    assert unpack(data) == f
    # an aligned crop: magic, version, template id, model id (13 bytes), the stream, CRC: its size is implied
    assert len(data) == 13 + 312 + 4
    assert (f.padded_shape, f.z_shape, f.y_shape, f.coded_y_shape) == ((128, 128), (2, 2), (8, 8), (7, 7))
    full = _frame(height=250, width=250, template_id=0)
    assert unpack(pack(full)) == full
    assert len(pack(full)) == 13 + 2 + 2 + 312 + 4  # height and width, two bytes each
    assert full.coded_y_shape == full.y_shape == (16, 16)


@pytest.mark.parametrize("tid,side,padded,coded", [(2, 96, 128, 6), (3, 80, 128, 5)])
def test_smaller_crop_templates_name_their_size(tid, side, padded, coded):
    f = _frame(height=side, width=side, template_id=tid)
    data = pack(f)
    assert unpack(data) == f and len(data) == 13 + 312 + 4
    assert (f.padded_shape, f.coded_y_shape) == ((padded, padded), (coded, coded))
    with pytest.raises(BitstreamError, match=f"is {side}×{side}"):
        pack(_frame(template_id=tid))  # 112×112 is not this template's size


def test_version_1_is_still_read_and_written():
    f = _v1()
    data = pack(f)
    # 22 fixed bytes + two 1–2 byte lengths + payload + 4 CRC bytes
    assert len(data) == 22 + 1 + 2 + 12 + 300 + 4
    assert unpack(data) == f and f.coded_y_shape == (8, 8)
    g = _v1(height=250, width=250, template_id=0)
    assert unpack(pack(g)).y_shape == (16, 16)


@pytest.mark.parametrize("kw,msg", [
    (dict(height=0), "out of range"),
    (dict(height=100), "is 112×112"),
    (dict(template_id=9), "unknown template"),
    (dict(streams=(b"a", b"b")), "stream"),
    (dict(version=3), "version"),
    (dict(model_id="abcd"), "model id"),
])
def test_inconsistent_frames_are_refused(kw, msg):
    with pytest.raises(BitstreamError, match=msg):
        pack(_frame(**kw))


@pytest.mark.parametrize("offset,value,msg", [
    (4, 0x02, "flag"), (4, 0x00, "template"), (18, 0, "padding"), (20, 3, "hyper-latent shape")])
def test_version_1_geometry_is_checked(offset, value, msg):
    data = bytearray(pack(_v1()))
    data[offset] = value
    with pytest.raises(BitstreamError, match=msg):
        unpack(_recrc(bytes(data)))


@pytest.mark.parametrize("make", [_frame, _v1, lambda: _frame(height=250, width=250, template_id=0)])
def test_damage_truncation_and_foreign_data(make):
    data = pack(make())
    bad = bytearray(data)
    bad[40] ^= 1
    with pytest.raises(ChecksumError):
        unpack(bytes(bad))
    for cut in (1, 3, 5, 14, 100, len(data) - 10):
        with pytest.raises(BitstreamError):
            unpack(data[:cut])
    with pytest.raises(BitstreamError, match="magic"):
        unpack(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(BitstreamError):
        unpack("not bytes")


def test_version_1_trailing_bytes_and_v2_missing_payload():
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        data = pack(_v1())
        unpack(_recrc(data[:-4] + b"\0\0\0\0" + b"\0\0\0\0"))
    with pytest.raises(TruncatedError):
        unpack(pack(_v1())[:-20])
    head = pack(_frame())[:13]
    with pytest.raises(TruncatedError, match="no payload"):
        unpack(head + struct.pack("<I", zlib.crc32(head)))
    # a full frame's size written in a longer form than needed is refused: one frame, one byte string
    full = pack(_frame(height=250, width=250, template_id=0))
    padded = full[:13] + bytes([0xFA, 0x81, 0x00]) + full[15:-4]
    with pytest.raises(BitstreamError, match="shortest"):
        unpack(_recrc(padded + b"\0\0\0\0"))


def test_future_version_is_refused_clearly():
    data = bytearray(pack(_frame()))
    data[3] = max(bitstream.READABLE_VERSIONS) + 1
    with pytest.raises(BitstreamError, match="version"):
        unpack(_recrc(bytes(data)))
