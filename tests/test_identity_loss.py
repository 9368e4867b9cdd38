"""Identity-preservation loss, the landmark-aware sampler and the IPR training settings (issue #5)."""

import cv2
import numpy as np
import pytest
import torch

from facelink.cloud.training import ladder
from facelink.cloud.training.identity_loss import (
    IdentityLoss,
    face_inside,
    pixel_matrix_to_theta,
    template_matrices,
    warp,
)
from facelink.cloud.training.train import (
    FLIP_ORDER,
    LOG_COLUMNS,
    LandmarkPatchSampler,
    TrainConfig,
    face_weight_map,
    landmark_cache_path,
    open_log,
)
from facelink.shared import config
from facelink.shared.alignment import ARCFACE_112, MOBILEFACENET_96x112, align, similarity_transform
from facelink.shared.detection import YuNet
from facelink.shared.paths import DEMO_FACES_DIR

FACES = sorted(DEMO_FACES_DIR.glob("*/*.jpg"))


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches: one intra-op thread is fastest, and far faster on a busy machine (no spinning workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faces():
    det = YuNet()
    out = []
    for p in FACES[:4]:
        im = _rgb(p)
        out.append((im, det.largest(im, rgb=True).landmarks))
    return out


@pytest.fixture(scope="module")
def loss():
    return IdentityLoss("mobilefacenet", "cpu")


def test_theta_of_identity_resampling_is_identity():
    theta = pixel_matrix_to_theta(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (37, 53), (37, 53))
    assert torch.allclose(theta[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("rows, cols", [(slice(None), slice(None)), (slice(10, 240), slice(30, 230))])
def test_warp_matches_align(faces, rows, cols):
    """The differentiable warp reproduces shared.alignment.align (cv2.warpAffine) to interpolation tolerance,
    on full frames and on a non-square cut (catches a swapped height/width)."""
    for im, lm in faces:
        im = np.ascontiguousarray(im[rows, cols])
        lm = lm - [cols.start or 0, rows.start or 0]
        ref = align(im, lm, MOBILEFACENET_96x112).astype(np.float64)
        m = similarity_transform(lm, MOBILEFACENET_96x112.points)
        got = warp(torch.from_numpy(im).permute(2, 0, 1)[None].double(), m[None], MOBILEFACENET_96x112)
        diff = np.abs(got[0].permute(1, 2, 0).numpy() - ref)
        assert diff.mean() < 0.5 and diff.max() < 3.0  # uint8 levels: cv2 rounds and uses 5-bit weights


def test_gradients_reach_the_reconstruction_not_the_recognizer(faces, loss):
    x = _tensor([im[61:189, 61:189] for im, _ in faces])
    lm = np.stack([l - 61 for _, l in faces])
    m = template_matrices(lm)
    rec = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    loss.train()
    d, per = loss(x, rec, m)
    d.backward()
    assert d.item() > 0 and torch.isfinite(per).all()
    assert rec.grad is not None and rec.grad.abs().sum() > 0 and torch.isfinite(rec.grad).all()
    assert not loss.recognizer.training
    assert all(p.grad is None and not p.requires_grad for p in loss.recognizer.parameters())


def test_loss_values_and_weights(faces, loss):
    a = _tensor([im for im, _ in faces[:2]])
    m = template_matrices(np.stack([l for _, l in faces[:2]]))
    same, _ = loss(a, a.clone(), m)
    assert abs(same.item()) < 1e-5
    other = torch.flip(a, dims=[0])  # each source paired with the other person's image
    d, per = loss(a, other, m)
    assert d.item() > 0.3
    half, per_half = loss(a, other, m, weights=[1.0, 0.0])
    assert torch.isnan(per_half[1]) and abs(half.item() - per[0].item() / 2) < 1e-5  # mean over the batch
    rec = other.clone().requires_grad_(True)
    none, _ = loss(a, rec, m, weights=[0.0, 0.0])
    none.backward()
    assert none.item() == 0.0 and rec.grad.abs().sum() == 0


def test_face_inside():
    m = similarity_transform(ARCFACE_112.points, MOBILEFACENET_96x112.points)  # the 96×112 box sits at x 8..104
    assert face_inside(m, 112, 112) and face_inside(m, 128, 128)
    assert not face_inside(m, 100, 128)


def test_face_weight_map_weights_the_face_region():
    # The edge's 112×112 crop: the MobileFaceNet rectangle sits at x 8..104, y 0..112 of it.
    m = similarity_transform(ARCFACE_112.points, MOBILEFACENET_96x112.points)
    w = face_weight_map(m[None], 128, 128, MOBILEFACENET_96x112, 0.1, margin=0.0, ramp=4.0)[0, 0].numpy()
    assert w.shape == (128, 128) and w.dtype == np.float32
    assert w[56, 56] == 1.0 and w[56, 10] == 1.0 and w[56, 6] < 1.0   # left edge of the rectangle at x = 8
    assert w[60, 127] == pytest.approx(0.1) and w[127, 60] < 1.0        # padding right and below the crop
    assert w.min() == pytest.approx(0.1) and w.max() == 1.0
    grown = face_weight_map(m[None], 128, 128, MOBILEFACENET_96x112, 0.1, margin=0.25, ramp=4.0)[0, 0].numpy()
    assert (grown >= w).all() and grown.mean() > w.mean()
    assert torch.equal(face_weight_map(m[None], 128, 128, MOBILEFACENET_96x112, 1.0), torch.ones(1, 1, 128, 128))


def test_face_weighted_training_runs_resumes_and_logs(tmp_path):
    from facelink.cloud.training.train import train

    cfg = config.from_mapping(TrainConfig, {"steps": 2, "batch_size": 2, "max_images": 6, "threads": 1,
                                            "checkpoint_every": 1, "background_weight": 0.2, "alpha": 10.0,
                                            "face_crop_fraction": 0.5})
    assert cfg.uses_landmarks
    final = train(cfg, tmp_path / "run")
    assert final.is_file()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].split(",") == LOG_COLUMNS and len(rows) == 3
    cfg.steps = 3
    train(cfg, tmp_path / "run", resume=True)
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 4


def _blob_image(points: np.ndarray, size=250) -> np.ndarray:
    """Dark image with a Gaussian blob of a distinct pure colour at each of the five points."""
    colours = BLOB_COLOURS.astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    im = np.zeros((size, size, 3))
    for (x, y), c in zip(points, colours):
        im += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2))[..., None] * c
    return np.clip(im * 255, 0, 255).astype(np.uint8)


