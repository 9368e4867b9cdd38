"""Codec core v2: the variable-rate face codec trained for a long time, resumably, on a ladder of stages.

``facelink core-v2 train --config cloud/training/configs/core-v2.yaml`` trains
:class:`~facelink.cloud.serving.variable_rate.VariableRateFaceCodec` on the ``stages:`` ladder of the configuration.
Each sample of a batch gets its own quality ``q`` (an integer quality, or with ``continuous_share`` a uniform
real one, inside the stage's quality range) and the loss is the IPR rate points'
``R + λ(q)·(255²·MSE + α·D_identity)`` per sample, with λ(q) from the fixed geometric table of
:mod:`facelink.cloud.serving.variable_rate`. Rate and MSE are over each image's own area (a 112×112 aligned crop
padded to the patch as the edge pads it, coded as container version 2+ codes it; or a random crop of a full frame).

Where a run lives (``run_name`` in the configuration, e.g. ``core-v2`` and its α = 0 ablation ``core-v2-a0``):

- ``~/.cache/facelink/<run_name>/`` (``--run-dir`` or ``$FACELINK_CORE_V2_DIR`` override it): ``checkpoint.pt``
  (model, its exponential moving average, both optimizers, the quantiles' auxiliary gradients, step, RNG states;
  written atomically every ``checkpoint_minutes``) and ``log.csv``;
- ``benchmarks/results/<run_name>/progress.json`` (committed): at each checkpoint the step, stage, wall seconds and
  bpp / PSNR / 1 − cos identity per quality on a fixed validation batch of aligned crops of held-out training
  images (never the test protocols), measured on the averaged weights when ``ema_decay`` > 0 (:class:`WeightAverage`);
- ``cloud/training/checkpoints/<run_name>.safetensors`` + ``.json`` (committed milestones, ``facelink core-v2
  milestone``, also written by the training every ``milestone_minutes`` so that the work tree holds them): the model's
  weights in float16 (its entropy-model parameters and gains in float32), the averaged ones when the checkpoint holds an
  average (the record's ``weights`` says which). A run with no checkpoint in its folder (a fresh machine) starts from
  the milestone at the milestone's step.

``facelink core-v2 measure`` times training steps of candidate sizes on one thread (how N and M were chosen).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facelink.cloud.serving.variable_rate import (
    ARCHITECTURE,
    QUALITIES,
    VariableRateFaceCodec,
    build,
    forward_vr,
    lmbda,
    per_sample_terms,
)
from facelink.cloud.training.core_v2_step import (
    auxiliary_gradients,
    fast_recognizer,
    restore_auxiliary_gradients,
    training_step,
    tune_allocator,
)
from facelink.cloud.training.train import open_log
from facelink.shared import config as cfgmod
from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES
from facelink.shared.paths import REPO_ROOT

RUN_DIR_ENV = "FACELINK_CORE_V2_DIR"
_BASE = REPO_ROOT if REPO_ROOT is not None else Path.cwd()
RESULTS_ROOT = _BASE / "benchmarks" / "results"
MILESTONES_DIR = _BASE / "cloud" / "training" / "checkpoints"
# Tensors kept in float32 in a milestone: the entropy models' parameters (their medians become the tables' fixed
# point medians) and the gains; everything else is stored in float16.
FLOAT32_PREFIXES = ("entropy_bottleneck.", "gaussian_conditional.", "log_gain", "log_inv_gain")


TRANSFORM_PRECISIONS = ("float32", "bfloat16", "auto")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware: a GPU that says so, a CPU with AVX-512 BF16 or
    AMX (elsewhere bfloat16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def transform_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the transforms for a configuration's ``transform_precision`` (None: float32)."""
    if precision == "bfloat16" or (precision == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return None


@dataclass
class Stage:
    """One rung of the schedule: trained from the previous stage's last step up to ``until_step``."""

    name: str
    until_step: int
    lr: float
    quality_min: float = 0.0  # qualities sampled per sample, in [quality_min, quality_max]
    quality_max: float = QUALITIES - 1
    alpha: float = 0.0  # weight of the identity term (0 = pixel loss only)
    face_crop_fraction: float = 0.75  # share of aligned 112×112 crops; the rest are random crops of full frames
    # σ of the edge's background blur (facelink.shared.roi.BackgroundBlur) applied to the full frames before their
    # random crop, as the full-frame mode behind the ROI codes them; 0: the frames as they are
    background_blur: float = 0.0

    def frame_blur(self):
        """The blur the full-frame share is drawn through in this stage, or None."""
        from facelink.shared.roi import BackgroundBlur

        return BackgroundBlur(sigma=self.background_blur) if self.background_blur > 0 else None


@dataclass
class CoreV2Config:
    run_name: str = "core-v2"
    architecture: str = ARCHITECTURE
    N: int = 128  # channels of the synthesis and the hyperprior
    M: int = 160  # latent channels
    N_analysis: int = 0  # channels of the edge's analysis transform (0: N)
    qualities: int = QUALITIES
    stages: list[Stage] = field(default_factory=list)
    batch_size: int = 8
    patch: int = 128
    aux_lr: float = 1e-3
    min_scale: float = 0.45
    continuous_share: float = 0.25  # share of samples whose quality is real-valued (trains the interpolation)
    seed: int = 0
    threads: int = 1
    checkpoint_minutes: float = 10.0
    recognizer: str = "mobilefacenet"
    crop_template: str = ARCFACE_112.name
    datasets: list[str] = field(default_factory=lambda: ["lfw-train", "celeba-train"])
    validation_images: int = 16  # held out of the training images, never trained on
    max_images: int = 0  # train on this many images only (seeded choice); 0 = all. For smoke runs.
    fast_step: bool = True  # cheaper steps on a CPU, same loss (core_v2_step); false: the reference step
    # Precision of the analysis and synthesis transforms in training (quantisation, hyperprior and likelihoods are
    # float32 always): float32, bfloat16, or auto = bfloat16 where the device computes it natively (a CPU with
    # AVX-512 BF16 or AMX, a GPU that supports it), else float32. Validation and export are float32.
    transform_precision: str = "float32"
    # Exponential moving average of the weights: the model that is validated, exported and committed (0: off, the
    # raw weights). At lr 1e-4 and batch 8 the raw weights' validation PSNR at the top quality fell by 1.5 dB
    # between two checkpoints ten minutes apart (steps 14,053 and 14,424) and came back at the next one.
    # 0.999 averages over about 1/(1 − 0.999) = 1000 steps, about three checkpoint intervals of the run (346 steps
    # apart at the median), and lags the raw weights by a small share of each stage (20,000+ steps).
    ema_decay: float = 0.999
    # Write the milestone (the committed float16 weights, ``facelink core-v2 milestone``) into the work tree this
    # often while training (0: only by hand), so that a working tree handed on without its machine's cache still
    # holds recent weights to resume from: a run's checkpoint lives outside the work tree and is lost with it.
    milestone_minutes: float = 60.0

    def __post_init__(self):
        from facelink.cloud.training.identity_loss import DIFFERENTIABLE_RECOGNIZERS

        if not self.run_name or not all(c.isalnum() or c in "-_" for c in self.run_name):
            raise cfgmod.ConfigError(f"run_name must be letters, digits, - and _, got {self.run_name!r}")
        if self.architecture != ARCHITECTURE:
            raise cfgmod.ConfigError(f"architecture must be {ARCHITECTURE}, got {self.architecture!r}")
        if self.qualities < 2:
            raise cfgmod.ConfigError(f"qualities must be ≥ 2, got {self.qualities}")
        if min(self.N, self.M) < 1 or self.N_analysis < 0:
            raise cfgmod.ConfigError(f"N and M must be ≥ 1 and N_analysis ≥ 0, got {self.N}, {self.M}, "
                                     f"{self.N_analysis}")
        if not self.stages:
            raise cfgmod.ConfigError("stages: the schedule needs at least one stage")
        last = 0
        for s in self.stages:
            if s.until_step <= last:
                raise cfgmod.ConfigError(f"stage {s.name!r}: until_step {s.until_step} must exceed {last} "
                                         "(stages are in training order)")
            last = s.until_step
            if not (s.lr > 0 and math.isfinite(s.lr)):
                raise cfgmod.ConfigError(f"stage {s.name!r}: lr must be a positive number, got {s.lr}")
            if not 0 <= s.quality_min <= s.quality_max <= self.qualities - 1:
                raise cfgmod.ConfigError(f"stage {s.name!r}: need 0 ≤ quality_min ≤ quality_max ≤ "
                                         f"{self.qualities - 1}, got {s.quality_min}, {s.quality_max}")
            if not (s.alpha >= 0 and math.isfinite(s.alpha)):
                raise cfgmod.ConfigError(f"stage {s.name!r}: alpha must be a finite number ≥ 0, got {s.alpha}")
            if not 0 <= s.face_crop_fraction <= 1:
                raise cfgmod.ConfigError(f"stage {s.name!r}: face_crop_fraction must lie in [0, 1]")
            if not (s.background_blur >= 0 and math.isfinite(s.background_blur)):
                raise cfgmod.ConfigError(f"stage {s.name!r}: background_blur must be a finite σ ≥ 0 (0 = off), "
                                         f"got {s.background_blur}")
        if self.recognizer not in DIFFERENTIABLE_RECOGNIZERS:
            raise cfgmod.ConfigError(f"recognizer must be one of {', '.join(DIFFERENTIABLE_RECOGNIZERS)}")
        if self.crop_template not in CROP_TEMPLATES:
            raise cfgmod.ConfigError(f"crop_template must be one of {', '.join(CROP_TEMPLATES)}")
        t = CROP_TEMPLATES[self.crop_template]
        if self.patch % 64 or self.patch < max(t.width, t.height):
            raise cfgmod.ConfigError(f"patch must be a multiple of 64 that holds a {t.width}×{t.height} crop")
        if not 0 <= self.continuous_share <= 1:
            raise cfgmod.ConfigError(f"continuous_share must lie in [0, 1], got {self.continuous_share}")
        if self.checkpoint_minutes <= 0 or self.batch_size < 1 or self.threads < 1 or self.validation_images < 1:
            raise cfgmod.ConfigError("checkpoint_minutes, batch_size, threads and validation_images must be > 0")
        if self.milestone_minutes < 0:
            raise cfgmod.ConfigError(f"milestone_minutes must be ≥ 0 (0: only by hand), got {self.milestone_minutes}")
        if self.transform_precision not in TRANSFORM_PRECISIONS:
            raise cfgmod.ConfigError(f"transform_precision must be one of {', '.join(TRANSFORM_PRECISIONS)}, got "
                                     f"{self.transform_precision!r}")
        if not 0 <= self.ema_decay < 1:
            raise cfgmod.ConfigError(f"ema_decay must lie in [0, 1) (0: no average), got {self.ema_decay}")

    @property
    def total_steps(self) -> int:
        return self.stages[-1].until_step

    def stage_at(self, step: int) -> Stage:
        """The stage that trains step ``step`` + 1 (the last one once the schedule is done)."""
        return next((s for s in self.stages if step < s.until_step), self.stages[-1])


def default_run_dir(run_name: str) -> Path:
    env = os.environ.get(RUN_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facelink" / run_name


def progress_path(run_name: str) -> Path:
    return RESULTS_ROOT / run_name / "progress.json"


def milestone_paths(run_name: str) -> tuple[Path, Path]:
    return MILESTONES_DIR / f"{run_name}.safetensors", MILESTONES_DIR / f"{run_name}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------
def split_files(cfg: CoreV2Config, assets=None) -> tuple[list[Path], list[Path]]:
    """(training files, validation files): the validation images are a seeded choice among the training split's
    images, held out of training; neither touches LFW View 2 or the CelebA test identities."""
    from facelink.cloud.training.train import training_files

    files = sorted(training_files(cfg.datasets, assets))
    rng = random.Random(f"core-v2-validation:{cfg.seed}")
    val = sorted(rng.sample(files, min(cfg.validation_images * 4, len(files) // 2)))
    held = set(val)
    train = [f for f in files if f not in held]
    if cfg.max_images and cfg.max_images < len(train):
        train = sorted(random.Random(cfg.seed).sample(train, cfg.max_images))
    return train, val


def validation_batch(cfg: CoreV2Config, files: list[Path]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The fixed validation batch: aligned crops (no flip) of the first ``validation_images`` held-out images with
    a detected face, padded to the patch as the edge pads them; their recognizer matrices and image sizes."""
    from facelink.cloud.training.identity_loss import template_matrices
    from facelink.cloud.training.train import LandmarkPatchSampler, _to_tensor

    s = LandmarkPatchSampler(files, cfg.patch, cfg.min_scale, cfg.seed, 1.0, flip_probability=0.0,
                             crop_template=CROP_TEMPLATES[cfg.crop_template])
    crops, mats = [], []
    for i in range(min(cfg.validation_images, len(s.images))):
        crop, lm = s.sample_face_crop(i)
        crops.append(crop)
        mats.append(template_matrices(lm[None], s.template)[0])
    t = CROP_TEMPLATES[cfg.crop_template]
    return _to_tensor(crops), np.stack(mats), np.array([(t.height, t.width)] * len(crops), dtype=np.int64)


def sample_qualities(rng: random.Random, n: int, stage: Stage, continuous_share: float) -> torch.Tensor:
    """One quality per sample: an integer of the stage's range, or (``continuous_share``) a uniform real one."""
    lo, hi = stage.quality_min, stage.quality_max
    ints = list(range(math.ceil(lo), math.floor(hi) + 1)) or [lo]
    return torch.tensor([rng.uniform(lo, hi) if rng.random() < continuous_share else float(rng.choice(ints))
                         for _ in range(n)], dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------------
# Model state: checkpoints and milestones
# --------------------------------------------------------------------------------------------------------------
def new_model(cfg: CoreV2Config) -> VariableRateFaceCodec:
    return build(cfg.architecture, cfg.N, cfg.M, cfg.qualities, cfg.N_analysis or None)


def _optimizers(model: VariableRateFaceCodec, lr: float, aux_lr: float):
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(params, lr=lr), torch.optim.Adam(aux, lr=aux_lr)


class WeightAverage:
    """An exponential moving average of a model's weights, updated after each optimizer step:
    ``avg ← avg + (1 − decay)·(w − avg)``.

    Why: at lr 1e-4 and batch 8 the raw weights are a noisy sample of where training is; a milestone or a validation
    taken from them depends on which step it happens to land on (the top quality's validation PSNR moved by 1.5 dB
    between two checkpoints ten minutes apart). The average is what gets validated, committed and exported.

    What is averaged: every parameter (all floating point): the transforms, the hyperprior, the per-quality gain
    vectors ``log_gain``/``log_inv_gain`` and the entropy bottleneck's density parameters and ``quantiles`` (whose
    medians the bitstream quantises around). The buffers are not averaged: the floating-point ones (GDN pedestals and
    bounds, likelihood bounds, the bottleneck's ``target``, ``scale_bound``) are constants that training never
    changes, and the integer CDF tables and ``scale_table`` are recomputed from the parameters by ``update()`` when a
    model is exported; :attr:`model` carries the live model's buffers as they were when it was built.

    :attr:`model` is a frozen copy of the live model whose parameters are the averages (on the live model's device):
    validate it directly. One update is a single ``torch._foreach_lerp_`` over the parameter list."""

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy

        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0  # optimizer steps averaged since the average started from the live weights
        self.model = copy.deepcopy(model).requires_grad_(False)
        for p in self.model.parameters():
            p.grad = None
        self._live = list(model.parameters())
        self._avg = list(self.model.parameters())
        if not all(p.is_floating_point() for p in self._live):
            raise TypeError("every parameter must be floating point to be averaged")

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._avg, self._live, 1.0 - self.decay)
        self.updates += 1

    def state_dict(self) -> dict:
        """What a checkpoint stores: the decay, the number of updates and the averaged parameters by name."""
        return {"decay": self.decay, "updates": self.updates,
                "params": {n: p.detach().clone() for n, p in self.model.named_parameters()}}

    def load_state_dict(self, state: dict) -> None:
        params = dict(self.model.named_parameters())
        if set(state["params"]) != set(params):
            raise ValueError("the stored average does not hold this model's parameters")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["params"][n])
        self.updates = int(state.get("updates", 0))


def checkpoint_weights(cfg: CoreV2Config, state: dict, raw: bool = False) -> tuple[VariableRateFaceCodec, dict]:
    """The model a checkpoint stands for: its averaged weights when it holds an average (:class:`WeightAverage`)
    and ``raw`` is false, else the raw training weights; and a record of which (``weights``: ``ema`` or ``raw``,
    with the decay and the number of steps averaged)."""
    model = new_model(cfg)
    weights = dict(state["model"])
    ema = None if raw else state.get("ema")
    if ema is not None:
        weights.update(ema["params"])
    _resize_entropy_buffers(model, weights)
    model.load_state_dict(weights)
    info = ({"weights": "ema", "ema_decay": float(ema["decay"]), "ema_updates": int(ema.get("updates", 0))}
            if ema is not None else {"weights": "raw"})
    return model, info


def milestone_state(model: VariableRateFaceCodec) -> dict[str, torch.Tensor]:
    """The model's state for a milestone file: float16, except the tensors of :data:`FLOAT32_PREFIXES`."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float() if k.startswith(FLOAT32_PREFIXES) else v.half()
        out[k] = v.contiguous()
    return out


def load_milestone(path: Path, cfg: CoreV2Config) -> tuple[VariableRateFaceCodec, dict]:
    """A model from a milestone file (float16 weights cast to float32) and its JSON record."""
    from safetensors.torch import load_file

    record = json.loads(path.with_suffix(".json").read_text())
    for key in ("N", "M", "N_analysis", "qualities", "architecture"):
        if record.get(key, 0) != getattr(cfg, key):
            raise cfgmod.ConfigError(f"milestone {path} has {key} {record[key]!r}, the configuration "
                                     f"{getattr(cfg, key)!r}")
    model = new_model(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    _resize_entropy_buffers(model, state)
    model.load_state_dict(state)
    return model, record


def _resize_entropy_buffers(model, state: dict) -> None:
    """CompressAI's CDF buffers start empty; give them the stored shapes so load_state_dict accepts them."""
    for name, buf in list(model.named_buffers()):
        if name in state and buf.shape != state[name].shape:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            setattr(module, attr, torch.empty_like(state[name]))


def write_milestone(cfg: CoreV2Config, run_dir: Path) -> Path:
    """Export the run's checkpoint as the committed milestone (weights only) with its step, stage and last
    validation figures: its averaged weights when it holds an average (the record's ``weights``, ``ema_decay`` and
    ``ema_updates`` say so; the validation figures were measured on the same weights), else the raw ones."""
    from safetensors.torch import save_file

    from facelink.shared.detection import sha256_file

    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}: nothing to export")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model, which = checkpoint_weights(cfg, state)
    weights, record_path = milestone_paths(cfg.run_name)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(milestone_state(model), str(tmp))
    tmp.chmod(0o644)  # a committed file, readable by all like the rest of the tree
    tmp.replace(weights)
    step = int(state["step"])
    record = {"run_name": cfg.run_name, "architecture": cfg.architecture, "N": cfg.N, "M": cfg.M,
              "N_analysis": cfg.N_analysis, "qualities": cfg.qualities, "step": step,
              "stage": cfg.stage_at(max(step - 1, 0)).name,
              "wall_seconds": round(float(state.get("wall_seconds", 0.0)), 1), **which,
              "validation": state.get("validation"), "config": cfgmod.to_dict(cfg),
              "sha256": sha256_file(weights)}
    _write_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return weights


def run_status(cfg: CoreV2Config, run_dir: Path) -> dict:
    """Where a run stands: whether a process trains it (and its pid), the checkpoint's and the milestone's steps,
    the stage, and the last progress entry."""
    import fcntl

    running, pid = False, None
    lock = run_dir / "lock"
    if lock.is_file():
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
            except BlockingIOError:
                fh.seek(0)
                running, pid = True, fh.read().strip() or None
    progress = progress_path(cfg.run_name)
    entries = json.loads(progress.read_text())["entries"] if progress.is_file() else []
    record = milestone_paths(cfg.run_name)[1]
    last = entries[-1] if entries else None
    return {"run_name": cfg.run_name, "run_dir": str(run_dir), "running": running, "pid": pid,
            "checkpoint": (run_dir / "checkpoint.pt").is_file(), "total_steps": cfg.total_steps,
            "milestone_step": json.loads(record.read_text())["step"] if record.is_file() else None,
            "last_progress": last, "stage_now": cfg.stage_at(last["step"]).name if last else cfg.stages[0].name}


def export_model(cfg: CoreV2Config, run_dir: Path, source: str, name: str, out_root: Path | None = None,
                 weights: str = "float16", raw: bool = False, default_quality: float | None = None,
                 purpose: str | None = None) -> Path:
    """The run's weights (its checkpoint, or the committed milestone) as the registry model ``name``. A checkpoint
    gives its averaged weights (:class:`WeightAverage`) unless ``raw`` or it holds none; the entropy tables are
    computed from the exported weights (``update()`` in the export), so the bitstream matches them."""
    from facelink.cloud.training.export_v2 import export

    if source == "checkpoint":
        ckpt = run_dir / "checkpoint.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"no checkpoint at {ckpt}; --source milestone exports the committed weights")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model, which = checkpoint_weights(cfg, state, raw)
        step, validation = int(state["step"]), state.get("validation")
        if which["weights"] != "ema" and state.get("ema") is not None:
            validation = None  # the checkpoint's figures are the average's, not these weights'
    elif source == "milestone":
        if raw:
            raise ValueError("a milestone holds one set of weights; raw weights come from --source checkpoint")
        model, record = load_milestone(milestone_paths(cfg.run_name)[0], cfg)
        step, validation = int(record["step"]), record.get("validation")
        which = {k: record[k] for k in ("weights", "ema_decay", "ema_updates") if k in record}
    else:
        raise ValueError(f"source must be checkpoint or milestone, got {source!r}")
    provenance = {"run_name": cfg.run_name, "source": source, "step": step,
                  "stage": cfg.stage_at(max(step - 1, 0)).name, **which, "validation": validation,
                  "config": cfgmod.to_dict(cfg), "command": "facelink core-v2 export"}
    return export(model, name, out_root, f"variable-rate core v2 ({cfg.run_name}) at step {step}", provenance,
                  weights, default_quality=default_quality, purpose=purpose)


# --------------------------------------------------------------------------------------------------------------
# Validation and progress
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: VariableRateFaceCodec, batch, identity) -> dict[str, dict[str, float]]:
    """Per integer quality on the validation batch (eval mode: latents rounded as the edge rounds them): bpp
    (estimated from the likelihoods over the 112×112 area), mean PSNR of the 8-bit reconstruction, mean 1 − cos."""
    x, mats, sizes = batch
    was_training = model.training
    model.eval()
    out = {}
    h, w = (int(v) for v in sizes[0])
    for q in range(model.qualities):
        res = forward_vr(model, x, float(q), sizes)
        bpp, _ = per_sample_terms(res, x, sizes)
        x_hat = (res["x_hat"].clamp(0, 1) * 255).round() / 255
        mse = ((x_hat - x)[:, :, :h, :w] ** 2).flatten(1).mean(1).clamp_min(1e-10)
        _, d = identity(x, x_hat, mats)
        out[str(q)] = {"bpp": round(bpp.mean().item(), 4), "bytes_est": round(bpp.mean().item() * h * w / 8, 1),
                       "psnr": round((-10 * torch.log10(mse)).mean().item(), 3),
                       "identity_1mcos": round(torch.nanmean(d).item(), 5)}
    model.train(was_training)
    return out


def _progress(cfg: CoreV2Config) -> tuple[dict, dict]:
    """(the progress file's content, the model shape it must record); a ConfigError when it records another
    model, so that two models' figures are never mixed in one file."""
    path = progress_path(cfg.run_name)
    data = json.loads(path.read_text()) if path.is_file() else {}
    shape = {"architecture": cfg.architecture, "N": cfg.N, "M": cfg.M, "N_analysis": cfg.N_analysis,
             "qualities": cfg.qualities}
    if data and any(data.get(k, 0) != v for k, v in shape.items()):
        raise cfgmod.ConfigError(f"{path} records another model ({', '.join(f'{k} {data.get(k)}' for k in shape)}); "
                                 "move it away to start a new run's progress")
    return data, shape


def append_progress(cfg: CoreV2Config, entry: dict) -> None:
    """Append one entry to the committed progress file (written atomically). Nothing is ever dropped: after a crash
    between an entry and its checkpoint, or a chunk run elsewhere, entries of equal steps may follow each other;
    each says where it ran (``device``, ``run_dir``)."""
    path = progress_path(cfg.run_name)
    data, shape = _progress(cfg)
    entries = data.get("entries", [])
    data = {"run_name": cfg.run_name, **shape, "lambda_of_quality": {str(q): lmbda(q) for q in range(cfg.qualities)},
            "stages": [cfgmod.to_dict(s) for s in cfg.stages], "entries": entries + [entry]}
    _write_atomic(path, json.dumps(data, indent=1) + "\n")


def merge_progress(cfg: CoreV2Config, others: list[Path]) -> int:
    """Append to the run's progress file the entries of ``others`` (progress files of the same run written elsewhere,
    a device chunk's say) that it lacks, an entry being known by its step, run folder and time; returns how many."""
    path = progress_path(cfg.run_name)
    data, shape = _progress(cfg)
    entries = data.get("entries", [])
    known = {(e.get("step"), e.get("run_dir"), e.get("time_utc")) for e in entries}
    added = 0
    for other in others:
        theirs = json.loads(Path(other).read_text())
        if any(theirs.get(k) != v for k, v in shape.items()) or theirs.get("run_name") != cfg.run_name:
            raise cfgmod.ConfigError(f"{other} is not a progress file of {cfg.run_name} ({', '.join(shape)} differ)")
        for e in theirs.get("entries", []):
            key = (e.get("step"), e.get("run_dir"), e.get("time_utc"))
            if key not in known:
                known.add(key)
                entries.append(e)
                added += 1
    if added:
        data = {"run_name": cfg.run_name, **shape, **{k: v for k, v in data.items() if k not in shape},
                "entries": entries}
        _write_atomic(path, json.dumps(data, indent=1) + "\n")
    return added


LOG_COLUMNS = ["step", "stage", "loss", "bpp", "psnr", "identity", "quality_mean", "lr", "seconds"]


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------
class RunBusyError(RuntimeError):
    """Another process is training this run."""


def _lock_run(run_dir: Path):
    """An exclusive lock on ``run_dir/lock`` (released when the process ends), so two trainers never write one
    checkpoint; the file holds the owner's pid."""
    import fcntl

    fh = open(run_dir / "lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        raise RunBusyError(f"{run_dir} is being trained by another process (pid {fh.read().strip() or '?'})"
                           ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def _catch_sigterm(flag: list):
    """Make SIGTERM append to ``flag`` (the loop then checkpoints and returns) instead of killing the process
    mid-step; returns the previous handler, or None where signals cannot be handled (not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: flag.append(signum))


def _restore_sigterm(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def train(cfg: CoreV2Config, run_dir: Path, assets=None, max_minutes: float | None = None,
          until_step: int | None = None, device: str | None = None, pack: Path | None = None) -> int:
    """Train (or continue) the run up to the end of the ladder, ``until_step`` or ``max_minutes``; returns the step
    reached. Always leaves a checkpoint at the step it stops at. With ``pack`` (:mod:`.core_v2_pack`) the batches
    are the pack's aligned crops and the validation batch the pack's (an accelerator without the data sets)."""
    from tqdm import tqdm

    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.cloud.training.train import LandmarkPatchSampler

    torch.set_num_threads(cfg.threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":  # every batch has one shape: let cuDNN pick its fastest convolutions once
        torch.backends.cudnn.benchmark = True
    run_dir.mkdir(parents=True, exist_ok=True)
    _run_lock = _lock_run(run_dir)  # held until this function returns (or the process ends)
    ckpt = run_dir / "checkpoint.pt"
    milestone, _ = milestone_paths(cfg.run_name)
    step, wall, rng_state, stored_ema, origin = 0, 0.0, None, None, "the initial weights"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model = new_model(cfg)
        _resize_entropy_buffers(model, state["model"])
        model.load_state_dict(state["model"])
        model.to(dev)
        opt, aux_opt = _optimizers(model, cfg.stage_at(0).lr, cfg.aux_lr)
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, wall, rng_state = int(state["step"]), float(state.get("wall_seconds", 0.0)), state.get("rng")
        stored_ema, origin = state.get("ema"), f"the checkpoint's weights at step {step}"
        restore_auxiliary_gradients(model, state.get("aux_grads"))  # the first step clips as every other
        print(f"resumed from {ckpt} at step {step}", flush=True)
    elif milestone.is_file():
        model, record = load_milestone(milestone, cfg)
        model.to(dev)
        opt, aux_opt = _optimizers(model, cfg.stage_at(0).lr, cfg.aux_lr)
        step, wall = int(record["step"]), float(record.get("wall_seconds", 0.0))
        origin = f"the milestone's {record.get('weights', 'raw')} weights at step {step}"
        restore_auxiliary_gradients(model)
        print(f"no checkpoint in {run_dir}: starting from the committed milestone {milestone} at step {step} "
              "(fresh optimizer state)", flush=True)
    else:
        torch.manual_seed(cfg.seed)
        model = new_model(cfg).to(dev)
        opt, aux_opt = _optimizers(model, cfg.stage_at(0).lr, cfg.aux_lr)
        print(f"new run {cfg.run_name} in {run_dir}", flush=True)
    ema = None
    if cfg.ema_decay > 0:
        ema = WeightAverage(model, cfg.ema_decay)
        if stored_ema is not None:
            ema.load_state_dict(stored_ema)
            note = "" if float(stored_ema["decay"]) == cfg.ema_decay else f", stored with decay {stored_ema['decay']}"
            print(f"weight average: resumed (decay {cfg.ema_decay}, {ema.updates} steps averaged{note})", flush=True)
        else:
            print(f"weight average: none stored; starts from {origin} (decay {cfg.ema_decay})", flush=True)
    elif stored_ema is not None:
        print("weight average: ema_decay is 0, the stored average is dropped; raw weights from here", flush=True)
    stop_at = min(cfg.total_steps, until_step or cfg.total_steps)
    if step >= stop_at:
        print(f"{cfg.run_name}: already at step {step} (target {stop_at}); nothing to do", flush=True)
        return step
    (run_dir / "config.json").write_text(json.dumps(cfgmod.to_dict(cfg), indent=2) + "\n")
    _progress(cfg)  # fail now, not at the first checkpoint, if the progress file is another model's

    stage = cfg.stage_at(step)
    if pack is not None:
        from facelink.cloud.training.core_v2_pack import PackedCropSampler

        sampler = PackedCropSampler(pack, cfg, cfg.seed + step)
        frames = len(sampler.frames.images) if sampler.frames is not None else 0
        print(f"training on the pack {pack}: {len(sampler.images)} aligned crops, {frames} whole frames", flush=True)
    else:
        train_files, val_files = split_files(cfg, assets)
        sampler = LandmarkPatchSampler(train_files, cfg.patch, cfg.min_scale, cfg.seed + step,
                                       stage.face_crop_fraction, crop_template=CROP_TEMPLATES[cfg.crop_template])
    qrng = random.Random(f"{cfg.seed}:qualities:{step}")
    if rng_state is not None:
        sampler.rng.setstate(rng_state["sampler"])
        qrng.setstate(rng_state["qualities"])
        torch.set_rng_state(rng_state["torch"])
    elif step:
        torch.manual_seed(cfg.seed + step)
    identity = IdentityLoss(cfg.recognizer, dev)
    if cfg.fast_step:  # the same loss and data, cheaper on a CPU (facelink.cloud.training.core_v2_step)
        identity.recognizer = fast_recognizer(identity.recognizer)
        print(f"fast step: folded recognizer, allocator {'tuned' if tune_allocator() else 'as it was'}", flush=True)
    precision = transform_dtype(cfg.transform_precision, dev)
    precision_name = "bfloat16" if precision is not None else "float32"
    print(f"transforms in {precision_name} (transform_precision: {cfg.transform_precision})", flush=True)
    val_batch = sampler.validation if pack is not None else validation_batch(cfg, val_files)
    val_batch = (val_batch[0].to(dev), val_batch[1], val_batch[2])
    log, writer = open_log(run_dir / "log.csv", step, LOG_COLUMNS)

    def checkpoint(validation: dict | None) -> None:
        log.flush()
        tmp = run_dir / "checkpoint.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                    "aux_grads": auxiliary_gradients(model), "step": step, "wall_seconds": wall,
                    "config": cfgmod.to_dict(cfg), "validation": validation,
                    "rng": {"sampler": sampler.rng.getstate(), "qualities": qrng.getstate(),
                            "torch": torch.get_rng_state()},
                    **({"ema": ema.state_dict()} if ema is not None else {})}, tmp)
        tmp.replace(ckpt)  # atomic: a crash never leaves a half-written checkpoint

    def report(recent: list) -> dict:
        v = validate(ema.model if ema is not None else model, val_batch, identity)
        which = ({"weights": "ema", "ema_decay": ema.decay, "ema_updates": ema.updates} if ema is not None
                 else {"weights": "raw"})
        arr = np.array(recent) if recent else np.full((1, 3), np.nan)
        entry = {"step": step, "stage": cfg.stage_at(max(step - 1, 0)).name, "wall_seconds": round(wall, 1),
                 "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": str(dev),
                 "run_dir": str(run_dir), "data": "pack" if pack is not None else "data sets",
                 "transform_precision": precision_name,
                 "train_recent": {"loss": round(float(np.nanmean(arr[:, 0])), 4),
                                  "bpp": round(float(np.nanmean(arr[:, 1])), 4),
                                  "psnr": round(float(np.nanmean(arr[:, 2])), 3), "steps": len(recent)},
                 **which, "validation": v}
        append_progress(cfg, entry)
        print(f"step {step} ({entry['stage']}): " + "  ".join(
            f"q{q} {r['bpp']:.3f} bpp {r['psnr']:.2f} dB" for q, r in v.items()), flush=True)
        return v

    model.train()
    identity.train()
    started = time.time()
    last_ckpt = last_milestone = time.time()
    recent: list[tuple[float, float, float]] = []
    bar = tqdm(total=stop_at, initial=step, desc=cfg.run_name, unit="step", mininterval=30, file=sys.stdout)
    terminated: list[int] = []  # SIGTERM: checkpoint after the step in progress, then return
    previous = _catch_sigterm(terminated)
    try:
        while step < stop_at:
            t_step = time.time()
            stage = cfg.stage_at(step)
            sampler.face_crop_fraction = stage.face_crop_fraction
            sampler.frame_blur = stage.frame_blur()
            for g in opt.param_groups:
                g["lr"] = stage.lr
            x, mats, faces, sizes = sampler.batch_with_faces(cfg.batch_size)
            x = x.to(dev)
            q = sample_qualities(qrng, len(x), stage, cfg.continuous_share).to(dev)
            res = training_step(model, opt, aux_opt, identity, x, mats, faces, sizes, q, stage.alpha, precision,
                                sampler.batch_keys)
            if ema is not None:
                ema.update()
            loss, bpp, mse, ident = res["loss"], res["bpp"], res["mse"], res["identity"]
            step += 1
            wall += time.time() - t_step
            psnr = float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())
            recent = (recent + [(loss.item(), bpp.mean().item(), psnr)])[-200:]
            writer.writerow([step, stage.name, f"{loss.item():.5f}", f"{bpp.mean().item():.5f}", f"{psnr:.3f}",
                             f"{ident:.5f}", f"{q.mean().item():.3f}", stage.lr, f"{wall:.1f}"])
            bar.update(1)
            out_of_time = max_minutes is not None and time.time() - started >= max_minutes * 60
            stop = out_of_time or bool(terminated)
            if time.time() - last_ckpt >= cfg.checkpoint_minutes * 60 or step == stop_at or stop:
                checkpoint(report(recent))
                last_ckpt = time.time()
                if cfg.milestone_minutes and last_ckpt - last_milestone >= cfg.milestone_minutes * 60:
                    print(f"milestone at step {step}: {write_milestone(cfg, run_dir)}", flush=True)
                    last_milestone = last_ckpt
                if stop:
                    print(f"stopping at step {step}: " + ("SIGTERM" if terminated else
                                                          f"after {max_minutes} minutes"), flush=True)
                    break
    finally:
        _restore_sigterm(previous)
    bar.close()
    log.close()
    return step


def start_background(config: str, run_dir: Path, nice: int = 5) -> int:
    """Start ``facelink core-v2 train`` detached (nohup-like: its own session, output appended to
    ``RUN_DIR/train.out``), on one thread (OMP_NUM_THREADS=1) at ``nice``; returns its pid. Refuses when the run's
    lock is held."""
    import fcntl
    import subprocess

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            fh.seek(0)
            raise RunBusyError(f"{run_dir} is already being trained (pid {fh.read().strip() or '?'})") from None
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "facelink.cloud.training.core_v2", "train",
           "--config", str(config), "--run-dir", str(run_dir)]
    with open(run_dir / "train.out", "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    _nice_session(proc.pid, nice)
    return proc.pid


def _nice_session(pid: int, nice: int) -> bool:
    """Give the new session's scheduling group the niceness too. Under Linux's autogroup scheduling (on by default)
    each session is a group and groups share the CPUs equally whatever their processes' niceness, so a training
    started at nice 19 in its own session took as much CPU as the foreground work. Returns whether it was set."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:  # no autogroup (another kernel or OS), or not permitted
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Size measurement
# --------------------------------------------------------------------------------------------------------------
def measure(sizes: list[tuple[int, ...]], steps: int = 20, batch: int = 8, patch: int = 128,
            threads: int = 1) -> list[dict]:
    """Wall and CPU seconds per training step (CPU time: what the step costs whatever else shares the machine;
    the full loss: rate, MSE and the identity term through MobileFaceNet) of each
    (N, M) on random data at batch ``batch``, a 112×112 crop padded to ``patch``, ``threads`` CPU threads; the
    first two steps are not timed."""
    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.shared.alignment import MOBILEFACENET_96x112, similarity_transform

    torch.set_num_threads(threads)
    identity = IdentityLoss("mobilefacenet")
    mat = similarity_transform(ARCFACE_112.points, MOBILEFACENET_96x112.points)
    results = []
    for size in sizes:
        n, m, na = (*size, size[0])[:3]
        torch.manual_seed(0)
        model = VariableRateFaceCodec(n, m, N_analysis=na).train()
        opt, _ = _optimizers(model, 1e-4, 1e-3)
        x = torch.rand(batch, 3, patch, patch)
        crop = np.array([[ARCFACE_112.height, ARCFACE_112.width]] * batch)
        times, cpu = [], []
        for _ in range(steps + 2):
            t0, c0 = time.perf_counter(), time.process_time()
            q = torch.randint(0, model.qualities, (batch,)).float()
            lam = lmbda(q)
            out = forward_vr(model, x, q, crop)
            bpp, mse = per_sample_terms(out, x, crop)
            d, _ = identity(x, out["x_hat"], np.stack([mat] * batch), lam.numpy())
            loss = (bpp + lam * 255**2 * mse).mean() + 300 * d
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        s, c = float(np.mean(times[2:])), float(np.mean(cpu[2:]))
        params = sum(p.numel() for p in model.parameters())
        results.append({"N": n, "M": m, "N_analysis": na, "params": params, "fp16_mb": round(2 * params / 1e6, 2),
                        "seconds_per_step": round(s, 3), "cpu_seconds_per_step": round(c, 3),
                        "steps_per_day": int(86400 / s), "steps_per_day_cpu": int(86400 / c)})
        print(json.dumps(results[-1]), flush=True)
    return results


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def _load_config(path: str, overrides: list[str] = ()) -> CoreV2Config:
    """The run configuration at ``path`` with ``--set KEY=VALUE`` overrides (a device chunk's batch size, say)."""
    cfg = cfgmod.load(CoreV2Config, path)
    if not overrides:
        return cfg
    return cfgmod.from_mapping(CoreV2Config, cfgmod.apply_overrides(cfgmod.to_dict(cfg), overrides),
                               f"{path} with --set")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink core-v2", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train or continue a run on its stage ladder (resumes by itself)")
    t.add_argument("--config", required=True, help="YAML configuration with a stages: ladder (unknown keys are errors)")
    t.add_argument("--run-dir", type=Path, help=f"checkpoint folder (default ${RUN_DIR_ENV} or "
                                                "~/.cache/facelink/RUN_NAME)")
    t.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    t.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    t.add_argument("--until-step", type=int, help="stop (with a checkpoint) at this step")
    t.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    t.add_argument("--pack", type=Path, help="train on this pack of aligned crops (facelink core-v2 pack) instead "
                                             "of the data sets: a device machine's chunk")
    _SET_HELP = ("override configuration keys, values as JSON (e.g. batch_size=32 checkpoint_minutes=3 on an "
                 "accelerator); the milestone records the configuration it was exported with")
    t.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    pk = sub.add_parser("pack", help="write the run's aligned training crops, whole frames and validation batch "
                                     "into one file that travels to an accelerator")
    pk.add_argument("--config", required=True, help="the run's YAML configuration")
    pk.add_argument("--out", type=Path, required=True, help="the pack (.npz), e.g. runs/core-v2-pack.npz")
    pk.add_argument("--frames-mb", type=float, default=None,
                    help="megabytes of whole training frames beside the crops (default 14; 0: crops only)")
    pk.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    dk = sub.add_parser("device-kit", help="what a chunk on an accelerator needs beside the working tree: the pack "
                                           "and the pure-Python packages a stock PyTorch image lacks")
    dk.add_argument("--config", required=True, help="the run's YAML configuration")
    dk.add_argument("--out", type=Path, default=Path("runs/device-kit"), help="kit folder (default %(default)s)")
    dk.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    mp = sub.add_parser("merge-progress", help="append the entries of progress files written elsewhere (a device "
                                               "chunk's) that the run's progress file lacks")
    mp.add_argument("--config", required=True, help="the run's YAML configuration")
    mp.add_argument("files", nargs="+", type=Path, help="progress.json files of the same run")
    st = sub.add_parser("start", help="start or resume train in the background (one thread, nice 5, output "
                                      "appended to RUN_DIR/train.out)")
    st.add_argument("--config", required=True, help="the run's YAML configuration")
    st.add_argument("--run-dir", type=Path, help="checkpoint folder (default as for train)")
    st.add_argument("--nice", type=int, default=5, help="scheduling niceness (default %(default)s)")
    ms = sub.add_parser("milestone", help="export the run's checkpoint as the committed float16 milestone")
    ms.add_argument("--config", required=True, help="the run's YAML configuration")
    ms.add_argument("--run-dir", type=Path, help="checkpoint folder (default as for train)")
    ms.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    ex = sub.add_parser("export", help="package the run's weights as a registry model (edge ONNX with a gain input, "
                                       "tables, decoder)")
    ex.add_argument("--config", required=True, help="the run's YAML configuration")
    ex.add_argument("--run-dir", type=Path, help="checkpoint folder (default as for train)")
    ex.add_argument("--source", choices=["checkpoint", "milestone"], default="checkpoint",
                    help="the run's latest checkpoint, or the committed milestone (default %(default)s)")
    ex.add_argument("--name", required=True, help="model name in the registry, e.g. face-v2")
    ex.add_argument("--out-root", type=Path, help="registry folder (default: the package's; runs/models for "
                                                  "models that are not committed, found with FACELINK_MODELS_PATH)")
    ex.add_argument("--weights", choices=["float16", "float32"], default="float16",
                    help="stored precision of the encoder and decoder weights (default %(default)s)")
    ex.add_argument("--raw-weights", action="store_true",
                    help="export the checkpoint's raw training weights instead of their moving average")
    ex.add_argument("--default-quality", type=float, metavar="Q",
                    help="the quality an edge codes at without --quality or --max-bytes (default: the middle of "
                         "the model's range)")
    ex.add_argument("--purpose", help="what the model is for, in the model table (a release's one line)")
    sa = sub.add_parser("status", help="where the run stands: running or not, step, stage, last validation")
    sa.add_argument("--config", required=True, help="the run's YAML configuration")
    sa.add_argument("--run-dir", type=Path, help="checkpoint folder (default as for train)")
    me = sub.add_parser("measure", help="seconds per training step of candidate sizes on one thread")
    me.add_argument("--sizes", nargs="+", default=["128/192", "96/160", "64/128"], metavar="N/M[/NA]",
                    help="candidate sizes (default %(default)s)")
    me.add_argument("--steps", type=int, default=20, help="timed steps per size (default %(default)s)")
    me.add_argument("--threads", type=int, default=1, help="CPU threads (default %(default)s)")
    me.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    try:
        if args.action == "measure":
            try:
                sizes = [tuple(int(v) for v in s.split("/")) for s in args.sizes]
                if any(len(t) not in (2, 3) for t in sizes):
                    raise ValueError(args.sizes)
            except ValueError:
                raise cfgmod.ConfigError("sizes are N/M or N/M/N_ANALYSIS, such as 128/192 or 128/192/64, got "
                                         + " ".join(args.sizes)) from None
            res = measure(sizes, args.steps, threads=args.threads)
            if args.out:
                command = "facelink core-v2 " + " ".join(sys.argv[1:] if argv is None else argv)
                _write_atomic(args.out, json.dumps({"command": command, "threads": args.threads, "results": res},
                                                   indent=2) + "\n")
            return 0
        cfg = _load_config(args.config, getattr(args, "set", []))
        run_dir = getattr(args, "run_dir", None) or default_run_dir(cfg.run_name)
        if args.action == "start":
            try:
                pid = start_background(args.config, run_dir, args.nice)
            except RunBusyError as e:  # starting what already runs is not an error: the run goes on
                print(f"{cfg.run_name}: {e}")
                return 0
            print(f"{cfg.run_name}: training in the background, pid {pid}; log {run_dir / 'train.out'}")
            return 0
        if args.action == "milestone":
            path = write_milestone(cfg, run_dir)
            print(f"wrote {path} and {path.with_suffix('.json')}")
            return 0
        if args.action == "status":
            print(json.dumps(run_status(cfg, run_dir), indent=2))
            return 0
        if args.action == "export":
            out = export_model(cfg, run_dir, args.source, args.name, args.out_root, args.weights, args.raw_weights,
                               args.default_quality, args.purpose)
            print(json.dumps(json.loads((out / "manifest.json").read_text()), indent=2))
            return 0
        if args.action == "pack":
            from facelink.cloud.training.core_v2_pack import FRAMES_MB, write_pack

            frames_mb = FRAMES_MB if args.frames_mb is None else args.frames_mb
            print(json.dumps(write_pack(cfg, args.out, args.assets, frames_mb=frames_mb), indent=2))
            return 0
        if args.action == "merge-progress":
            added = merge_progress(cfg, args.files)
            print(f"{cfg.run_name}: {added} entries appended to {progress_path(cfg.run_name)}")
            return 0
        if args.action == "device-kit":
            from facelink.cloud.training.core_v2_device import write_kit

            print(json.dumps(write_kit(cfg, args.out, args.assets), indent=2))
            return 0
        step = train(cfg, run_dir, args.assets, args.max_minutes, args.until_step, args.device, args.pack)
        print(f"{cfg.run_name}: at step {step} of {cfg.total_steps}")
    except (OSError, cfgmod.ConfigError, ValueError, RunBusyError) as e:
        print(f"facelink core-v2: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
