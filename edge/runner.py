"""``facelink-edge run``: frames from a source, faces detected and tracked, the best crop of each track coded and sent.

Per frame: YuNet finds every face; each is aligned to the crop template and scored (size, sharpness, pose); the
:class:`facelink.edge.tracking.CropSelector` decides which crops go out (``every_face``: all of them, the baseline
that tracking saves against); only those are encoded and handed to the sender (or counted, offline). A stop request
(SIGINT, SIGTERM: ``stop`` set) ends the loop after the current frame; the tracks' unsent best crops are sent, the
answers still owed are awaited, and the report says what was seen, sent and saved.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from facelink.edge.encoder import EdgeEncoder
from facelink.edge.rate_control import BudgetError, encode_within
from facelink.edge.sender import Outgoing, Sender
from facelink.edge.sources import Source
from facelink.edge.tracking import Candidate, CropSelector, Selected, crop_quality
from facelink.shared.alignment import Template, align
from facelink.shared.detection import Detection, YuNet

# Detection looks at the frame shrunk to this width: on 640×480 frames (facelink bench edge-pipeline) it found 316 of
# the 318 faces full-size detection finds in under a third of the time; the cost is the smallest face found, twice
# as wide as at full size (found in 90 % of tries: 32 pixels wide in the 640-wide frame against 16).
DEFAULT_DETECT_WIDTH = 320


class ScaledDetector:
    """YuNet on the frame shrunk to at most ``width`` pixels wide (0: never shrunk); boxes and landmarks come back in
    the frame's own coordinates, so alignment still samples the full-resolution frame. Detection costs about the
    pixels it looks at; a face must be about as many pixels wide in the shrunk frame as YuNet needs at full size
    (see :data:`DEFAULT_DETECT_WIDTH`)."""

    def __init__(self, width: int = DEFAULT_DETECT_WIDTH, detector: YuNet | None = None):
        if width < 0:
            raise ValueError(f"detection width must be >= 0, got {width}")
        self.width = width
        self.detector = detector or YuNet()

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        h, w = bgr.shape[:2]
        if not self.width or w <= self.width:
            return self.detector.detect(bgr)
        s = self.width / w
        small = cv2.resize(bgr, (self.width, max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        return [Detection(d.box / s, d.landmarks / s, d.score) for d in self.detector.detect(small)]


@dataclass
class RunStats:
    frames: int = 0
    faces: int = 0
    crops_sent: int = 0
    bytes_sent: int = 0
    over_budget: int = 0  # crops not sent: not even the lowest quality fits --max-bytes
    encode_ms: list[float] = field(default_factory=list)

    def report(self, selector: CropSelector | None, source: Source, seconds: float) -> dict:
        mean = self.bytes_sent / self.crops_sent if self.crops_sent else 0.0
        every = self.faces * mean
        return {
            **source.describe(), "frames": self.frames, "frames_skipped_by_max_fps": source.dropped_by_rate,
            "unreadable": [{"file": f, "why": why} for f, why in source.skipped],
            "faces_detected": self.faces, "faces_tracked": selector.tracks if selector else None,
            "crops_sent": self.crops_sent, "bytes_sent": self.bytes_sent, "mean_bytes_per_crop": round(mean, 1),
            "crops_over_budget": self.over_budget,
            "sent_because": dict(selector.reasons) if selector else {"every-face": self.crops_sent},
            # every detected face, each at the mean size of the crops sent (they are all one crop template)
            "bytes_if_every_face_sent": round(every),
            "saving": round(1.0 - self.bytes_sent / every, 4) if every else 0.0,
            "encode_ms_median": round(float(np.median(self.encode_ms)), 2) if self.encode_ms else None,
            "seconds": round(seconds, 2), "frames_per_second": round(self.frames / seconds, 2) if seconds else None,
        }


class EdgeRun:
    """The loop of ``facelink-edge run`` over one source (see the module's docstring)."""

    def __init__(self, encoder: EdgeEncoder, template: Template, selector: CropSelector | None,
                 sender: Sender | None = None, detector: ScaledDetector | None = None, on_sent=None,
                 max_bytes: int | None = None):
        if max_bytes is not None and not encoder.variable_rate:
            raise ValueError(f"a byte budget needs a variable-rate model; {encoder.bundle.name} has one rate")
        self.encoder = encoder
        self.max_bytes = max_bytes
        self.template = template
        self.selector = selector
        self.sender = sender
        self.detector = detector or ScaledDetector()
        self.on_sent = on_sent or (lambda row: None)
        self.stats = RunStats()

    def faces(self, bgr: np.ndarray):
        """Every face of a BGR frame: (detection, aligned BGR crop, quality)."""
        out = []
        for det in self.detector.detect(bgr):
            crop = align(bgr, det.landmarks, self.template)
            out.append((det, crop, crop_quality(crop, det, self.template)))
        return out

    def run(self, source: Source, stop: threading.Event | None = None) -> dict:
        stop = stop or threading.Event()
        t0 = time.perf_counter()
        for frame in source.frames(stop):
            self.stats.frames += 1
            faces = self.faces(frame.bgr)
            if self.selector is None:
                self.stats.faces += len(faces)
                chosen = [Selected(0, Candidate(crop, q, det, frame.t, frame.index, frame.name), "every-face", 1)
                          for det, crop, q in faces]
            else:
                chosen = self.selector.update(frame.t, frame.index, faces, frame.name)
            for s in chosen:
                self._send(s)
            if self.sender is not None and self.sender.failed:
                break
        if self.selector is not None:
            self.stats.faces = self.selector.faces
            for s in self.selector.flush():
                if self.sender is None or not self.sender.failed:
                    self._send(s)
        return self.stats.report(self.selector, source, time.perf_counter() - t0)

    def _send(self, s: Selected) -> None:
        t0 = time.perf_counter()
        rgb = np.ascontiguousarray(s.candidate.crop[:, :, ::-1])
        quality = self.encoder.quality  # a variable-rate model's (None for a rate point)
        if self.max_bytes is None:
            data = self.encoder.encode(rgb, self.template)
        else:
            try:
                coded = encode_within(self.encoder, rgb, self.max_bytes, self.template)
            except BudgetError:
                self.stats.over_budget += 1
                return
            data, quality = coded.data, coded.quality
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.encode_ms.append(ms)
        self.stats.crops_sent += 1
        self.stats.bytes_sent += len(data)
        c = s.candidate
        fields = {"frame": c.frame_index, "t": round(c.t, 3), "track": s.track, "reason": s.reason,
                  "bpp": round(8 * len(data) / (self.template.width * self.template.height), 4),
                  "quality": c.quality.as_dict()}
        if quality is not None:
            fields["codec_quality"] = quality
        item = Outgoing(str(self.stats.crops_sent), data, source=c.frame_name, fields=fields, encode_ms=ms)
        if self.sender is not None:
            self.sender.send(item)
        self.on_sent(dict(fields, id=item.id, source=item.source, bytes=len(data), encode_ms=round(ms, 2)))