BLOB_COLOURS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1)], dtype=bool)


def _blob_centres(patch: np.ndarray) -> list:
    """Intensity-weighted centre of each colour's blob (None where it is absent)."""
    p = patch.astype(np.float64) / 255
    amp = p.max(axis=-1)
    pattern = (p > 0.5 * amp[..., None]) & (amp[..., None] > 0.02)
    yy, xx = np.mgrid[0 : p.shape[0], 0 : p.shape[1]]
    out = []
    for c in BLOB_COLOURS:
        w = np.where((pattern == c).all(axis=-1), amp, 0.0)
        out.append(None if w.sum() < 1 else np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()]))
    return out


@pytest.mark.parametrize("flip", [0.0, 1.0])
@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_sampler_landmarks_follow_the_patch(tmp_path, flip, fraction):
    """Synthetic faces whose five landmarks are coloured blobs: in every patch (random crop with down-scaling, or
    the edge's aligned crop padded to 128; mirrored or not) each carried landmark sits on its blob."""
    pts = np.array([[100.0, 112.0], [150.0, 111.0], [126.0, 140.0], [106.0, 165.0], [146.0, 166.0]])
    files, lms = [], []
    for k in range(3):
        shifted = pts + [12.0 * k - 12, 7.0 * k - 7]
        f = tmp_path / f"blobs{k}.png"
        cv2.imwrite(str(f), cv2.cvtColor(_blob_image(shifted), cv2.COLOR_RGB2BGR))
        files.append(f)
        lms.append(shifted)
    cache = landmark_cache_path(files, tmp_path)  # landmarks given, not detected (the blobs are no face)
    np.savez(cache, files=np.array([str(f.resolve()) for f in files]), landmarks=np.stack(lms))
    s = LandmarkPatchSampler(files, 128, 0.45, seed=3, face_crop_fraction=fraction, cache_dir=tmp_path,
                             flip_probability=flip)
    checked = 0
    for _ in range(12):
        patch, lm, is_crop = s.sample_with_landmarks()
        assert patch.shape == (128, 128, 3) and is_crop == (fraction == 1.0)
        centres = _blob_centres(patch)
        for k in range(5):
            blob = FLIP_ORDER[k] if flip else k  # mirrored: the landmark on the image's left is the other blob
            x, y = lm[k]
            if 8 <= x <= 119 and 8 <= y <= 119 and not (is_crop and (x > 104 or y > 104)):
                assert centres[blob] is not None and np.abs(centres[blob] - lm[k]).max() < 0.6, (k, centres, lm)
                checked += 1
        if is_crop:  # the edge's crop: 112×112 aligned, then padded bottom/right by edge replication
            assert (patch[112:] == patch[111:112]).all() and (patch[:, 112:] == patch[:, 111:112]).all()
    assert checked >= 20


