"""Work limits the server applies before it does the work: the pixel budget of a container, decode memory in flight,
Enroll images sized from their header, bounded labels and identity names that are already canonical.

Every refusal here is cheap (a header read, a length check) and its message is bounded: nothing a client sent is
echoed back at more than :data:`ECHO_CHARS` characters.
"""
from __future__ import annotations

import threading
import unicodedata

from facelink.shared import bitstream

ECHO_CHARS = 40  # characters of a client's string quoted in an error message
SMALL_FRAME_PIXELS = 256 * 256  # frames this small decode without taking from the shared pixel budget


class FrameTooLargeError(bitstream.BitstreamError):
    """A well-formed container or image whose declared size is over the server's limit (answered FRAME_TOO_LARGE)."""


class InvalidArgument(ValueError):
    """A request field the server refuses (answered INVALID_ARGUMENT); the message says why."""


def echo(value: str) -> str:
    """A client's string, shortened for an error message."""
    return repr(value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…")


def padded_pixels(frame: bitstream.Frame) -> int:
    ph, pw = frame.padded_shape
    return ph * pw


def check_frame(frame: bitstream.Frame, max_pixels: int) -> int:
    """The padded pixel count the synthesis of ``frame`` will produce, or :class:`FrameTooLargeError` when it is over
    ``max_pixels``: checked from the parsed header, before any entropy decoding."""
    n = padded_pixels(frame)
    if n > max_pixels:
        raise FrameTooLargeError(f"container declares {frame.width}×{frame.height} ({n} pixels padded), over the "
                                 f"server's limit of {max_pixels} pixels")
    return n


class PixelBudget:
    """Bounds decode memory: frames over :data:`SMALL_FRAME_PIXELS` take their padded pixel count from a shared
    budget while they decode and wait when it is spent (the synthesis of one megapixel needs about 320 MB), so a few
    large frames at once cannot add up to gigabytes; small frames (aligned crops) never wait."""

    def __init__(self, total: int):
        self.total = int(total)
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, pixels: int) -> int:
        if pixels <= SMALL_FRAME_PIXELS:
            return 0
        n = min(pixels, self.total)
        with self._cond:
            while self.used + n > self.total:
                self._cond.wait()
            self.used += n
        return n

    def release(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()

    class _Held:
        def __init__(self, budget: PixelBudget, n: int):
            self.budget, self.n = budget, n

        def __enter__(self):
            return self

        def __exit__(self, *_):
            self.budget.release(self.n)

    def hold(self, pixels: int) -> PixelBudget._Held:
        return PixelBudget._Held(self, self.acquire(pixels))


def check_text(value: str, what: str, limit: int) -> str:
    """A label (a request id, a source): at most ``limit`` characters, no control or format characters."""
    if len(value) > limit:
        raise InvalidArgument(f"{what} of {len(value)} characters; the limit is {limit}")
    for ch in value:
        if unicodedata.category(ch)[0] == "C":
            raise InvalidArgument(f"{what} contains U+{ord(ch):04X} (category {unicodedata.category(ch)}): control "
                                  "and format characters are not allowed")
    return value


def check_identity_name(name: str) -> str:
    """An identity name as a client sent it, accepted only when it is already canonical.

    The gallery's :func:`~facelink.cloud.serving.gallery.normalize_name` defines the canonical form (NFKC, single
    inner spaces, no control/format/zero-width/bidi characters, one script among Latin, Greek and Cyrillic). A name
    that normalisation would change is refused rather than stored under its canonical form: "  Colin Powell  ",
    "Colin\\u00a0Powell" or a full-width "Ｃｏｌｉｎ" would otherwise add samples to "Colin Powell" (gallery
    poisoning through an alias). The message names the canonical form so a client can resend it."""
    from facelink.cloud.serving.gallery import GalleryError, normalize_name

    try:
        canonical = normalize_name(name)
    except GalleryError as e:
        raise InvalidArgument(str(e)) from None
    if canonical != name:
        raise InvalidArgument(f"identity name {echo(name)} is not in canonical form (NFKC, no surrounding or "
                              f"repeated spaces); its canonical form is {echo(canonical)}: send that")
    return name
