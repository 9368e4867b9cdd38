"""Alignment geometry, the recognizer registry, and each recognizer on a few real LFW faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facelink.cloud.serving import recognizers as R
from facelink.cloud.training import datasets
from facelink.shared import alignment as A
from facelink.shared.detection import YuNet
from facelink.shared.paths import MissingAssetError

# Two people, two photos each (the first two matched pairs of LFW View 2 fold 1).
FACES = [("Abel_Pacheco", 1), ("Abel_Pacheco", 4), ("Akhmed_Zakayev", 1), ("Akhmed_Zakayev", 3)]


# ---------------------------------------------------------------------------------------------- alignment geometry
def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    ang, s, t = np.deg2rad(17.0), 0.73, np.array([12.0, -5.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ rot.T + t
    m = A.similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    np.testing.assert_allclose(A.transform_points(m, src), dst, atol=1e-9)


def test_align_puts_landmarks_on_the_template():
    """Draw dots at landmarks of a rotated, scaled face layout; after align they sit on the template points."""
    for template in (A.MOBILEFACENET_96x112, A.SFACE_112, A.DLIB_150, A.FACENET_160):
        ang, s = np.deg2rad(-12.0), 2.1
        rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        lm = template.points @ rot.T + np.array([60.0, 40.0])
        img = np.zeros((400, 400, 3), np.uint8)
        for i, (x, y) in enumerate(lm):
            cv2.circle(img, (int(round(x)), int(round(y))), 6, (255, 40 * i, 0), -1, cv2.LINE_AA)
        crop = A.align(img, lm, template)
        assert crop.shape == (template.height, template.width, 3)
        for i, (x, y) in enumerate(template.points):
            win = crop[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5, 0].astype(float)
            ys, xs = np.mgrid[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5]
            cx, cy = (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()
            assert abs(cx - x) < 0.6 and abs(cy - y) < 0.6, (template.name, i, cx, cy, x, y)


def test_templates_are_plausible_faces():
    for t in A.TEMPLATES.values():
        p = t.points
        assert p[0, 0] < p[2, 0] < p[1, 0] and p[3, 0] < p[4, 0]  # image-left before image-right
        assert max(p[0, 1], p[1, 1]) < p[2, 1] < min(p[3, 1], p[4, 1])  # eyes above nose above mouth
        assert (p >= 0).all() and (p[:, 0] < t.width).all() and (p[:, 1] < t.height).all()
        mid = (p[0, 0] + p[1, 0]) / 2
        assert abs(mid - t.width / 2) < 0.06 * t.width  # roughly centred
    assert A.SFACE_112 is A.ARCFACE_112
    np.testing.assert_allclose(A.ARCFACE_112.points - A.MOBILEFACENET_96x112.points, [[8, 0]] * 5)


# ---------------------------------------------------------------------------------------------- registry
def test_registry_names_and_errors():
    assert R.available_recognizers() == ["mobilefacenet", "dlib-resnet", "sface", "facenet-vggface2"]
    with pytest.raises(KeyError, match="known"):
        R.get_recognizer("nope")
    assert R.get_recognizer("mobilefacenet", "cpu") is R.get_recognizer("mobilefacenet", "cpu")


def test_facenet_without_local_weights_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("FACELINK_FACENET_WEIGHTS", str(tmp_path / "absent.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FACELINK_ASSETS", str(tmp_path))
    with pytest.raises(MissingAssetError, match="never downloads"):
        R.FacenetVGGFace2Recognizer("cpu")


def test_weights_are_checked(tmp_path, monkeypatch):
    from facelink.shared.detection import IntegrityError, verified

    bad = tmp_path / "w.bin"
    bad.write_bytes(b"not the weights")
    with pytest.raises(IntegrityError):
        verified(bad, R.MOBILEFACENET_SHA256)
    R.mobilefacenet_weights_path()
    R.dlib_model_path()
    R.sface_model_path()


def test_sface_graph_is_pruned_and_batchable():
    m = R.load_sface_onnx()
    assert [i.name for i in m.graph.input] == ["data"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_sface_folded_weights_compute_the_same_function():
    import onnxruntime as ort

    folded, plain = R.load_sface_onnx(), R.load_sface_onnx(fold_weights=False)
    assert {n.op_type for n in folded.graph.node}.isdisjoint({"DequantizeLinear"})
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    run = [
        ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
        for m in (folded, plain)
    ]
    np.testing.assert_allclose(run[0], run[1], atol=1e-4 * np.abs(run[1]).max())


def test_mobilefacenet_batchnorm_folding_keeps_the_function():
    model = R.load_mobilefacenet("cpu")
    folded = R.fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the training model is untouched"
    x = torch.randn(3, 3, 112, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def faces():
    root = datasets.lfw_root()
    det = YuNet()
    out = []
    for name, n in FACES:
        im = cv2.cvtColor(cv2.imread(str(datasets.lfw_image_path(root, name, n))), cv2.COLOR_BGR2RGB)
        d = det.largest(im, rgb=True)
        assert d is not None
        out.append((im, d.landmarks))
    return out


def _check_embeddings(e: np.ndarray, dim: int):
    assert e.dtype == np.float32 and e.shape == (4, dim)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    same = [sim[0, 1], sim[2, 3]]
    diff = [sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3]]
    # (dlib's descriptors share a large common component, so its cosine similarities are all high: only the order
    # is asserted, not a margin)
    assert min(same) > max(diff), (same, diff)


@pytest.mark.parametrize("name", ["mobilefacenet", "dlib-resnet", "sface"])
def test_recognizer_on_real_faces(name, faces):
    rec = R.get_recognizer(name, "cpu")
    crops = np.stack([A.align(im, lm, rec.template) for im, lm in faces])
    e = rec.embed(crops)
    _check_embeddings(e, rec.dim)
    # batching does not change results; flip averaging is unit-norm and close to the plain embedding
    rec_b = type(rec)("cpu", batch_size=1)
    np.testing.assert_allclose(rec_b.embed(crops), e, atol=2e-4)
    ef = rec.embed(crops, flip=True)
    _check_embeddings(ef, rec.dim)
    assert (np.sum(e * ef, axis=1) > 0.8).all()
    with pytest.raises(ValueError, match="aligned to template"):
        rec.embed(np.zeros((1, 10, 10, 3), np.uint8))


def test_dlib_without_rechip_also_orders_faces(faces):
    rec = R.DlibResNetRecognizer("cpu", refine=False)
    assert rec.cache_id == "dlib-resnet" and R.get_recognizer("dlib-resnet", "cpu").cache_id != rec.cache_id
    _check_embeddings(rec.embed(np.stack([A.align(im, lm, rec.template) for im, lm in faces])), 128)


def test_mobilefacenet_is_differentiable_and_matches_embed(faces):
    rec = R.get_recognizer("mobilefacenet", "cpu")
    crops = np.stack([A.align(im, lm, rec.template) for im, lm in faces])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0).requires_grad_(True)
    e = rec.model.embed_rgb01(x)
    np.testing.assert_allclose(e.detach().numpy(), rec.embed(crops), atol=1e-5)
    loss = 1 - (e[0] * e[1]).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in rec.model.parameters())
    assert rec.model.embed_rgb01(x.detach(), flip=True).shape == (4, 128)


def test_mtcnn_detector_agrees_with_yunet(faces):
    from facelink.cloud.serving.detectors import get_detector

    mtcnn = get_detector("mtcnn", "cpu")
    im, lm = faces[0]
    d = mtcnn.largest(im, rgb=True)
    assert d is not None and d.landmarks.shape == (5, 2)
    # same landmark order and roughly the same places as YuNet (a few pixels on a 250×250 image)
    assert np.abs(d.landmarks - lm).max() < 12
    assert mtcnn.detect(np.full((120, 120, 3), 127, np.uint8)) == []


def test_mobilefacenet_frozen_graph_equals_eager_at_any_batch(faces):
    """embed() runs a frozen TorchScript copy on a CPU: same embeddings as the eager module (float rounding), at batch
    1, at its traced batch and at a batch size it was never traced at."""
    rec = R.get_recognizer("mobilefacenet", "cpu")
    assert rec.frozen and isinstance(rec.graph, torch.jit.ScriptModule)
    eager = R.MobileFaceNetRecognizer("cpu", frozen=False)
    assert not eager.frozen and eager.graph is eager.model
    crops = np.stack([A.align(im, lm, rec.template) for im, lm in faces])
    crops = np.concatenate([crops, crops[:, :, ::-1], crops[::-1]])[:11]  # 11: a batch of 8, then one of 3
    want = eager.embed(crops)
    for n in (1, 3, 8, 11):
        np.testing.assert_allclose(rec.embed(crops[:n]), want[:n], atol=1e-5)
    np.testing.assert_allclose(rec.embed(crops, flip=True), eager.embed(crops, flip=True), atol=1e-5)
    assert rec.embed(crops[:1]).tolist() == rec.embed(crops[:1]).tolist()  # deterministic


def test_mobilefacenet_frozen_falls_back_to_eager(monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("no tracing here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    rec = R.MobileFaceNetRecognizer("cpu")
    assert not rec.frozen and rec.graph is rec.model
    assert "stays eager" in caplog.text
    assert rec.embed(np.zeros((2, 112, 96, 3), np.uint8)).shape == (2, 128)