def test_sampler_skips_images_without_a_face_and_caches(tmp_path):
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((250, 250, 3), 128, np.uint8))
    files = FACES[:3] + [blank]
    s = LandmarkPatchSampler(files, 128, 0.45, seed=0, face_crop_fraction=0.5, cache_dir=tmp_path)
    assert s.skipped == 1 and len(s.images) == 3
    assert landmark_cache_path(files, tmp_path).exists()
    x, m, w, sizes = s.batch_with_faces(6)
    assert x.shape == (6, 3, 128, 128) and m.shape == (6, 2, 3) and w.shape == (6,)
    assert {tuple(v) for v in sizes} <= {(112, 112), (128, 128)}
    assert 0.0 <= x.min() and x.max() <= 1.0
    # the aligned crops of real images equal the edge's own crop
    s.face_crop_fraction, s.flip_probability = 1.0, 0.0
    patch, lm, _ = s.sample_with_landmarks()
    i = next(i for i in range(3) if np.array_equal(patch[:112, :112],
                                                      align(s.images[i], s.landmarks[i], ARCFACE_112)))
    expected = similarity_transform(s.landmarks[i], ARCFACE_112.points)
    assert np.allclose(lm, s.landmarks[i] @ expected[:, :2].T + expected[:, 2])
    assert np.abs(lm - ARCFACE_112.points).max() < 8  # a least-squares fit: near the template, not on it


def test_open_log_resume_drops_rows_past_the_checkpoint_and_adds_columns(tmp_path):
    p = tmp_path / "log.csv"
    old = ["step,loss,bpp,mse,psnr,aux,lr,seconds"] + [f"{i},1,0.5,0.001,30,800,0.0001,{i}" for i in range(1, 6)]
    p.write_text("\n".join(old) + "\n")
    log, w = open_log(p, 3)
    w.writerow([4] + ["x"] * (len(LOG_COLUMNS) - 1))
    log.close()
    lines = p.read_text().splitlines()
    assert lines[0].split(",") == LOG_COLUMNS
    assert [r.split(",")[0] for r in lines[1:]] == ["1", "2", "3", "4"]
    assert all(len(r.split(",")) == len(LOG_COLUMNS) for r in lines[1:])
    log, _ = open_log(p, 0)  # a fresh run starts a fresh log
    log.close()
    assert p.read_text().splitlines() == [",".join(LOG_COLUMNS)]


