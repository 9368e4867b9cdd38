"""An image file's format and size read from its header, before anything is decoded (no OpenCV, no Pillow).

A PNG or JPEG of a few megabytes can declare 30000×30000 pixels and cost gigabytes to decode; the size is in the
first bytes (PNG's IHDR chunk, JPEG's start-of-frame marker, WebP's VP8/VP8L/VP8X chunk), so a caller checks it
against a pixel budget with :func:`check_image` first and decodes only what passes. The server does this for every
Enroll image; the edge does it for its input files.

Only the formats whose size can be read here are accepted (PNG, JPEG, WebP); anything else is refused rather than
handed to a decoder whose cost is unknown.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, and their arithmetic-coded kinds);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI, EOI.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])
FORMATS = ("png", "jpeg", "webp")
# Bytes read at most: a JPEG's frame header may follow EXIF (64 KB) and several ICC profile segments.
HEADER_BYTES = 1 << 20


class ImageHeaderError(ValueError):
    """Not an image this module can size, or a header that contradicts itself; the message says why."""


class ImageTooLarge(ImageHeaderError):
    """A well-formed header declaring more pixels (or a longer side) than allowed."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png", "jpeg" or "webp"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageInfo:
    """Format and size of an encoded image from its first bytes; :class:`ImageHeaderError` if they cannot be read."""
    data = bytes(data[:HEADER_BYTES])
    if data.startswith(PNG_MAGIC):
        info = _png(data)
    elif data.startswith(b"\xff\xd8"):
        info = _jpeg(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        info = _webp(data)
    else:
        raise ImageHeaderError("not a PNG, JPEG or WebP file (the formats whose size is checked before decoding)")
    if info.width <= 0 or info.height <= 0:
        raise ImageHeaderError(f"{info.format} header declares an empty image ({info.width}×{info.height})")
    return info


def check_image(data: bytes, max_pixels: int, max_side: int = 1 << 15) -> ImageInfo:
    """:func:`read_header`, then :class:`ImageTooLarge` if the image has more than ``max_pixels`` pixels or a side
    longer than ``max_side``."""
    info = read_header(data)
    if info.pixels > max_pixels or max(info.width, info.height) > max_side:
        raise ImageTooLarge(f"{info.format} image of {info.width}×{info.height} ({info.pixels} pixels) exceeds the "
                            f"limit of {max_pixels} pixels (longest side {max_side})")
    return info


def _png(data: bytes) -> ImageInfo:
    # signature (8), then the IHDR chunk: length (4) = 13, type (4) = IHDR, width (4), height (4), ...
    if len(data) < 8 + 8 + 13:
        raise ImageHeaderError("PNG file shorter than its IHDR chunk")
    length, ctype, width, height = struct.unpack_from(">I4sII", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise ImageHeaderError("PNG file whose first chunk is not a 13-byte IHDR")
    return ImageInfo("png", width, height)


def _jpeg(data: bytes) -> ImageInfo:
    pos, n = 2, len(data)
    while True:
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > n:
            raise ImageHeaderError("JPEG file ends before its frame header (SOF)")
        if data[pos] != 0xFF:
            raise ImageHeaderError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        pos += 2
        if marker in _STANDALONE:
            if marker == 0xD9:
                raise ImageHeaderError("JPEG file ends (EOI) before its frame header (SOF)")
            continue
        if marker == 0xDA:
            raise ImageHeaderError("JPEG scan data (SOS) before any frame header (SOF)")
        if pos + 2 > n:
            raise ImageHeaderError("JPEG file ends inside a marker's length")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise ImageHeaderError("JPEG marker with a length under 2")
        if marker in _SOF:
            if length < 8 or pos + 7 > n:
                raise ImageHeaderError("JPEG frame header (SOF) truncated")
            height, width = struct.unpack_from(">HH", data, pos + 3)
            if height == 0:
                # a height of 0 defers it to a DNL marker after the first scan: unknown before decoding
                raise ImageHeaderError("JPEG frame header leaves the height to a later DNL marker")
            return ImageInfo("jpeg", width, height)
        pos += length


def _webp(data: bytes) -> ImageInfo:
    if len(data) < 30:
        raise ImageHeaderError("WebP file shorter than its first chunk header")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # frame tag (3), start code 9d 01 2a (3), then 14-bit width and height (2 scaling bits each)
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageHeaderError("WebP VP8 chunk without its start code")
        w, h = struct.unpack_from("<HH", data, 26)
        return ImageInfo("webp", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ImageHeaderError("WebP VP8L chunk without its signature byte")
        (bits,) = struct.unpack_from("<I", data, 21)
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo("webp", w, h)
    raise ImageHeaderError(f"WebP file with an unknown first chunk {chunk!r}")
