"""The facelink bitstream container (``.flk``): one coded image, self-describing and checksummed.

Layout (all integers little-endian)::

    offset  size  field
    0       3     magic b"FLK"
    3       1     format version (FORMAT_VERSION)
    4       1     flags: bit 0 = the image is an aligned face crop (template below)
    5       1     template id (facelink.shared.alignment.TEMPLATE_IDS; 0 = none)
    6       8     model id (content hash of the model tables)
    14      2     image height (before padding)
    16      2     image width
    18      1     padding rows added at the bottom (to a multiple of 64)
    19      1     padding columns added at the right
    20      1     hyper-latent height (latent y is 4× taller)
    21      1     hyper-latent width
    22      var   z payload length (unsigned LEB128)
    ..      var   y payload length (unsigned LEB128)
    ..            z payload, y payload
    end-4   4     CRC32 of every byte before it

Bits reported anywhere are ``8 * len(container)``: header, lengths and checksum included.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from facelink.shared.tables import MODEL_ID_BYTES, Z_STRIDE

MAGIC = b"FLK"
FORMAT_VERSION = 1
FLAG_ALIGNED = 0x01
_FIXED = struct.Struct("<3sBBB8sHHBBBB")
MAX_DIM = 0xFFFF


class BitstreamError(ValueError):
    """A container that cannot be decoded: the message says why."""


class TruncatedError(BitstreamError):
    pass


class ChecksumError(BitstreamError):
    pass


@dataclass(frozen=True)
class Frame:
    model_id: str  # hex
    height: int
    width: int
    pad_bottom: int
    pad_right: int
    z_shape: tuple[int, int]
    z_bytes: bytes
    y_bytes: bytes
    aligned: bool = False
    template_id: int = 0

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def y_shape(self) -> tuple[int, int]:
        return self.z_shape[0] * 4, self.z_shape[1] * 4


def padding_for(height: int, width: int) -> tuple[int, int]:
    return (-height) % Z_STRIDE, (-width) % Z_STRIDE


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_leb128(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= end:
            raise TruncatedError("container ends inside a length field")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 35:
            raise BitstreamError("length field too long")


def pack(frame: Frame) -> bytes:
    _check_geometry(frame)
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, FLAG_ALIGNED if frame.aligned else 0, frame.template_id,
                       bytes.fromhex(frame.model_id), frame.height, frame.width, frame.pad_bottom,
                       frame.pad_right, frame.z_shape[0], frame.z_shape[1])
    body = head + _leb128(len(frame.z_bytes)) + _leb128(len(frame.y_bytes)) + frame.z_bytes + frame.y_bytes
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> Frame:
    """Parse and verify a container; every way it can be wrong raises :class:`BitstreamError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 3 or data[:3] != MAGIC:
        raise BitstreamError("not a facelink bitstream (bad magic)")
    if len(data) < _FIXED.size + 2 + 4:
        raise TruncatedError(f"container of {len(data)} bytes is shorter than its header")
    magic, version, flags, template_id, model_id, h, w, pb, pr, zh, zw = _FIXED.unpack_from(data)
    if version != FORMAT_VERSION:
        raise BitstreamError(f"bitstream format version {version}; this facelink reads version {FORMAT_VERSION}")
    end = len(data) - 4
    z_len, pos = _read_leb128(data, _FIXED.size, end)
    y_len, pos = _read_leb128(data, pos, end)
    if pos + z_len + y_len != end:
        if pos + z_len + y_len > end:
            raise TruncatedError(f"container truncated: payload needs {pos + z_len + y_len + 4} bytes, got {len(data)}")
        raise BitstreamError(f"{end - pos - z_len - y_len} unexpected bytes after the payload")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise ChecksumError("CRC32 mismatch: the bitstream was damaged in transit or storage")
    if flags & ~FLAG_ALIGNED:
        raise BitstreamError(f"unknown flag bits {flags:#04x}")
    frame = Frame(model_id.hex(), h, w, pb, pr, (zh, zw), data[pos : pos + z_len],
                  data[pos + z_len : end], bool(flags & FLAG_ALIGNED), template_id)
    _check_geometry(frame)
    return frame


def _check_geometry(frame: Frame) -> None:
    if len(bytes.fromhex(frame.model_id)) != MODEL_ID_BYTES:
        raise BitstreamError(f"model id must be {MODEL_ID_BYTES} bytes")
    if not (0 < frame.height <= MAX_DIM and 0 < frame.width <= MAX_DIM):
        raise BitstreamError(f"image size {frame.height}×{frame.width} out of range")
    if (frame.pad_bottom, frame.pad_right) != padding_for(frame.height, frame.width):
        raise BitstreamError(f"padding {frame.pad_bottom},{frame.pad_right} is not the padding of a "
                             f"{frame.height}×{frame.width} image to multiples of {Z_STRIDE}")
    ph, pw = frame.padded_shape
    if frame.z_shape != (ph // Z_STRIDE, pw // Z_STRIDE):
        raise BitstreamError(f"hyper-latent shape {frame.z_shape} does not match the padded image {ph}×{pw}")
    if frame.aligned != bool(frame.template_id):
        raise BitstreamError("aligned-crop flag and template id disagree")
