"""Face tracking and crop selection: a camera sees the same person for seconds; the link should carry one good crop.

- :func:`crop_quality` scores an aligned crop from three measurements: the face's size in the frame (a face smaller
  than the crop is up-sampled and carries less detail), sharpness (variance of the Laplacian of the crop, grey) and
  how frontal the pose is (from the five landmarks: the nose's offset from the face's midline, for yaw, and its
  position between the eyes and the mouth, for pitch; roll is undone by alignment).
- :class:`IoUTracker` links detections across frames: boxes that overlap (IoU), or whose five landmarks moved less
  than a fraction of the eye distance (a fast move shrinks IoU but keeps the landmarks' shape).
- :class:`CropSelector` sends the best crop of a track once it has been seen for ``settle_s`` seconds, then again
  only when a clearly better crop appears (``better_margin`` above the best score sent) or, with the best crop since
  the last one, after ``resend_interval_s``. A track that ends before it was sent gets its best crop sent then.

Times are seconds on the source's clock (:class:`facelink.edge.sources.Frame`), so a video file gives the same
selection at any processing speed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facelink.shared.alignment import ARCFACE_112, Template
from facelink.shared.detection import Detection

# The frontal pose's landmarks: the canonical template, where the face looks straight at the camera.
_T = ARCFACE_112.points
_T_EYES, _T_MOUTH = (_T[0] + _T[1]) / 2, (_T[3] + _T[4]) / 2
FRONTAL_NOSE_POSITION = float(np.dot(_T[2] - _T_EYES, _T_MOUTH - _T_EYES) / np.sum((_T_MOUTH - _T_EYES) ** 2))
# Sharpness (Laplacian variance) at which the sharpness factor is one half.
SHARPNESS_HALF = 150.0


@dataclass(frozen=True)
class CropQuality:
    """Each factor in [0, 1]; ``score`` is their product."""
    size: float
    sharpness: float
    frontal: float
    laplacian_var: float

    @property
    def score(self) -> float:
        return self.size * self.sharpness * self.frontal

    def as_dict(self) -> dict:
        return {"score": round(self.score, 4), "size": round(self.size, 3), "sharpness": round(self.sharpness, 3),
                "frontal": round(self.frontal, 3), "laplacian_var": round(self.laplacian_var, 1)}


def frontal_factor(landmarks: np.ndarray) -> float:
    """1 for a face looking at the camera, falling to 0 as yaw or pitch grow (five landmarks, YuNet's order)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eyes, mouth, nose = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2, lm[2]
    eye_d = float(np.linalg.norm(lm[1] - lm[0]))
    axis = mouth - eyes
    length2 = float(np.dot(axis, axis))
    if eye_d < 1e-6 or length2 < 1e-6:
        return 0.0
    rel = nose - eyes
    yaw = abs(float(axis[0] * rel[1] - axis[1] * rel[0])) / np.sqrt(length2) / eye_d  # nose off the midline
    pitch = abs(float(np.dot(rel, axis)) / length2 - FRONTAL_NOSE_POSITION)  # nose up or down between eyes and mouth
    return float(np.clip(1.0 - 2.5 * yaw - 2.5 * pitch, 0.0, 1.0))


def crop_quality(crop: np.ndarray, det: Detection, template: Template = ARCFACE_112) -> CropQuality:
    """The quality of ``crop`` (an aligned crop, BGR or RGB) of the face ``det`` found in its frame."""
    size = float(np.clip(min(det.box[2], det.box[3]) / template.width, 0.0, 1.0))
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    var = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return CropQuality(size, var / (var + SHARPNESS_HALF), frontal_factor(det.landmarks), var)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x, y, w, h boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between two five-landmark sets, in units of ``a``'s eye distance."""
    eye_d = max(float(np.linalg.norm(a[1] - a[0])), 1.0)
    return float(np.mean(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1)) / eye_d)


@dataclass
class Candidate:
    """A crop that may be sent: its pixels (the aligned crop), quality, and where it came from."""
    crop: np.ndarray
    quality: CropQuality
    det: Detection
    t: float
    frame_index: int
    frame_name: str = ""

    @property
    def score(self) -> float:
        return self.quality.score


@dataclass
class Track:
    id: int
    box: np.ndarray
    landmarks: np.ndarray
    first_t: float
    last_t: float
    hits: int = 1
    best: Candidate | None = None  # the best crop since the last one sent
    sent: int = 0
    sent_score: float = 0.0  # the best score sent so far
    last_sent_t: float | None = None


