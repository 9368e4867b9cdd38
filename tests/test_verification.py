"""Protocol arithmetic on hand-made cases, and the no-face rule end to end on real images."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facelink.cloud.evaluation import verification as V


def test_best_threshold_separable():
    t, acc = V.best_threshold([0.1, 0.2, 0.3, 0.4], [False, False, True, True])
    assert acc == 1.0 and t == pytest.approx(0.25)


def test_best_threshold_ties_take_middle_candidate():
    # Candidates: 0.0 (below all), 0.15, 0.25, 0.35, 1.4 (above all). Labels F T F T:
    # accuracies 0.5, 0.75, 0.5, 0.75, 0.5 -> two best (0.15 and 0.35): the middle of them by index order is 0.15
    t, acc = V.best_threshold([0.1, 0.2, 0.3, 0.4], [False, True, False, True])
    assert acc == 0.75 and t == pytest.approx(0.15)


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=200), 2)  # many ties
    y = rng.random(200) < 0.5
    t, acc = V.best_threshold(s, y)
    brute = max(np.mean((s >= c) == y) for c in V.candidate_thresholds(s))
    assert acc == pytest.approx(brute) and V.accuracy_at(s, y, t) == pytest.approx(acc)


def test_kfold_threshold_comes_from_the_other_folds():
    # 10 folds, each: matched scores 0.6, 0.7; mismatched 0.2, 0.3 -> threshold from others is 0.45.
    # Fold 3 alone has a mismatched pair at 0.5: it is accepted (wrong) at 0.45, so fold 3 scores 3/4.
    scores, labels, folds = [], [], []
    for k in range(10):
        neg_hi = 0.5 if k == 3 else 0.3
        scores += [0.6, 0.7, 0.2, neg_hi]
        labels += [True, True, False, False]
        folds += [k] * 4
    res = V.kfold_accuracy(scores, labels, folds)
    accs = [r.accuracy for r in res]
    assert accs[3] == 0.75 and all(a == 1.0 for i, a in enumerate(accs) if i != 3)
    # the nine others (all separable, contain fold 3 except when testing it) put the threshold in the gap
    assert res[3].threshold == pytest.approx(0.45)
    m = V.verification_metrics(scores, labels, folds)
    assert m.accuracy_mean == pytest.approx(0.975)
    assert m.accuracy_std == pytest.approx(np.std(accs, ddof=1))
    assert m.accuracy_se == pytest.approx(m.accuracy_std / math.sqrt(10))


def test_auc_hand_case_and_ties():
    # positives 0.9, 0.8, 0.4 vs negatives 0.5, 0.3: 5 of 6 ordered correctly
    assert V.roc_auc([0.9, 0.8, 0.4, 0.5, 0.3], [1, 1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert V.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)


def test_eer_hand_case():
    # accept iff score >= t. At t = 0.65: FAR = 1/4 (0.65), FRR = 1/4 (0.6) -> EER 25 %
    scores = [0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.65]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    rate, t = V.eer(scores, labels)
    assert rate == pytest.approx(0.25) and t == pytest.approx(0.65)
    assert V.eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[0] == pytest.approx(0.0)


def test_eer_interpolates():
    # pos 0.5, 0.9; neg 0.1, 0.7. t=0.5: FAR 1/2, FRR 0; t=0.7: FAR 1/2, FRR 1/2 -> cross at 0.5 exactly
    rate, _ = V.eer([0.5, 0.9, 0.1, 0.7], [1, 1, 0, 0])
    assert rate == pytest.approx(0.5)


def test_tar_at_far():
    neg = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    pos = np.array([0.9985, 0.9995, 0.5, 0.99])
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(4, bool), np.zeros(1000, bool)])
    tar, far, t = V.tar_at_far(s, y, 1e-3)
    # one false accept allowed: threshold at the second-highest impostor (0.998); accept iff score > 0.998
    assert t == pytest.approx(0.998) and far == pytest.approx(1e-3) and tar == pytest.approx(0.5)


def test_floor_missing_scores_below_everything():
    s = V.floor_missing(np.array([0.3, np.nan, -0.2]))
    assert s[1] < -0.2 and np.isfinite(s).all()
    with pytest.raises(ValueError):
        V.verification_metrics([0.1, np.nan], [True, False], [0, 1])


def test_view2_fold_order():
    f = V.folds_from_view2_order(6000, 10, 300)
    assert f[0] == 0 and f[599] == 0 and f[600] == 1 and f[-1] == 9


def test_no_face_image_is_counted_and_rejected(tmp_path):
    """A blank image: YuNet finds no face; its pairs are counted and scored as rejects (never dropped)."""
    from facelink.cloud.serving.recognizers import get_recognizer
    from facelink.cloud.training import datasets
    from facelink.shared.detection import YuNet

    root = datasets.lfw_root()
    a1 = datasets.lfw_image_path(root, "Abel_Pacheco", 1)
    a4 = datasets.lfw_image_path(root, "Abel_Pacheco", 4)
    b1 = datasets.lfw_image_path(root, "Akhmed_Zakayev", 1)
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((250, 250, 3), 128, np.uint8))
    pairs = [V.Pair(a1, a4, True, 0), V.Pair(a1, blank, True, 0), V.Pair(a1, b1, False, 1), V.Pair(blank, b1, False, 1)]
    proto = V.PairProtocol("tiny", pairs, 2)
    rec = get_recognizer("mobilefacenet", "cpu")
    res = V.evaluate(proto, rec, YuNet(), progress=False)
    assert res.no_face_images == 1 and res.no_face_pairs == 2 and res.rejected_pairs == 2
    assert np.isnan(res.scores[1]) and np.isnan(res.scores[3])
    assert res.scores[0] > res.scores[2]
    # the other rule aligns with the median landmarks of the same-size images instead of rejecting
    res2 = V.evaluate(proto, rec, YuNet(), no_face="mean-landmarks", progress=False)
    assert res2.no_face_images == 1 and res2.fallback_landmark_images == 1 and res2.rejected_pairs == 0
    assert np.isfinite(res2.scores).all()


def test_codec_settings_and_cache(tmp_path):
    """Asymmetric compresses only probes, symmetric both; cached embeddings give identical scores."""
    from facelink.benchmarks.recognizers import EmbeddingCache
    from facelink.cloud.serving.recognizers import get_recognizer
    from facelink.cloud.training import datasets
    from facelink.shared.detection import YuNet

    root = datasets.lfw_root()
    a1 = datasets.lfw_image_path(root, "Abel_Pacheco", 1)
    a4 = datasets.lfw_image_path(root, "Abel_Pacheco", 4)
    b1 = datasets.lfw_image_path(root, "Akhmed_Zakayev", 1)
    proto = V.PairProtocol("tiny", [V.Pair(a1, a4, True, 0), V.Pair(a4, b1, False, 1)], 2)
    assert V.pair_items(proto, "asymmetric") == [(a1, False), (a4, True), (a4, False), (b1, True)]
    assert V.pair_items(proto, "symmetric") == [(a1, True), (a4, True), (b1, True)]
    calls = []

    def codec(crop):
        calls.append(crop.shape)
        return cv2.GaussianBlur(crop, (0, 0), 1.5)

    rec, det = get_recognizer("mobilefacenet", "cpu"), YuNet()
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    r1 = V.evaluate(proto, rec, det, setting="asymmetric", codec=codec, codec_id="blur", flip=True, cache=cache,
                    progress=False)
    assert calls and all(c == (112, 112, 3) for c in calls)  # the codec sees the canonical 112×112 crop
    n = len(calls)
    r2 = V.evaluate(proto, rec, det, setting="asymmetric", codec=codec, codec_id="blur", flip=True, cache=cache,
                    progress=False)
    assert len(calls) == n  # all from the cache
    np.testing.assert_allclose(r1.scores, r2.scores, rtol=0, atol=1e-6)
    plain = V.evaluate(proto, rec, det, flip=True, progress=False)
    assert not np.allclose(plain.scores, r1.scores)
    with pytest.raises(ValueError):
        V.evaluate(proto, rec, det, setting="symmetric")  # a codec is required


def test_bench_tool_cache_roundtrip_and_report_merge(tmp_path):
    from facelink.benchmarks import recognizers as B

    c = B.EmbeddingCache(tmp_path / "e.sqlite")
    v = np.arange(4, dtype=np.float32)
    c.put_embedding("k", (v, False))
    c.put_embedding("none", (None, True))
    c.put_detection("d", np.ones((5, 2)))
    c.put_detection("empty", np.zeros((0, 2)))
    c.close()
    c = B.EmbeddingCache(tmp_path / "e.sqlite")
    got, nf = c.get_embedding("k")
    np.testing.assert_array_equal(got, v)
    assert nf is False
    assert c.get_embedding("none") == (None, True) and c.get_embedding("absent") is None
    assert c.get_detection("d").shape == (5, 2) and c.get_detection("empty").shape == (0, 2)
    m = V.verification_metrics([0.9, 0.8, 0.1, 0.2], [True, True, False, False], [0, 0, 1, 1]).as_dict()
    base = {"detector": "yunet", "setting": "none", "no_face_rule": "reject", "metrics": m, "no_face_images": 0,
            "no_face_pairs": 0, "command": "cmd", "git": {"commit": "abc"}}
    B.write_results(tmp_path, "lfw", [dict(base, recognizer="sface", flip=False)], {})
    B.write_results(tmp_path, "lfw", [dict(base, recognizer="mobilefacenet", flip=True),
                                      {"recognizer": "facenet-vggface2", "unavailable": "weights absent",
                                       "command": "cmd"}], {})
    # a later run of the same configuration replaces its row; others are kept, in registry order
    B.write_results(tmp_path, "lfw", [dict(base, recognizer="sface", flip=False, command="cmd2")], {})
    import json

    doc = json.loads((tmp_path / "recognizers_lfw.json").read_text())
    assert [(e["recognizer"], e.get("command")) for e in doc["entries"]] == [
        ("mobilefacenet", "cmd"), ("sface", "cmd2"), ("facenet-vggface2", "cmd")]
    md = (tmp_path / "recognizers_lfw.md").read_text()
    assert "not run: weights absent" in md and "`cmd2`" in md
    assert B.main(["--dataset", "lfw", "--assets", str(tmp_path / "nowhere"), "--no-write"]) == 2
