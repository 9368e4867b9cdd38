"""Training of the face codec: R + λ·(255²·MSE + α·D_identity), resumable, on CPU or GPU.

With ``background_weight`` < 1 the MSE is weighted: 1 on the face region, ``background_weight`` on the rest.

``facelink train --ladder NAME --point q3 --out RUN_DIR`` trains one rate point of a research ladder
(cloud/training/ladders/NAME.yaml over cloud/training/configs/base.yaml, :mod:`facelink.cloud.training.ladder`);
``--config FILE`` trains one configuration file instead; ``--resume`` continues from ``RUN_DIR/checkpoint.pt``.
With ``alpha`` 0 and ``face_crop_fraction`` 0 (the defaults) it is the pixel-loss trainer the first model was made
with. ``alpha`` > 0 adds the identity-preservation term (:mod:`facelink.cloud.training.identity_loss`) on patches
from the landmark-aware sampler (the ``ipr`` ladder; ``pixel`` is its ablation). ``train_only: decoder`` trains the
synthesis transform alone on the rounded latents of ``init_from``'s frozen encoder and entropy model (the ``iprd``
ladder): a better decoder for an unchanged bitstream.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facelink.cloud.serving.codec_model import ARCHITECTURE, build, forward_coded_area, rate_distortion_terms
from facelink.cloud.training import datasets
from facelink.cloud.training.from_registry import init_state, is_registry_ref
from facelink.cloud.training.identity_loss import (
    DIFFERENTIABLE_RECOGNIZERS,
    IdentityLoss,
    face_inside,
    template_matrices,
)
from facelink.shared import config as cfgmod
from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES, transform_points
from facelink.shared.paths import runs_dir
from facelink.shared.roi import BackgroundBlur, region_weights

TRAINABLE = ("all", "decoder")
LATENT_AREAS = ("padded", "image")


@dataclass
class TrainConfig:
    architecture: str = ARCHITECTURE
    N: int = 64
    M: int = 128
    lmbda: float = 0.013  # weight of 255²·MSE, CompressAI's convention
    steps: int = 6000
    batch_size: int = 8
    patch: int = 128
    lr: float = 1e-4
    aux_lr: float = 1e-3
    lr_drop_at: float = 0.85  # fraction of steps after which lr is divided by 10
    min_scale: float = 0.45  # random down-scaling so full frames and tight face crops are both seen
    seed: int = 0
    checkpoint_every: int = 250
    threads: int = 2
    init_from: str | None = None  # fine-tune from another run's model.pt, or registry:NAME (a committed rate point)
    datasets: list[str] = field(default_factory=lambda: ["lfw-train", "celeba-train"])
    # Identity preservation (issue #5): loss = R + λ·(255²·MSE + alpha·D_identity), D_identity = mean(1 − cos) of
    # the recognizer's embeddings of source and reconstruction. alpha 0 is pixel loss only (the behaviour above).
    alpha: float = 0.0
    recognizer: str = "mobilefacenet"
    # Share of samples that are the edge's aligned face crops (112×112, template arcface-112, padded to the patch
    # size by edge replication as the edge pads to multiples of 64); the rest are random crops as PatchSampler's.
    # With alpha > 0 or face_crop_fraction > 0 the landmark-aware sampler is used (images without a face skipped).
    face_crop_fraction: float = 0.0
    max_images: int = 0  # use only this many training images (seeded choice); 0 = all. For smoke runs.
    # Face-weighted pixel distortion: 255²·mean(w·(x − x̂)²) with w = 1 on the face region and background_weight
    # elsewhere (1 = plain MSE, the behaviour above). The face region is the recognizer's template rectangle mapped
    # back into the patch by its landmarks, grown by face_margin of the template's size on every side, with a
    # linear ramp of face_ramp template pixels. Bits then go to the face, not to the background of a full frame.
    background_weight: float = 1.0
    face_margin: float = 0.1
    face_ramp: float = 8.0
    # Train on frames as the edge's full-frame --blur-background sends them: each training image blurred (Gaussian,
    # this σ in pixels) outside its face's region (facelink.shared.roi.BackgroundBlur); 0 = the images as they are.
    background_blur: float = 0.0
    # What the optimiser changes. "all": the whole codec. "decoder": only the synthesis transform g_s, on top of
    # init_from's frozen analysis, hyper-prior and entropy model, so the bitstream (and the edge's ONNX parts and
    # tables) stays exactly that of init_from; g_s then learns from the rounded latents it decodes in service.
    train_only: str = "all"
    # Which latent positions of a padded face crop are coded. "padded": all of them (bitstream version 1, and how
    # every model before this key was trained). "image": only those that cover the 112×112 crop, as container
    # version 2 codes it: the others cost no rate and the decoder sees the entropy model's means there.
    latent_area: str = "padded"
    # The template the face crops are aligned to (facelink.shared.alignment.CROP_TEMPLATES: what facelink-edge
    # --crop-template sends); a smaller one is the same framing in fewer pixels.
    crop_template: str = ARCFACE_112.name

    def __post_init__(self):
        if self.latent_area not in LATENT_AREAS:
            raise cfgmod.ConfigError(f"latent_area must be one of {', '.join(LATENT_AREAS)}, got {self.latent_area!r}")
        if self.latent_area == "image" and not self.face_crop_fraction:
            raise cfgmod.ConfigError("latent_area: image changes only how padded face crops are coded: set "
                                     "face_crop_fraction > 0")
        if self.train_only not in TRAINABLE:
            raise cfgmod.ConfigError(f"train_only must be one of {', '.join(TRAINABLE)}, got {self.train_only!r}")
        if self.train_only == "decoder" and not self.init_from:
            raise cfgmod.ConfigError("train_only: decoder trains a decoder for an existing encoder: set init_from")
        if self.train_only == "decoder" and is_registry_ref(self.init_from):
            raise cfgmod.ConfigError("train_only: decoder keeps init_from's bitstream, but a rate point rebuilt from "
                                     "the registry has a refitted hyper-latent density (other tables): init from "
                                     "a run's model.pt")
        if not (self.alpha >= 0 and math.isfinite(self.alpha)):
            raise cfgmod.ConfigError(f"alpha must be a finite number ≥ 0, got {self.alpha}")
        if not 0.0 <= self.face_crop_fraction <= 1.0:
            raise cfgmod.ConfigError(f"face_crop_fraction must lie in [0, 1], got {self.face_crop_fraction}")
        if self.recognizer not in DIFFERENTIABLE_RECOGNIZERS:
            raise cfgmod.ConfigError(f"recognizer {self.recognizer!r} has no differentiable model here; "
                                     f"known: {', '.join(DIFFERENTIABLE_RECOGNIZERS)}")
        if self.crop_template not in CROP_TEMPLATES:
            raise cfgmod.ConfigError(f"crop_template must be one of {', '.join(CROP_TEMPLATES)}, "
                                     f"got {self.crop_template!r}")
        t = CROP_TEMPLATES[self.crop_template]
        if self.face_crop_fraction > 0 and self.patch < max(t.width, t.height):
            raise cfgmod.ConfigError(f"face crops are {t.width}×{t.height}: patch must be ≥ "
                                     f"{max(t.width, t.height)} when face_crop_fraction > 0, got {self.patch}")
        if self.max_images < 0:
            raise cfgmod.ConfigError(f"max_images must be ≥ 0, got {self.max_images}")
        if not 0.0 <= self.background_weight <= 1.0:
            raise cfgmod.ConfigError(f"background_weight must lie in [0, 1], got {self.background_weight}")
        if not (self.background_blur >= 0 and math.isfinite(self.background_blur)):
            raise cfgmod.ConfigError(f"background_blur must be a finite σ ≥ 0 (0 = off), got {self.background_blur}")
        if not (0.0 <= self.face_margin <= 2.0 and self.face_ramp >= 0):
            raise cfgmod.ConfigError(f"face_margin must lie in [0, 2] and face_ramp be ≥ 0, got "
                                     f"{self.face_margin}, {self.face_ramp}")

    @property
    def uses_landmarks(self) -> bool:
        return (self.alpha > 0 or self.face_crop_fraction > 0 or self.background_weight < 1.0
                or self.background_blur > 0)


def training_files(names: list[str], assets=None) -> list[Path]:
    files: list[Path] = []
    for name in names:
        if name == "lfw-train":
            files += [im.path for im in datasets.lfw_train_images(assets)]
        elif name == "celeba-train":
            files += [im.path for im in datasets.celeba_split("train", assets)]
        else:
            raise cfgmod.ConfigError(f"unknown training set {name!r}; known: lfw-train, celeba-train")
    return files


class PatchSampler:
    def __init__(self, files: list[Path], patch: int, min_scale: float, seed: int):
        self.images = []
        for p in tqdm(files, desc="loading training images", unit="img"):
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is None:
                raise ValueError(f"cannot read training image {p}")
            self.images.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        self.patch, self.min_scale = patch, min_scale
        self.rng = random.Random(seed)

    def _random_crop(self, im: np.ndarray, flip_probability: float = 0.5
                     ) -> tuple[np.ndarray, tuple[float, float, int, int, bool]]:
        """A random down-scaled crop of ``im`` and its geometry (x scale, y scale, crop x, crop y, flipped)."""
        h0, w0 = h, w = im.shape[:2]
        lo = max(self.min_scale, self.patch / min(h, w))
        s = self.rng.uniform(lo, 1.0)
        if s < 0.999:
            size = (max(self.patch, round(w * s)), max(self.patch, round(h * s)))
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
        h, w = im.shape[:2]
        y, x = self.rng.randrange(h - self.patch + 1), self.rng.randrange(w - self.patch + 1)
        crop = im[y : y + self.patch, x : x + self.patch]
        flipped = self.rng.random() < flip_probability
        if flipped:
            crop = crop[:, ::-1]
        return crop, (w / w0, h / h0, x, y, flipped)

    def sample(self) -> np.ndarray:
        im = self.images[self.rng.randrange(len(self.images))]
        return self._random_crop(im)[0]

    def batch(self, n: int) -> torch.Tensor:
        return _to_tensor([self.sample() for _ in range(n)])


def _to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    arr = np.stack(crops).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


# Landmark order after a horizontal flip: the eyes and the mouth corners swap sides (YuNet's order is by image side).
FLIP_ORDER = [1, 0, 2, 4, 3]
LANDMARK_CACHE_VERSION = "yunet-largest-v1"


def landmark_cache_path(files: list[Path], cache_dir: Path | None = None) -> Path:
    """``<runs>/cache/landmarks_<hash>.npz``; the hash covers the detector, the file list and each file's size."""
    from facelink.shared.detection import YUNET_SHA256

    h = hashlib.sha256(f"{LANDMARK_CACHE_VERSION}:{YUNET_SHA256}\n".encode())
    for f in files:
        h.update(f"{Path(f).resolve()}\t{Path(f).stat().st_size}\n".encode())
    return Path(cache_dir or runs_dir() / "cache") / f"landmarks_{h.hexdigest()[:16]}.npz"