def test_defaults_keep_the_first_model_behaviour():
    cfg = ladder.expand("msh", "q4")
    assert cfg.alpha == 0.0 and cfg.face_crop_fraction == 0.0 and not cfg.uses_landmarks and cfg.max_images == 0
    d = TrainConfig()
    assert (d.lmbda, d.steps, d.batch_size, d.patch, d.lr, d.min_scale, d.datasets) == (
        0.013, 6000, 8, 128, 1e-4, 0.45, ["lfw-train", "celeba-train"])


@pytest.mark.parametrize("data", [{"alpha": -1.0}, {"face_crop_fraction": 1.5}, {"recognizer": "sface"},
                                  {"face_crop_fraction": 0.5, "patch": 96}, {"alpha": "high"},
                                  {"background_weight": 1.5}, {"face_margin": -0.1}, {"face_ramp": -1.0},
                                  {"latent_area": "crop"}, {"latent_area": "image"}])
def test_bad_ipr_settings_are_config_errors(data):
    with pytest.raises(config.ConfigError):
        config.from_mapping(TrainConfig, data)


def test_sampler_can_train_on_the_edges_blurred_frames(tmp_path):
    """background_blur: the training images are what the edge's --blur-background sends (same region, same σ)."""
    from facelink.shared.roi import BackgroundBlur

    plain = LandmarkPatchSampler(FACES[:2], 128, 0.45, seed=0, cache_dir=tmp_path)
    blurred = LandmarkPatchSampler(FACES[:2], 128, 0.45, seed=0, cache_dir=tmp_path, background_blur=8.0)
    for im, lm, out in zip(plain.images, plain.landmarks, blurred.images):
        assert np.array_equal(out, BackgroundBlur(sigma=8.0).apply(im, [lm])) and not np.array_equal(out, im)
    assert TrainConfig(background_blur=8.0).uses_landmarks
    with pytest.raises(config.ConfigError, match="background_blur"):
        TrainConfig(background_blur=-1.0)


def test_decoder_only_training_keeps_the_bitstream(tmp_path):
    """train_only: decoder changes g_s alone: the analysis, hyper-prior and entropy model (hence the edge's ONNX parts,
    its tables and every bitstream) stay exactly init_from's; g_s learns from rounded latents, as it decodes them."""
    from facelink.cloud.training.train import train

    base = {"steps": 2, "batch_size": 2, "max_images": 6, "threads": 1, "background_weight": 0.2, "alpha": 10.0}
    init = train(config.from_mapping(TrainConfig, base), tmp_path / "init")
    with pytest.raises(config.ConfigError, match="init_from"):
        train(config.from_mapping(TrainConfig, {**base, "train_only": "decoder"}), tmp_path / "no-init")
    with pytest.raises(config.ConfigError, match="train_only"):
        config.from_mapping(TrainConfig, {**base, "train_only": "encoder"})
    final = train(config.from_mapping(TrainConfig, {**base, "train_only": "decoder", "init_from": str(init),
                                                    "lr": 1e-2}), tmp_path / "decoder")
    before = torch.load(init, weights_only=False)["model"]
    after = torch.load(final, weights_only=False)["model"]
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("g_s.") for k in changed)


def test_training_codes_a_crop_as_container_version_2_does():
    """latent_area: image — a padded 112×112 crop's latent positions beyond 7×7 cost no rate and decode to the
    entropy model's means; a full patch is coded as before (the forward equals the model's own)."""
    from facelink.cloud.serving.codec_model import FaceCodec, forward_coded_area, rate_distortion_terms

    torch.manual_seed(0)
    model = FaceCodec(8, 16).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
        full = forward_coded_area(model, x, [[128, 128], [128, 128]])
        crop = forward_coded_area(model, x, [[112, 112], [128, 128]])
    assert torch.equal(full["x_hat"], ref["x_hat"]) and torch.equal(full["likelihoods"]["y"], ref["likelihoods"]["y"])
    assert torch.all(crop["likelihoods"]["y"][0, :, 7, :] == 1) and torch.all(crop["likelihoods"]["y"][0, :, :, 7] == 1)
    assert torch.equal(crop["likelihoods"]["y"][0, :, :7, :7], ref["likelihoods"]["y"][0, :, :7, :7])
    assert torch.equal(crop["x_hat"][1], ref["x_hat"][1])
    assert rate_distortion_terms(crop, x)[0] < rate_distortion_terms(ref, x)[0]
    with pytest.raises(config.ConfigError, match="face_crop_fraction"):
        config.from_mapping(TrainConfig, {"latent_area": "image"})
    assert config.from_mapping(TrainConfig, {"latent_area": "image", "face_crop_fraction": 1.0}).latent_area == "image"


