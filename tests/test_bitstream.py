"""The .flk container: round trip, and a clear error for every way it can be wrong."""
import struct
import zlib

import pytest

from facelink.shared import bitstream
from facelink.shared.bitstream import BitstreamError, ChecksumError, Frame, TruncatedError, pack, unpack

MID = "0123456789abcdef"


def _frame(**kw):
    args = dict(model_id=MID, height=112, width=112, pad_bottom=16, pad_right=16, z_shape=(2, 2),
                z_bytes=b"\x01" * 12, y_bytes=b"\x02" * 300, aligned=True, template_id=1)
    args.update(kw)
    return Frame(**args)


def _recrc(data: bytes) -> bytes:
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_and_size():
    f = _frame()
    data = pack(f)
    assert unpack(data) == f
    # 22 fixed bytes + two 1–2 byte lengths + payload + 4 CRC bytes
    assert len(data) == 22 + 1 + 2 + 12 + 300 + 4


def test_full_frame_geometry():
    f = _frame(height=250, width=250, pad_bottom=6, pad_right=6, z_shape=(4, 4), aligned=False, template_id=0)
    assert unpack(pack(f)).y_shape == (16, 16)


@pytest.mark.parametrize("kw,msg", [
    (dict(pad_bottom=0), "padding"),
    (dict(z_shape=(3, 2)), "hyper-latent shape"),
    (dict(template_id=0), "template"),
    (dict(height=0), "out of range"),
])
def test_inconsistent_geometry_is_refused(kw, msg):
    with pytest.raises(BitstreamError, match=msg):
        pack(_frame(**kw))


def test_damage_truncation_and_foreign_data():
    data = pack(_frame())
    bad = bytearray(data)
    bad[40] ^= 1
    with pytest.raises(ChecksumError):
        unpack(bytes(bad))
    for cut in (1, 5, 100, len(data) - 10):
        with pytest.raises(BitstreamError):
            unpack(data[:cut])
    with pytest.raises(TruncatedError):
        unpack(data[:-20])
    with pytest.raises(BitstreamError, match="magic"):
        unpack(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        unpack(_recrc(data[:-4] + b"\0\0\0\0" + b"\0\0\0\0"))
    with pytest.raises(BitstreamError):
        unpack("not bytes")


def test_future_version_is_refused_clearly():
    data = bytearray(pack(_frame()))
    data[3] = bitstream.FORMAT_VERSION + 1
    with pytest.raises(BitstreamError, match="version"):
        unpack(_recrc(bytes(data)))
