"""The facelink bitstream container (``.flk``): one coded image, self-describing and checksummed.

Version 2 (what facelink writes; all integers little-endian)::

    offset  size  field
    0       3     magic b"FLK"
    3       1     format version (2)
    4       1     template id (facelink.shared.alignment.TEMPLATE_IDS): the image is a face crop aligned to that
                  template, whose size it has; 0 = any other image
    5       8     model id (content hash of the model tables)
    13      var   only when the template id is 0: image height, then width (unsigned LEB128, minimal)
    ..            payload: one rANS stream (facelink.shared.rans.encode_parts): the hyper-latent z, then the latent
                  y over the image's own area (see below)
    end-4   4     CRC32 of every byte before it

Version 3 (what a variable-rate model writes: :mod:`facelink.cloud.serving.variable_rate`) is version 2 with the
quality the image was coded at after the model id::

    0 magic (3) · 3 version (3) · 4 template id (1) · 5 model id (8) · 13 quality (2, unsigned, q·256) ·
    15 height, width (LEB128, only when the template id is 0) · payload · CRC32 (4)

The quality is on a grid of 1/256 (:func:`quantize_quality`): the edge codes at a grid value, and the cloud's
synthesis applies the inverse gain of exactly that quality. The entropy coding does not depend on it.

Version 1 (still read, and written on request: ``pack(frame)`` with ``frame.version == 1``)::

    0 magic (3) · 3 version (1) · 4 flags (1; bit 0 = aligned crop) · 5 template id (1) · 6 model id (8) ·
    14 height (2) · 16 width (2) · 18 padding rows (1) · 19 padding columns (1) · 20 hyper-latent height (1) ·
    21 hyper-latent width (1) · z payload length (LEB128) · y payload length (LEB128) · z payload (its own rANS
    stream) · y payload (its own rANS stream) · CRC32 (4)

Everything version 1 stored beside the size (padding, hyper-latent shape) follows from the size: the image is
padded by edge replication to multiples of 64 before the analysis transform. Version 2 also codes only the
latent positions that cover the image, ``ceil(h/16) × ceil(w/16)``, not those that cover its padding alone (for
the edge's 112×112 face crop, 7×7 of 8×8); the decoder takes the entropy model's mean there. A 112×112 aligned
crop carries 17 bytes besides its rANS stream in version 2, against 28–29 bytes and a second stream in version 1.

Bits reported anywhere are ``8 * len(container)``: header, lengths and checksum included.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from facelink.shared.tables import MODEL_ID_BYTES, Y_STRIDE, Z_STRIDE

MAGIC = b"FLK"
FORMAT_VERSION = 2  # what facelink writes for a fixed-rate model
VARIABLE_RATE_VERSION = 3  # what facelink writes for a variable-rate model (the container carries the quality)
READABLE_VERSIONS = (1, 2, 3)
QUALITY_SCALE = 256  # version 3 stores round(quality · QUALITY_SCALE) in two bytes
FLAG_ALIGNED = 0x01  # version 1 only
_V1 = struct.Struct("<3sBBB8sHHBBBB")
_V2 = struct.Struct("<3sBB8s")
_V3 = struct.Struct("<3sBB8sH")
MAX_DIM = 0xFFFF


class BitstreamError(ValueError):
    """A container that cannot be decoded: the message says why."""


class TruncatedError(BitstreamError):
    pass


class ChecksumError(BitstreamError):
    pass


@dataclass(frozen=True)
class Frame:
    """One coded image. ``streams``: version 1, the z and the y rANS streams; version 2, one stream for both."""

    model_id: str  # hex
    height: int
    width: int
    streams: tuple[bytes, ...]
    template_id: int = 0
    version: int = FORMAT_VERSION
    quality: float | None = None  # version 3 only: the quality the latent was coded at (on the 1/256 grid)

    @property
    def aligned(self) -> bool:
        return bool(self.template_id)

    @property
    def pad_bottom(self) -> int:
        return padding_for(self.height, self.width)[0]

    @property
    def pad_right(self) -> int:
        return padding_for(self.height, self.width)[1]

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def z_shape(self) -> tuple[int, int]:
        ph, pw = self.padded_shape
        return ph // Z_STRIDE, pw // Z_STRIDE

    @property
    def y_shape(self) -> tuple[int, int]:
        """The latent of the padded image (what the hyper-synthesis predicts)."""
        return self.z_shape[0] * 4, self.z_shape[1] * 4

    @property
    def coded_y_shape(self) -> tuple[int, int]:
        """The top-left part of the latent that the payload codes."""
        return coded_latent_shape(self.height, self.width, self.version)


def padding_for(height: int, width: int) -> tuple[int, int]:
    return (-height) % Z_STRIDE, (-width) % Z_STRIDE


def coded_latent_shape(height: int, width: int, version: int = FORMAT_VERSION) -> tuple[int, int]:
    """Rows and columns of the latent y that a container of this version codes for an image of this size."""
    if version == 1:
        pb, pr = padding_for(height, width)
        return (height + pb) // Y_STRIDE, (width + pr) // Y_STRIDE
    return -(-height // Y_STRIDE), -(-width // Y_STRIDE)


def template_size(template_id: int) -> tuple[int, int]:
    """(height, width) of an aligned crop with this template id."""
    from facelink.shared.alignment import TEMPLATE_IDS

    t = TEMPLATE_IDS.get(template_id)
    if t is None:
        raise BitstreamError(f"unknown template id {template_id}; known: {', '.join(map(str, TEMPLATE_IDS))}")
    return t.height, t.width


def quantize_quality(q: float) -> float:
    """``q`` on the grid version 3 stores (steps of 1/QUALITY_SCALE); a ValueError for what it cannot store."""
    q = float(q)
    if not (q == q and 0.0 <= q <= 0xFFFF / QUALITY_SCALE):
        raise ValueError(f"quality {q} cannot be stored (0 ≤ q ≤ {0xFFFF / QUALITY_SCALE})")
    return round(q * QUALITY_SCALE) / QUALITY_SCALE


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
    start = pos
    while True:
        if pos >= end:
            raise TruncatedError("container ends inside a length field")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and pos - start > 1:
                raise BitstreamError("length field not in its shortest form")
            return n, pos
        shift += 7
        if shift > 35:
            raise BitstreamError("length field too long")


def pack(frame: Frame) -> bytes:
    _check(frame)
    if frame.version == 1:
        z_bytes, y_bytes = frame.streams
        zh, zw = frame.z_shape
        head = _V1.pack(MAGIC, 1, FLAG_ALIGNED if frame.aligned else 0, frame.template_id,
                        bytes.fromhex(frame.model_id), frame.height, frame.width, frame.pad_bottom,
                        frame.pad_right, zh, zw)
        body = head + _leb128(len(z_bytes)) + _leb128(len(y_bytes)) + z_bytes + y_bytes
    else:
        if frame.version == 3:
            body = _V3.pack(MAGIC, 3, frame.template_id, bytes.fromhex(frame.model_id),
                            round(frame.quality * QUALITY_SCALE))
        else:
            body = _V2.pack(MAGIC, 2, frame.template_id, bytes.fromhex(frame.model_id))
        if not frame.template_id:
            body += _leb128(frame.height) + _leb128(frame.width)
        body += frame.streams[0]
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> Frame:
    """Parse and verify a container of any readable version; every way it can be wrong raises
    :class:`BitstreamError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 3 or data[:3] != MAGIC:
        raise BitstreamError("not a facelink bitstream (bad magic)")
    if len(data) < 4:
        raise TruncatedError(f"container of {len(data)} bytes is shorter than its header")
    version = data[3]
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"bitstream format version {version}; this facelink reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
    frame = _unpack_v1(data) if version == 1 else _unpack_v2(data, version)
    _check(frame)
    return frame


def _verify_crc(data: bytes) -> int:
    end = len(data) - 4
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise ChecksumError("CRC32 mismatch: the bitstream was damaged in transit or storage")
    return end


def _unpack_v1(data: bytes) -> Frame:
    if len(data) < _V1.size + 2 + 4:
        raise TruncatedError(f"container of {len(data)} bytes is shorter than its header")
    _, _, flags, template_id, model_id, h, w, pb, pr, zh, zw = _V1.unpack_from(data)
    end = len(data) - 4
    z_len, pos = _read_leb128(data, _V1.size, end)
    y_len, pos = _read_leb128(data, pos, end)
    if pos + z_len + y_len != end:
        if pos + z_len + y_len > end:
            raise TruncatedError(f"container truncated: payload needs {pos + z_len + y_len + 4} bytes, got {len(data)}")
        raise BitstreamError(f"{end - pos - z_len - y_len} unexpected bytes after the payload")
    _verify_crc(data)
    if flags & ~FLAG_ALIGNED:
        raise BitstreamError(f"unknown flag bits {flags:#04x}")
    if bool(flags & FLAG_ALIGNED) != bool(template_id):
        raise BitstreamError("aligned-crop flag and template id disagree")
    frame = Frame(model_id.hex(), h, w, (data[pos : pos + z_len], data[pos + z_len : end]), template_id, 1)
    if (pb, pr) != (frame.pad_bottom, frame.pad_right):
        raise BitstreamError(f"padding {pb},{pr} is not the padding of a {h}×{w} image to multiples of {Z_STRIDE}")
    if (zh, zw) != frame.z_shape:
        raise BitstreamError(f"hyper-latent shape {(zh, zw)} does not match the padded image {frame.padded_shape}")
    return frame


def _unpack_v2(data: bytes, version: int = 2) -> Frame:
    """Versions 2 and 3 (the same but for version 3's quality field)."""
    head = _V3 if version == 3 else _V2
    if len(data) < head.size + 4:
        raise TruncatedError(f"container of {len(data)} bytes is shorter than its header")
    _, _, template_id, model_id, *rest = head.unpack_from(data)
    quality = rest[0] / QUALITY_SCALE if version == 3 else None
    end = _verify_crc(data)
    pos = head.size
    if template_id:
        h, w = template_size(template_id)
    else:
        h, pos = _read_leb128(data, pos, end)
        w, pos = _read_leb128(data, pos, end)
    if pos >= end:
        raise TruncatedError("container has no payload")
    return Frame(model_id.hex(), h, w, (data[pos:end],), template_id, version, quality)


def _check(frame: Frame) -> None:
    if frame.version not in READABLE_VERSIONS:
        raise BitstreamError(f"bitstream format version {frame.version}; known: "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
    if len(bytes.fromhex(frame.model_id)) != MODEL_ID_BYTES:
        raise BitstreamError(f"model id must be {MODEL_ID_BYTES} bytes")
    if not (0 < frame.height <= MAX_DIM and 0 < frame.width <= MAX_DIM):
        raise BitstreamError(f"image size {frame.height}×{frame.width} out of range")
    if not 0 <= frame.template_id <= 0xFF:
        raise BitstreamError(f"template id {frame.template_id} does not fit one byte")
    if len(frame.streams) != (2 if frame.version == 1 else 1):
        raise BitstreamError(f"a version {frame.version} container holds {2 if frame.version == 1 else 1} "
                             f"rANS stream(s), got {len(frame.streams)}")
    if (frame.version == 3) != (frame.quality is not None):
        raise BitstreamError("a version 3 container carries the quality it was coded at; versions 1 and 2 carry "
                             f"none (version {frame.version}, quality {frame.quality})")
    if frame.version == 3:
        try:
            on_grid = quantize_quality(frame.quality) == frame.quality
        except (TypeError, ValueError) as e:
            raise BitstreamError(str(e)) from e
        if not on_grid:
            raise BitstreamError(f"quality {frame.quality} is not on the 1/{QUALITY_SCALE} grid a container stores")
    if frame.version >= 2 and frame.template_id and (frame.height, frame.width) != template_size(frame.template_id):
        side = "×".join(map(str, template_size(frame.template_id)))
        raise BitstreamError(f"an aligned crop with template id {frame.template_id} is {side}, "
                             f"got {frame.height}×{frame.width}")