def test_sampler_crops_to_the_configured_template(tmp_path):
    """crop_template: arcface-96 — the same framing as the edge's --crop-template arcface-96 sends, padded to the
    patch, and the coded area is the crop's 96×96 (6×6 latent positions)."""
    from facelink.shared.alignment import ARCFACE_96, align, similarity_transform, transform_points

    pts = np.array([[100.0, 110.0], [150.0, 110.0], [125.0, 140.0], [105.0, 165.0], [145.0, 165.0]])
    f = tmp_path / "blobs.png"
    cv2.imwrite(str(f), cv2.cvtColor(_blob_image(pts), cv2.COLOR_RGB2BGR))
    np.savez(landmark_cache_path([f], tmp_path), files=np.array([str(f.resolve())]), landmarks=pts[None])
    s = LandmarkPatchSampler([f], 128, 0.45, seed=0, face_crop_fraction=1.0, cache_dir=tmp_path,
                             flip_probability=0.0, crop_template=ARCFACE_96)
    patch, lm, is_crop = s.sample_with_landmarks()
    assert is_crop and np.array_equal(patch[:96, :96], align(_blob_image(pts), pts, ARCFACE_96))
    assert np.allclose(lm, transform_points(similarity_transform(pts, ARCFACE_96.points), pts))
    assert (patch[96:] == patch[95:96]).all() and (patch[:, 96:] == patch[:, 95:96]).all()
    assert s.batch_with_faces(2)[3].tolist() == [[96, 96], [96, 96]]
    with pytest.raises(config.ConfigError, match="crop_template"):
        config.from_mapping(TrainConfig, {"crop_template": "dlib-150"})
    assert config.from_mapping(TrainConfig, {"crop_template": "arcface-80", "patch": 128}).crop_template == "arcface-80"



def test_recurring_source_patches_are_embedded_once(faces, tmp_path):
    """An aligned crop recurs exactly (same image, same flip): its source embedding is computed once and the loss is
    the one computed afresh; a patch without a key is always computed; the sampler names its patches so."""
    fresh = IdentityLoss("mobilefacenet", "cpu")
    a = _tensor([im for im, _ in faces[:3]])
    m = template_matrices(np.stack([l for _, l in faces[:3]]))
    rec = torch.flip(a, dims=[0])
    plain, per_plain = fresh(a, rec, m)
    keys = [("crop", 0, False), None, ("crop", 2, True)]
    first, per_first = fresh(a, rec, m, source_keys=keys)
    assert set(fresh.source_cache) == {keys[0], keys[2]}
    cached = dict(fresh.source_cache)
    again, per_again = fresh(a, rec, m, source_keys=keys)
    assert all(fresh.source_cache[k] is v for k, v in cached.items())  # taken from the cache, not recomputed
    assert torch.allclose(per_plain, per_first, atol=1e-6) and torch.allclose(per_first, per_again, atol=1e-6)
    with pytest.raises(ValueError, match="keys"):
        fresh.source_embeddings(a, torch.as_tensor(m), keys[:2])
    s = LandmarkPatchSampler(FACES[:3], 128, 0.45, seed=0, face_crop_fraction=0.5, cache_dir=tmp_path)
    seen = {}
    for _ in range(6):
        x, *_ = s.batch_with_faces(4)
        assert len(s.batch_keys) == 4
        for patch, key in zip(x, s.batch_keys):
            if key is not None:
                assert key[0] == "crop"
                assert torch.equal(seen.setdefault(key, patch), patch)  # a key names exactly one patch
    assert seen