def face_landmarks(
    files: list[Path], images: list[np.ndarray] | None = None, cache_dir: Path | None = None
) -> np.ndarray:
    """YuNet landmarks of the largest face of every image (N×5×2 float64, NaN where no face is found), computed
    once and cached; ``images`` (RGB arrays in ``files`` order) saves decoding the files again."""
    path = landmark_cache_path(files, cache_dir)
    if path.exists():
        with np.load(path) as z:
            if list(z["files"]) == [str(Path(f).resolve()) for f in files]:
                return z["landmarks"].astype(np.float64)
    from facelink.shared.detection import YuNet

    det = YuNet()
    out = np.full((len(files), 5, 2), np.nan)
    for i, f in enumerate(tqdm(files, desc="face landmarks (YuNet, cached once)", unit="img")):
        im = images[i] if images is not None else cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        d = det.largest(im, rgb=True)
        if d is not None:
            out[i] = d.landmarks
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, files=np.array([str(Path(f).resolve()) for f in files]), landmarks=out)
    tmp.replace(path)
    return out


class LandmarkPatchSampler(PatchSampler):
    """Patches that know where the face is: random crops as :class:`PatchSampler` (share 1 − ``face_crop_fraction``)
    and the edge's aligned face crops (``crop_template``, by default ``ARCFACE_112`` at 112×112, padded to ``patch``
    by edge replication as the edge pads to multiples of 64). Each patch carries its five landmarks;
    :meth:`batch_with_faces` returns the matrices onto the recognizer's template and identity weights (0 when that
    template's region is not fully inside the patch). Images without a detected face are skipped and counted in
    ``skipped``."""

    def __init__(
        self,
        files: list[Path],
        patch: int,
        min_scale: float,
        seed: int,
        face_crop_fraction: float = 0.0,
        template=None,
        cache_dir: Path | None = None,
        flip_probability: float = 0.5,
        background_blur: float = 0.0,
        crop_template=ARCFACE_112,
    ):
        super().__init__(files, patch, min_scale, seed)
        landmarks = face_landmarks(files, self.images, cache_dir)
        found = ~np.isnan(landmarks).any(axis=(1, 2))
        self.skipped = int((~found).sum())
        self.images = [im for im, ok in zip(self.images, found) if ok]
        self.landmarks = landmarks[found]
        self.files = [f for f, ok in zip(files, found) if ok]
        if not self.images:
            raise ValueError("no training image has a detectable face")
        if background_blur > 0:  # as the edge's --blur-background: the face region kept, the rest blurred
            blur = BackgroundBlur(sigma=background_blur)
            self.images = [blur.apply(im, [lm]) for im, lm in zip(self.images, self.landmarks)]
        self._set_draw(face_crop_fraction, template, flip_probability, crop_template)
        print(f"landmark sampler: {len(self.images)} images with a face, {self.skipped} without (skipped)")

    def _set_draw(self, face_crop_fraction: float, template, flip_probability: float, crop_template) -> None:
        """How patches are drawn, whichever way the images came in."""
        from facelink.shared.alignment import MOBILEFACENET_96x112

        self.face_crop_fraction = face_crop_fraction
        # The edge's background blur applied to each full-frame sample as it is drawn (None: frames as they are);
        # a schedule may switch it per stage, where ``background_blur`` blurs every image once for good.
        self.frame_blur: BackgroundBlur | None = None
        self.last_key, self.batch_keys = None, []
        self.crop_template = crop_template
        self.template = template or MOBILEFACENET_96x112
        self.flip_probability = flip_probability

    @classmethod
    def from_arrays(cls, images: list[np.ndarray], landmarks: np.ndarray, patch: int, min_scale: float, rng,
                    face_crop_fraction: float = 0.0, flip_probability: float = 0.5, crop_template=ARCFACE_112):
        """The sampler over frames already in memory (RGB arrays, each with a face's five landmarks), drawing with
        ``rng`` (a :class:`random.Random`, which may be shared with the caller's own draws)."""
        if len(images) != len(landmarks) or not len(images):
            raise ValueError(f"need one set of landmarks per image and at least one image, got {len(images)} images "
                             f"and {len(landmarks)} landmark sets")
        self = cls.__new__(cls)
        self.images, self.landmarks = list(images), np.asarray(landmarks, dtype=np.float64)
        self.patch, self.min_scale, self.rng = patch, min_scale, rng
        self.files, self.skipped = [], 0
        self._set_draw(face_crop_fraction, None, flip_probability, crop_template)
        return self

    @staticmethod
    def _flip_landmarks(lm: np.ndarray, width: int) -> np.ndarray:
        lm = lm[FLIP_ORDER].copy()
        lm[:, 0] = width - 1 - lm[:, 0]
        return lm

    def sample_random(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        self.last_key = None  # a random crop is drawn once: nothing to remember it by
        im = self.images[i]
        if self.frame_blur is not None:  # as the edge codes a full frame behind its face region of interest
            im = self.frame_blur.apply(im, [self.landmarks[i]])
        crop, (sx, sy, x, y, flipped) = self._random_crop(im, self.flip_probability)
        # cv2.resize maps pixel centres as x' = (x + 0.5)·s − 0.5; then the crop offset, then the mirror.
        lm = (self.landmarks[i] + 0.5) * [sx, sy] - 0.5 - [x, y]
        if flipped:
            lm = self._flip_landmarks(lm, crop.shape[1])
        return np.ascontiguousarray(crop), lm

    def sample_face_crop(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from facelink.shared.alignment import align, similarity_transform

        t = self.crop_template
        crop = align(self.images[i], self.landmarks[i], t)  # exactly the edge's FaceCropper crop
        lm = transform_points(similarity_transform(self.landmarks[i], t.points), self.landmarks[i])
        flipped = self.rng.random() < self.flip_probability
        if flipped:
            crop, lm = crop[:, ::-1], self._flip_landmarks(lm, crop.shape[1])
        self.last_key = ("crop", i, flipped)  # the same patch whenever drawn again (see batch_keys)
        pad_y, pad_x = self.patch - t.height, self.patch - t.width
        crop = np.pad(crop, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        return np.ascontiguousarray(crop), lm

    def sample_with_landmarks(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(patch, its landmarks, whether it is an aligned face crop)."""
        i = self.rng.randrange(len(self.images))
        if self.face_crop_fraction > 0 and self.rng.random() < self.face_crop_fraction:
            return (*self.sample_face_crop(i), True)
        return (*self.sample_random(i), False)

    def sample(self) -> np.ndarray:
        return self.sample_with_landmarks()[0]

    def batch_with_faces(self, n: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        """N×3×P×P patches in [0, 1], N×2×3 matrices (patch pixels → recognizer template), N identity weights, and
        N×2 image sizes (rows, columns) inside each patch: the crop's template size before its padding, or the
        patch."""
        crops, mats, weights, sizes = [], [], [], []
        t = self.crop_template
        self.batch_keys = []  # per patch: a key that names it exactly when it recurs (an aligned crop), else None
        for _ in range(n):
            crop, lm, is_crop = self.sample_with_landmarks()
            self.batch_keys.append(self.last_key)
            m = template_matrices(lm[None], self.template)[0]
            crops.append(crop)
            mats.append(m)
            weights.append(1.0 if face_inside(m, self.patch, self.patch, self.template) else 0.0)
            sizes.append((t.height, t.width) if is_crop else (self.patch, self.patch))
        return (_to_tensor(crops), np.stack(mats), np.array(weights, dtype=np.float32), np.array(sizes, dtype=np.int64))


def face_weight_map(
    matrices: np.ndarray,
    height: int,
    width: int,
    template,
    background_weight: float,
    margin: float = 0.25,
    ramp: float = 8.0,
) -> torch.Tensor:
    """N×1×H×W pixel weights: 1 on each patch's face region, ``background_weight`` elsewhere (the region as
    :func:`facelink.shared.roi.region_weights` defines it; ``matrices`` map patch pixels onto ``template``)."""
    w = region_weights(matrices, height, width, template, background_weight, margin, ramp)
    return torch.from_numpy(w[:, None])


LOG_COLUMNS = ["step", "loss", "bpp", "mse", "psnr", "aux", "lr", "seconds", "identity", "face_share"]


def open_log(path: Path, step: int, columns: list[str] = LOG_COLUMNS):
    """``log.csv`` (with ``columns``, the first being the step) opened for appending rows after ``step``: a fresh file
    at step 0; on resume, rows past the checkpoint (written before a crash) are dropped and a log from before later
    columns gets them (empty). Every trainer's resumable log."""
    rows = []
    if step and path.exists():
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        rows = [r + [""] * (len(columns) - len(r)) for r in rows if r and int(r[0]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    tmp.replace(path)
    log = open(path, "a", newline="")
    return log, csv.writer(log)


def _optimizers(model, cfg: TrainConfig):
    if cfg.train_only == "decoder":
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("g_s."))
        params = list(model.g_s.parameters())
    else:
        params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(params, lr=cfg.lr), torch.optim.Adam(aux, lr=cfg.aux_lr)


def _set_mode(model, cfg: TrainConfig) -> None:
    """Training mode for what is trained. With train_only "decoder" the frozen parts (no gradients: see
    _optimizers) run in eval mode, so the model's own forward rounds the latents around the predicted means
    exactly as the edge codes them, instead of adding noise."""
    if cfg.train_only == "decoder":
        model.eval()
        model.g_s.train()
    else:
        model.train()


def train(cfg: TrainConfig, out: Path, resume: bool = False, assets=None) -> Path:
    from facelink.cloud.training.core_v2_step import auxiliary_gradients, restore_auxiliary_gradients

    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(cfg.architecture, cfg.N, cfg.M).to(device)
    opt, aux_opt = _optimizers(model, cfg)
    step = 0
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        # the first step clips its gradient as the running process would have (core_v2_step explains why)
        restore_auxiliary_gradients(model, state.get("aux_grads"))
        step = state["step"]
        print(f"resumed from {ckpt} at step {step}")
    elif cfg.init_from:
        model.load_state_dict(init_state(cfg.init_from), strict=False)
        print(f"initialised from {cfg.init_from}")
    if step:
        torch.manual_seed(cfg.seed + step)  # a resumed run does not replay the first run's noise
    (out / "config.json").write_text(json.dumps(cfgmod.to_dict(cfg), indent=2))
    files = training_files(cfg.datasets, assets)
    if cfg.max_images and cfg.max_images < len(files):
        files = sorted(random.Random(cfg.seed).sample(files, cfg.max_images))
    identity = None
    if cfg.uses_landmarks:
        sampler = LandmarkPatchSampler(
            files,
            cfg.patch,
            cfg.min_scale,
            cfg.seed + step,
            cfg.face_crop_fraction,
            background_blur=cfg.background_blur,
            crop_template=CROP_TEMPLATES[cfg.crop_template],
        )
        identity = IdentityLoss(cfg.recognizer, device)  # with alpha 0 (the ablation) it is logged, not trained on
    else:
        sampler = PatchSampler(files, cfg.patch, cfg.min_scale, cfg.seed + step)
    log, writer = open_log(out / "log.csv", step)
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train λ={cfg.lmbda}", unit="step")
    _set_mode(model, cfg)
    while step < cfg.steps:
        lr = cfg.lr if step < cfg.lr_drop_at * cfg.steps else cfg.lr / 10
        for g in opt.param_groups:
            g["lr"] = lr
        ident, face_share = "", ""
        if cfg.uses_landmarks:
            x, mats, weights, sizes = sampler.batch_with_faces(cfg.batch_size)
            x = x.to(device)
            face_share = f"{weights.mean():.3f}"
        else:
            x = sampler.batch(cfg.batch_size).to(device)
        out_ = forward_coded_area(model, x, sizes) if cfg.latent_area == "image" else model(x)
        bpp, mse = rate_distortion_terms(out_, x)
        if cfg.background_weight < 1.0:
            wmap = face_weight_map(
                mats, x.shape[2], x.shape[3], sampler.template, cfg.background_weight, cfg.face_margin, cfg.face_ramp
            ).to(device)
            distortion = 255**2 * torch.mean(wmap * (out_["x_hat"] - x) ** 2)
        else:
            distortion = 255**2 * mse
        if identity is not None:
            with torch.set_grad_enabled(cfg.alpha > 0):
                d_id, per_sample = identity(x, out_["x_hat"], mats, weights)
            if cfg.alpha > 0:
                distortion = distortion + cfg.alpha * d_id
            valid = per_sample[~torch.isnan(per_sample)]
            ident = f"{valid.mean().item():.5f}" if len(valid) else ""
        loss = bpp + cfg.lmbda * distortion
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        aux = model.aux_loss()
        if cfg.train_only == "all":  # a frozen entropy model keeps its quantiles, hence its tables
            aux_opt.zero_grad()
            aux.backward()
            aux_opt.step()
        step += 1
        psnr = -10 * math.log10(max(mse.item(), 1e-10))
        writer.writerow(
            [
                step,
                f"{loss.item():.5f}",
                f"{bpp.item():.5f}",
                f"{mse.item():.7f}",
                f"{psnr:.3f}",
                f"{aux.item():.3f}",
                lr,
                f"{time.time() - t0:.1f}",
                ident,
                face_share,
            ]
        )
        bar.update(1)
        bar.set_postfix(bpp=f"{bpp.item():.3f}", psnr=f"{psnr:.2f}", **({"id": ident} if ident else {}))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            log.flush()
            tmp = out / "checkpoint.pt.tmp"
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "aux_opt": aux_opt.state_dict(),
                    "aux_grads": auxiliary_gradients(model),
                    "step": step,
                    "config": cfgmod.to_dict(cfg),
                },
                tmp,
            )
            tmp.replace(ckpt)  # atomic: a crash never leaves a half-written checkpoint
    bar.close()
    log.close()
    model.update(force=True)
    final = out / "model.pt"
    torch.save({"model": model.state_dict(), "config": cfgmod.to_dict(cfg), "step": step}, final)
    print(f"wrote {final}")
    return final


def main(argv: list[str] | None = None) -> int:
    from facelink.cloud.training import ladder

    ap = argparse.ArgumentParser(prog="facelink train", description=__doc__)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--config", help="YAML or JSON training configuration (unknown keys are errors)")
    src.add_argument(
        "--ladder", metavar="NAME", help="a research ladder (cloud/training/ladders/NAME.yaml); with --point"
    )
    ap.add_argument("--point", metavar="qK", help="the ladder's rate point to train, e.g. q3")
    ap.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv, model.pt")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (JSON value)"
    )
    args = ap.parse_args(argv)
    if bool(args.ladder) != bool(args.point):
        ap.error("--ladder and --point go together")
    try:
        if args.ladder:
            data = cfgmod.to_dict(ladder.expand(args.ladder, args.point))
        else:
            data = cfgmod.to_dict(cfgmod.load(TrainConfig, args.config)) if args.config else {}
        cfg = cfgmod.from_mapping(TrainConfig, cfgmod.apply_overrides(data, args.set), "training config")
        train(cfg, Path(args.out), resume=args.resume, assets=args.assets)
    except (OSError, cfgmod.ConfigError) as e:
        print(f"facelink train: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