@dataclass
class IoUTracker:
    """Greedy frame-to-frame association: a detection joins the live track it overlaps most (IoU at least
    ``iou_min``, or landmarks moved at most ``landmark_max`` eye distances); the rest start tracks. A track unseen
    for ``max_age_s`` ends."""
    iou_min: float = 0.3
    landmark_max: float = 0.5
    max_age_s: float = 1.0
    tracks: dict[int, Track] = field(default_factory=dict)
    started: int = 0

    def update(self, t: float, dets: list[Detection]) -> tuple[list[Track], list[Track]]:
        """Tracks of ``dets`` (same order) and the tracks that ended at time ``t``."""
        pairs = []
        for tid, tr in self.tracks.items():
            for j, d in enumerate(dets):
                iou = box_iou(tr.box, d.box)
                shift = landmark_shift(tr.landmarks, d.landmarks)
                if iou >= self.iou_min or shift <= self.landmark_max:
                    pairs.append((iou + max(0.0, 1.0 - shift), tid, j))
        assigned: list[Track | None] = [None] * len(dets)
        used = set()
        for _, tid, j in sorted(pairs, reverse=True):
            if tid in used or assigned[j] is not None:
                continue
            tr = self.tracks[tid]
            tr.box, tr.landmarks, tr.last_t = dets[j].box, dets[j].landmarks, t
            tr.hits += 1
            assigned[j] = tr
            used.add(tid)
        for j, d in enumerate(dets):
            if assigned[j] is None:
                self.started += 1
                tr = Track(self.started, d.box, d.landmarks, t, t)
                self.tracks[tr.id] = tr
                assigned[j] = tr
        ended = [tr for tr in self.tracks.values() if t - tr.last_t > self.max_age_s]
        for tr in ended:
            del self.tracks[tr.id]
        return assigned, ended

    def end_all(self) -> list[Track]:
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended


@dataclass(frozen=True)
class SelectionPolicy:
    """When a track's crop is sent. ``resend_interval_s`` 0: never again on time alone."""
    settle_s: float = 0.5
    resend_interval_s: float = 10.0
    better_margin: float = 0.15
    min_score: float = 0.0

    def __post_init__(self):
        for name in ("settle_s", "resend_interval_s", "better_margin", "min_score"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class Selected:
    """A crop chosen to be sent, and why: ``first``, ``better``, ``interval`` or ``track-ended``."""
    track: int
    candidate: Candidate
    reason: str
    nth: int


@dataclass
class CropSelector:
    """Tracks faces and picks which crops to send (see the module's docstring)."""
    policy: SelectionPolicy = field(default_factory=SelectionPolicy)
    tracker: IoUTracker = field(default_factory=IoUTracker)
    faces: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def update(self, t: float, frame_index: int, faces: list[tuple[Detection, np.ndarray, CropQuality]],
               frame_name: str = "") -> list[Selected]:
        """One frame's faces (detection, aligned crop, quality): the crops to send now."""
        self.faces += len(faces)
        tracks, ended = self.tracker.update(t, [d for d, _, _ in faces])
        out = []
        for tr, (det, crop, quality) in zip(tracks, faces):
            if quality.score < self.policy.min_score:
                continue
            if tr.best is None or quality.score > tr.best.score:
                tr.best = Candidate(crop, quality, det, t, frame_index, frame_name)
            reason = self._due(tr, t)
            if reason:
                out.append(self._send(tr, reason, t))
        out += [self._send(tr, "track-ended", t) for tr in ended if tr.sent == 0 and tr.best is not None]
        return out

    def flush(self) -> list[Selected]:
        """At the end of the source: the best crop of every live track never sent."""
        return [self._send(tr, "track-ended", tr.last_t) for tr in self.tracker.end_all()
                if tr.sent == 0 and tr.best is not None]

    def _due(self, tr: Track, t: float) -> str | None:
        p = self.policy
        if tr.sent == 0:
            return "first" if t - tr.first_t >= p.settle_s else None
        if tr.best.score >= tr.sent_score + p.better_margin:
            return "better"
        if p.resend_interval_s and t - tr.last_sent_t >= p.resend_interval_s:
            return "interval"
        return None

    def _send(self, tr: Track, reason: str, t: float) -> Selected:
        cand = tr.best
        tr.best = None
        tr.sent += 1
        tr.sent_score = max(tr.sent_score, cand.score)
        tr.last_sent_t = t
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        return Selected(tr.id, cand, reason, tr.sent)

    @property
    def tracks(self) -> int:
        return self.tracker.started
