"""A training pack for core v2: the training split's aligned face crops, small enough to travel to an
accelerator with the working tree (a device machine has no data sets), and the sampler that trains on it.

``facelink core-v2 pack --config CONFIG --out runs/core-v2-pack.npz`` writes, for every training image with a face,
its crop aligned to the configuration's template (exactly the edge's crop) as a JPEG of quality 95 (about 5.5 kB
each, 41 MB for the 7,379 images with a face) with its five landmarks in crop pixels, and the run's validation batch
as raw pixels, so that a run on the pack reports figures comparable with the CPU run's.
Beside the crops a pack holds a seeded choice of whole training frames (JPEG quality 90, about 13.5 kB each, as many
as ``frames_mb`` megabytes hold; 14 MB: 1,034) with their largest face's landmarks, so that a chunk also trains
the full-frame share of each stage (``face_crop_fraction``), drawn through the stage's ``background_blur`` as on the
CPU. ``facelink core-v2 train --pack PATH`` trains on it. Nothing of the test protocols is in a pack (the split is
the run's). A pack of the first format (crops only) still trains, on crops only.

A chunk on an accelerator travels with a pack: :mod:`.core_v2_device` (the device kit and its script).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

PACK_FORMAT = "facelink-core-v2-pack-v2"
READABLE_FORMATS = ("facelink-core-v2-pack-v1", PACK_FORMAT)  # v1: crops only
JPEG_QUALITY = 95
FRAME_JPEG_QUALITY = 90
FRAMES_MB = 14.0  # the frames' share of a pack: with the crops (41 MB) and the site it fits a device call's carry


def write_pack(cfg, out: Path, assets=None, jpeg_quality: int = JPEG_QUALITY, frames_mb: float = FRAMES_MB) -> dict:
    """Write the pack of run configuration ``cfg`` (a :class:`~facelink.cloud.training.core_v2.CoreV2Config`) to
    ``out`` (atomically), with as many whole frames as ``frames_mb`` megabytes hold (0: none); returns its
    summary."""
    if not frames_mb >= 0:
        raise ValueError(f"frames_mb must be ≥ 0, got {frames_mb}")
    from facelink.cloud.training.core_v2 import split_files, validation_batch
    from facelink.cloud.training.train import face_landmarks
    from facelink.shared.alignment import CROP_TEMPLATES, align, similarity_transform, transform_points

    t = CROP_TEMPLATES[cfg.crop_template]
    train_files, val_files = split_files(cfg, assets)
    landmarks = face_landmarks(train_files)
    blobs, lms = [], []
    for f, lm in tqdm(list(zip(train_files, landmarks)), desc="aligned crops for the pack", unit="img"):
        if np.isnan(lm).any():
            continue
        im = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if im is None:
            raise ValueError(f"cannot read training image {f}")
        rgb = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        crop = align(rgb, lm, t)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise ValueError(f"cannot encode the crop of {f}")
        blobs.append(buf.reshape(-1))
        lms.append(transform_points(similarity_transform(lm, t.points), lm))
    frames, frame_lms = _frames(train_files, landmarks, int(frames_mb * 1e6), cfg.seed)
    val_x, val_mats, val_sizes = validation_batch(cfg, val_files)
    meta = {"format": PACK_FORMAT, "run_name": cfg.run_name, "crop_template": cfg.crop_template,
            "patch": cfg.patch, "crops": len(blobs), "skipped_without_face": len(train_files) - len(blobs),
            "jpeg_quality": jpeg_quality, "frames": len(frames), "frame_jpeg_quality": FRAME_JPEG_QUALITY,
            "frames_bytes": int(sum(len(b) for b in frames)), "seed": cfg.seed, "datasets": cfg.datasets}
    frame_offsets = np.cumsum([0] + [len(b) for b in frames]).astype(np.int64)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 jpeg=np.concatenate(blobs), offsets=offsets, landmarks=np.stack(lms).astype(np.float64),
                 frame_jpeg=np.concatenate(frames) if frames else np.zeros(0, np.uint8), frame_offsets=frame_offsets,
                 frame_landmarks=np.stack(frame_lms).astype(np.float64) if frames else np.zeros((0, 5, 2)),
                 val_x=(val_x.numpy() * 255).round().astype(np.uint8), val_mats=val_mats, val_sizes=val_sizes)
    tmp.replace(out)
    return dict(meta, bytes=out.stat().st_size)


def _frames(files: list[Path], landmarks: np.ndarray, budget: int, seed: int) -> tuple[list, list]:
    """JPEGs of whole training frames with a face, in a seeded order, while they fit ``budget`` bytes, and their
    landmarks (frame pixels)."""
    order = [i for i in range(len(files)) if not np.isnan(landmarks[i]).any()]
    random.Random(f"core-v2-pack-frames:{seed}").shuffle(order)
    blobs, lms, used = [], [], 0
    bar = tqdm(total=budget, desc="whole frames for the pack", unit="B", unit_scale=True)
    for i in order:
        im = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if im is None:
            raise ValueError(f"cannot read training image {files[i]}")
        ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
        if not ok:
            raise ValueError(f"cannot encode {files[i]}")
        if used + len(buf) > budget:
            break
        blobs.append(buf.reshape(-1))
        lms.append(landmarks[i])
        used += len(buf)
        bar.update(len(buf))
    bar.close()
    return blobs, lms


def read_meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
    if meta.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path}: not a core v2 training pack (format {meta.get('format')!r})")
    return meta


def _decode(jpeg: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """The RGB images of a pack's concatenated JPEGs (``offsets``: where each starts, and the end)."""
    return [cv2.cvtColor(cv2.imdecode(jpeg[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for a, b in zip(offsets[:-1], offsets[1:])]


class PackedCropSampler:
    """Batches of a pack as the landmark-aware sampler gives them: aligned crops (padded to the patch by edge
    replication as the edge pads, flipped with probability ``flip_probability``) and, with the share
    1 − ``face_crop_fraction``, random down-scaled crops of its whole frames drawn through ``frame_blur``
    (:class:`~facelink.cloud.training.train.LandmarkPatchSampler`'s own draw); patches, recognizer matrices,
    identity weights and image sizes. A pack without frames gives crops only, whatever the fraction."""

    def __init__(self, path: Path, cfg, seed: int, flip_probability: float = 0.5):
        from facelink.shared.alignment import CROP_TEMPLATES, MOBILEFACENET_96x112

        meta = read_meta(path)
        if meta["crop_template"] != cfg.crop_template or meta["patch"] != cfg.patch:
            raise ValueError(f"{path} holds {meta['crop_template']} crops for patch {meta['patch']}; the run uses "
                             f"{cfg.crop_template} and {cfg.patch}")
        with np.load(path, allow_pickle=False) as z:
            jpeg, offsets = z["jpeg"], z["offsets"]
            self.landmarks = z["landmarks"]
            self.validation = (torch.from_numpy(z["val_x"].astype(np.float32) / 255.0), z["val_mats"],
                               z["val_sizes"])
            frames = ((z["frame_jpeg"], z["frame_offsets"], z["frame_landmarks"]) if "frame_jpeg" in z.files
                      else (np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros((0, 5, 2))))
        self.images = _decode(jpeg, offsets)
        self.crop_template = CROP_TEMPLATES[cfg.crop_template]
        self.template = MOBILEFACENET_96x112
        self.patch = cfg.patch
        self.flip_probability = flip_probability
        self.face_crop_fraction = 1.0
        self.batch_keys: list = []
        self.rng = random.Random(seed)
        self.frames = None  # the whole frames, drawn as the data sets' sampler draws them (sharing this rng)
        fjpeg, foffsets, flms = frames
        if len(flms):
            from facelink.cloud.training.train import LandmarkPatchSampler

            self.frames = LandmarkPatchSampler.from_arrays(_decode(fjpeg, foffsets), flms, cfg.patch, cfg.min_scale,
                                                           self.rng, flip_probability=flip_probability)

    @property
    def frame_blur(self):
        return self.frames.frame_blur if self.frames is not None else None

    @frame_blur.setter
    def frame_blur(self, blur) -> None:
        if self.frames is not None:
            self.frames.frame_blur = blur

    def _draw(self) -> tuple[np.ndarray, np.ndarray, tuple | None, tuple[int, int]]:
        """One patch: (pixels, landmarks, its key for ``batch_keys``, the image's rows and columns inside it)."""
        from facelink.cloud.training.train import LandmarkPatchSampler

        if self.frames is not None and self.rng.random() >= self.face_crop_fraction:
            patch, lm = self.frames.sample_random(self.rng.randrange(len(self.frames.images)))
            return patch, lm, None, (self.patch, self.patch)  # a frame's random crop never recurs exactly
        t = self.crop_template
        i = self.rng.randrange(len(self.images))
        crop, lm = self.images[i], self.landmarks[i]
        flipped = self.rng.random() < self.flip_probability
        if flipped:
            crop, lm = crop[:, ::-1], LandmarkPatchSampler._flip_landmarks(lm, crop.shape[1])
        patch = np.pad(crop, ((0, self.patch - t.height), (0, self.patch - t.width), (0, 0)), mode="edge")
        return patch, lm, ("pack-crop", i, flipped), (t.height, t.width)

    def batch_with_faces(self, n: int):
        from facelink.cloud.training.identity_loss import face_inside, template_matrices
        from facelink.cloud.training.train import _to_tensor

        crops, mats, weights, sizes = [], [], [], []
        self.batch_keys = []  # as LandmarkPatchSampler's: an aligned crop's key, None for a frame's random crop
        for _ in range(n):
            patch, lm, key, size = self._draw()
            m = template_matrices(lm[None], self.template)[0]
            crops.append(patch)
            mats.append(m)
            weights.append(1.0 if face_inside(m, self.patch, self.patch, self.template) else 0.0)
            sizes.append(size)
            self.batch_keys.append(key)
        return (_to_tensor(crops), np.stack(mats), np.array(weights, dtype=np.float32),
                np.array(sizes, dtype=np.int64))
