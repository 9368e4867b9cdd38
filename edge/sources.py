"""Where the edge's frames come from: a camera, a video file, a network stream, a folder of images or one image.

``open_source(spec)`` picks the kind from ``spec``: a number is a camera index, ``scheme://...`` a network stream
(RTSP, HTTP; OpenCV's VideoCapture), a folder its images in name order, an image file (by suffix) one frame, any
other file a video. Every source yields :class:`Frame` objects (BGR, as OpenCV decodes them) with a time stamp on
the source's own clock: a video's timeline, a live source's arrival time, a folder's frame index at ``folder_fps``.

Still images are guarded before they are decoded: the size is read from the file's header and an image over
``max_pixels`` is refused; truncated, 16-bit, alpha and grey files get a clear message or are converted
(:func:`read_image`). A folder source skips an unreadable image, with the reason, and carries on.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facelink.edge.errors import EdgeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_FOLDER_FPS = 15.0


@dataclass
class Frame:
    """One frame: ``bgr`` H×W×3 uint8, ``t`` seconds on the source's clock, ``index`` counted from 0 per source."""
    index: int
    t: float
    bgr: np.ndarray
    name: str

    @property
    def rgb(self) -> np.ndarray:
        return cv2.cvtColor(self.bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------------------------------------------
# Still images, guarded
# ----------------------------------------------------------------------------------------------------------------
def _truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG file is cut short, or None. A complete JPEG ends with its EOI marker (a few bytes of padding
    after it are tolerated); a complete PNG ends with its IEND chunk."""
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-64:]:
        return "truncated JPEG (no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        return "truncated PNG (no IEND chunk)"
    return None


# Formats stored uncompressed (BMP, PGM/PPM): decoding costs what the file holds, so they are sized after decoding.
UNCOMPRESSED_MAGIC = (b"BM", b"P2", b"P3", b"P5", b"P6")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or WebP header without decoding (facelink.shared.image_header); None for an
    uncompressed format; :class:`EdgeError` for anything else, which no decoder is trusted with."""
    from facelink.shared import image_header

    try:
        info = image_header.read_header(data)
    except image_header.ImageHeaderError as e:
        if data[:2] in UNCOMPRESSED_MAGIC:
            return None
        raise EdgeError(f"not a readable image ({e})") from None
    return info.width, info.height


def to_bgr8(im: np.ndarray, name: str) -> np.ndarray:
    """Any decoded image (grey, grey + alpha, BGR, BGRA; 8 or 16 bits) as H×W×3 uint8 BGR, or a clear error."""
    if im.dtype == np.uint16:
        im = (im >> 8).astype(np.uint8)  # the high byte: 16-bit PNG/TIFF to 8 bits per channel
    elif im.dtype != np.uint8:
        raise EdgeError(f"{name}: {im.dtype} samples are not supported (8- or 16-bit images only)")
    if im.ndim == 2:
        return cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
    channels = im.shape[2]
    if channels == 1:
        return cv2.cvtColor(im[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # grey + alpha: the alpha channel is dropped
        return cv2.cvtColor(im[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return im
    if channels == 4:  # BGRA: the alpha channel is dropped (the pixels keep their colour)
        return cv2.cvtColor(im, cv2.COLOR_BGRA2BGR)
    raise EdgeError(f"{name}: {channels} channels are not supported (grey, colour, with or without alpha)")


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as H×W×3 uint8 BGR. Refused with a clear :class:`EdgeError` before any decoding: a missing or
    empty file, a truncated JPEG/PNG, one whose header says it is over ``max_pixels``, a compressed format whose size
    cannot be read from its header (only PNG, JPEG and WebP can; BMP and PGM/PPM are uncompressed and sized after
    decoding); after decoding: anything OpenCV cannot read. 16-bit images are reduced to 8 bits, alpha dropped, grey
    replicated to three channels."""
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EdgeError(f"{path}: cannot read it ({e.strerror or e})") from None
    if not data:
        raise EdgeError(f"{path}: empty file")
    why = _truncation(data)
    if why:
        raise EdgeError(f"{path}: {why}")
    try:
        size = header_size(data)
    except EdgeError as e:
        raise EdgeError(f"{path}: {e}") from None
    if size is not None:
        check_pixels(size[0], size[1], max_pixels, str(path))
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if im is None or im.size == 0:
        raise EdgeError(f"{path}: not a readable image")
    check_pixels(im.shape[1], im.shape[0], max_pixels, str(path))  # formats without a header reader
    return to_bgr8(im, str(path))


def check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if max_pixels and width * height > max_pixels:
        raise EdgeError(f"{name}: {width}×{height} is {width * height / 1e6:.1f} MP, over the limit of "
                        f"{max_pixels / 1e6:g} MP (raise it with --max-pixels, or scale the image down first)")


def list_images(paths: list[str]) -> list[Path]:
    """Image files named, and those under folders named (recursively, in name order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise EdgeError(f"{p}: no such file or folder")
    if not out:
        raise EdgeError(f"no images found in {' '.join(paths)}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Frame sources
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """A sequence of frames. ``frames(stop)`` ends at the source's end or soon after ``stop`` is set; frames closer
    than ``1 / max_fps`` on the source's clock to the last one yielded are skipped (read, not decoded where the
    backend allows it). ``skipped`` lists (name, reason) for images of a folder that could not be read."""
    spec: str
    kind: str
    max_fps: float | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped_by_rate: int = 0

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        stop = stop or threading.Event()
        last = None
        for frame in self._read(stop):
            if self.max_fps and last is not None and frame.t - last < 1.0 / self.max_fps - 1e-6:
                self.dropped_by_rate += 1
                continue
            last = frame.t
            yield frame
            if stop.is_set():
                return

    def _read(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"source": self.spec, "kind": self.kind, "max_fps": self.max_fps}


@dataclass
class ImageFolder(Source):
    """Still images as frames, ``folder_fps`` frames per second of source time."""
    files: list[Path] = field(default_factory=list)
    folder_fps: float = DEFAULT_FOLDER_FPS

    def _read(self, stop):
        for i, f in enumerate(self.files):
            if stop.is_set():
                return
            try:
                bgr = read_image(f, self.max_pixels)
            except EdgeError as e:
                self.skipped.append((str(f), str(e).removeprefix(f"{f}: ")))
                continue
            yield Frame(i, i / self.folder_fps, bgr, str(f))


@dataclass
class Capture(Source):
    """A camera, a video file or a network stream through ``cv2.VideoCapture``. A video file's frames carry its own
    time stamps; a live source's carry their arrival time."""
    target: int | str = 0
    live: bool = True
    open_timeout_s: float = 10.0

    def open(self) -> cv2.VideoCapture:
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # OpenCV's own warnings about a missing device; the error below says it in one line
        try:
            cap = cv2.VideoCapture(self.target)
        finally:
            cv2.setLogLevel(level)
        if not cap.isOpened():
            what = {"camera": "no camera at index", "stream": "cannot open the stream", "video": "not a readable video"}
            raise EdgeError(f"{what[self.kind]} {self.target}")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w and h:
            try:
                check_pixels(w, h, self.max_pixels, str(self.target))
            except EdgeError:
                cap.release()
                raise
        return cap

    def _read(self, stop):
        cap = self.open()
        try:
            t0 = time.monotonic()
            i, last_t = 0, 0.0
            while not stop.is_set():
                if self.live:
                    if not cap.grab():
                        return
                    t = time.monotonic() - t0
                    if self.max_fps and i and t - last_t < 1.0 / self.max_fps - 1e-6:
                        self.dropped_by_rate += 1  # grabbed, not decoded: keeps a live source's buffer fresh
                        continue
                    ok, bgr = cap.retrieve()
                else:
                    ok, bgr = cap.read()
                    t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
                if not ok or bgr is None:
                    return
                if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
                    bgr = to_bgr8(bgr, str(self.target))
                last_t = t
                yield Frame(i, t, bgr, f"{self.spec}#{i}")
                i += 1
        finally:
            cap.release()


def open_source(spec: str, *, max_fps: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                folder_fps: float = DEFAULT_FOLDER_FPS) -> Source:
    """The source ``spec`` names (see the module's docstring); a clear :class:`EdgeError` when it names nothing."""
    if max_fps is not None and not max_fps > 0:
        raise EdgeError(f"--max-fps must be > 0, got {max_fps:g}")
    common = {"max_fps": max_fps, "max_pixels": max_pixels}
    if spec.isdigit():
        return Capture(spec, "camera", target=int(spec), live=True, **common)
    if "://" in spec:
        return Capture(spec, "stream", target=spec, live=True, **common)
    path = Path(spec)
    if path.is_dir():
        files = sorted(q for q in path.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        if not files:
            raise EdgeError(f"{path}: no images in this folder")
        return ImageFolder(spec, "folder", files=files, folder_fps=folder_fps, **common)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFolder(spec, "image", files=[path], folder_fps=folder_fps, **common)
        return Capture(spec, "video", target=str(path), live=False, **common)
    raise EdgeError(f"{spec}: no such file, folder or camera (a camera is a number, a stream a URL such as "
                    "rtsp://host/path)")
