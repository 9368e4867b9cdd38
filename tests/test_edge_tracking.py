"""Face tracking and crop selection: a person standing before a camera costs a crop or two, not one per frame."""
import json

import cv2
import numpy as np
import pytest
from edge_support import FPS, standing_person, write_video

from facelink.edge import cli as edge_cli
from facelink.edge.tracking import (
    CropQuality,
    CropSelector,
    IoUTracker,
    SelectionPolicy,
    box_iou,
    crop_quality,
    frontal_factor,
)
from facelink.shared.alignment import ARCFACE_112
from facelink.shared.detection import Detection


def _det(x=100.0, y=100.0, s=120.0, template=ARCFACE_112):
    """A detection whose landmarks are the template's frontal points placed in an s×s box at x, y."""
    lm = template.points * (s / template.width) + np.array([x, y])
    return Detection(np.array([x, y, s, s]), lm, 0.9)


def _report(capsys) -> tuple[dict, list[dict]]:
    """The run's report (the last event on stderr) and its rows (stdout, JSON lines)."""
    out = capsys.readouterr()
    events = [json.loads(line) for line in out.err.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "report", out.err
    return events[-1], [json.loads(line) for line in out.out.splitlines()]


@pytest.fixture(scope="module")
def standing_video(tmp_path_factory, demo_faces):
    """Ten seconds of one person at 15 fps: 150 frames with small jitter and scale changes."""
    path = tmp_path_factory.mktemp("seq") / "standing.avi"
    return write_video(path, standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=10 * FPS))


def test_person_standing_ten_seconds_costs_at_most_three_crops(standing_video, capsys):
    assert edge_cli.main(["run", str(standing_video), "--offline"]) == 0
    report, rows = _report(capsys)
    assert report["frames"] == 150 and report["faces_detected"] >= 145
    assert report["faces_tracked"] == 1
    assert 1 <= report["crops_sent"] <= 3 and len(rows) == report["crops_sent"]
    assert rows[0]["reason"] == "first" and rows[0]["track"] == 1
    assert report["bytes_sent"] == sum(r["bytes"] for r in rows)
    assert report["saving"] > 0.95 and report["stopped_by"] == "end of source"


def test_every_face_is_the_baseline_and_max_fps_thins_the_frames(standing_video, capsys):
    assert edge_cli.main(["run", str(standing_video), "--offline", "--every-face", "--max-fps", "3"]) == 0
    report, rows = _report(capsys)
    assert report["frames"] == 30 and report["frames_skipped_by_max_fps"] == 120  # 10 s at 3 of 15 fps
    assert report["crops_sent"] == report["faces_detected"] == len(rows) and report["saving"] == 0.0
    assert [r["frame"] for r in rows[:3]] == [0, 5, 10]


def test_two_people_are_two_tracks(tmp_path, demo_faces, capsys):
    photos = [demo_faces / "probe" / "Colin_Powell_0002.jpg", demo_faces / "probe" / "Tony_Blair_0002.jpg"]
    video = write_video(tmp_path / "two.avi", standing_person(photos, n=30))
    assert edge_cli.main(["run", str(video), "--offline"]) == 0
    report, rows = _report(capsys)
    assert report["faces_tracked"] == 2 and report["crops_sent"] == 2
    assert sorted(r["track"] for r in rows) == [1, 2]


def test_frontal_pose_scores_highest():
    frontal = ARCFACE_112.points
    assert frontal_factor(frontal) == pytest.approx(1.0, abs=1e-4)  # the template is frontal to 1e-5
    turned = frontal.copy()
    turned[2, 0] += 12  # nose towards one eye: the head turned
    nodding = frontal.copy()
    nodding[2, 1] += 12  # nose towards the mouth: the head tilted down
    assert frontal_factor(turned) < 0.5 and frontal_factor(nodding) < 0.8
    assert frontal_factor(np.zeros((5, 2))) == 0.0


def test_quality_prefers_large_and_sharp(face_rgb):
    det = _det(s=120)
    crop = cv2.resize(face_rgb, (112, 112))
    sharp = crop_quality(crop, det)
    blurred = crop_quality(cv2.GaussianBlur(crop, (0, 0), 2.5), det)
    small = crop_quality(crop, _det(s=40))
    assert sharp.score > blurred.score and blurred.sharpness < sharp.sharpness
    assert small.size == pytest.approx(40 / 112) and small.score < sharp.score
    assert 0 <= sharp.score <= 1


def test_tracker_links_overlapping_and_shifted_faces():
    tracker = IoUTracker(max_age_s=0.5)
    tracks, _ = tracker.update(0.0, [_det(100, 100), _det(400, 100)])
    assert [t.id for t in tracks] == [1, 2]
    tracks, _ = tracker.update(0.1, [_det(405, 102), _det(108, 96)])  # jitter, order swapped
    assert [t.id for t in tracks] == [2, 1]
    assert box_iou(_det(108, 96).box, _det(175, 96).box) < 0.3
    tracks, _ = tracker.update(0.2, [_det(150, 96)])  # a fast move: boxes barely overlap, landmarks keep the shape
    assert [t.id for t in tracks] == [1]
    tracks, ended = tracker.update(0.8, [_det(150, 96)])
    assert [t.id for t in ended] == [2] and [t.id for t in tracks] == [1]


def _face(score):
    """A face whose quality is ``score`` (as a product of three factors)."""
    return _det(), np.zeros((112, 112, 3), np.uint8), CropQuality(1.0, 1.0, score, 100.0)


def test_selector_sends_once_then_only_when_better_or_due():
    sel = CropSelector(SelectionPolicy(settle_s=0.5, resend_interval_s=5.0, better_margin=0.15))
    sent = []
    for i, score in enumerate([0.5, 0.6, 0.55] + [0.6] * 10 + [0.8] + [0.7] * 70):
        sent += [(i, s.reason, round(s.candidate.score, 2)) for s in sel.update(i / 10, i, [_face(score)])]
    # first: the best of the settling half second; better: 0.8 >= 0.6 + 0.15; interval: 5 s after, the best since
    assert sent == [(5, "first", 0.6), (13, "better", 0.8), (63, "interval", 0.7)]
    assert sel.reasons == {"first": 1, "better": 1, "interval": 1} and sel.faces == 84


def test_selector_sends_a_short_track_when_it_ends():
    sel = CropSelector(SelectionPolicy(settle_s=1.0))
    assert sel.update(0.0, 0, [_face(0.4)]) == [] and sel.update(0.1, 1, [_face(0.5)]) == []
    ended = sel.update(2.0, 2, [])
    assert [(s.reason, s.candidate.frame_index) for s in ended] == [("track-ended", 1)]
    assert sel.update(2.1, 3, [_face(0.3)]) == [] and [s.reason for s in sel.flush()] == ["track-ended"]
    with pytest.raises(ValueError, match="settle_s must be >= 0"):
        SelectionPolicy(settle_s=-1)


def test_scaled_detection_reports_full_frame_coordinates(demo_faces):
    from facelink.edge.runner import ScaledDetector

    frame = next(standing_person([demo_faces / "probe" / "Colin_Powell_0002.jpg"], n=1, size=(1280, 960)))
    full, = ScaledDetector(0).detect(frame)
    half, = ScaledDetector(640).detect(frame)
    eye_d = np.linalg.norm(full.landmarks[1] - full.landmarks[0])
    assert np.abs(half.landmarks - full.landmarks).max() < 0.15 * eye_d  # about 2 px at the detection scale
    assert np.abs(half.box - full.box).max() < 0.1 * full.box[2]
    with pytest.raises(ValueError, match="detection width"):
        ScaledDetector(-1)
