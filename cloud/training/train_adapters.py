"""Training of face-domain adapters and their gate on a frozen rate point (``facelink train-adapters``).

The rate point's encoder, entropy model and base ``g_s`` are frozen; only the adapters and the gate
(:mod:`facelink.cloud.serving.adapters`) learn. Loss per batch:

    λ · (255² · MSE + α · D_identity) + γ · CE(gate logits, domain)

with D_identity the IPR term of :mod:`facelink.cloud.training.identity_loss` (MobileFaceNet, the same definition as
the IPR rate points) and λ, α the rate point's own unless the configuration sets them (α 0: the pixel-loss
ablation). There is no rate term: the bitstream does not change.

Data: training images only (LFW outside View 2, CelebA train identities: :mod:`facelink.cloud.training.datasets`),
each cropped exactly as the edge crops a face (YuNet landmarks, the ``arcface-112`` template), turned into every
trained domain (:mod:`facelink.cloud.training.domains`; the held-out domain never appears) and coded by the rate
point's own edge analysis (ONNX and the shared entropy model, :class:`EdgeLatents`): the decoder learns from the
very ŷ it decodes in service. These latents are computed once per (rate point, images, domains) and cached under
``runs/cache``.

``facelink train-adapters run --config C --out RUN`` trains (``--resume`` continues from RUN/checkpoint.pt);
``facelink train-adapters install --run RUN --ablation RUN0`` puts the result into the rate point's bundle;
``facelink train-adapters gate --config C --set ...`` trains a gate alone on the cached latents and prints its
held-out accuracy (how its accuracy depends on the images, its width and its epochs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facelink.cloud.serving import adapters as adapters_mod
from facelink.cloud.serving import variable_rate
from facelink.cloud.serving.codec_model import build, load_synthesis
from facelink.cloud.training import domains as domains_mod
from facelink.cloud.training.train import open_log
from facelink.shared import config as cfgmod
from facelink.shared import registry
from facelink.shared.paths import runs_dir

LOG_COLUMNS = ["step", "loss", "mse", "psnr", "identity", "ce", "gate_accuracy", "lr", "seconds", "cpu_seconds"]
LATENT_CACHE_VERSION = "adapter-latents-v1"
IDENTITY_TARGETS = ("domain", "clean")  # AdapterTrainConfig.identity_target


@dataclass
class AdapterTrainConfig:
    model: str = "face-ipr-q2"  # the registry rate point whose decoder gains the adapters
    domains: list[str] = field(default_factory=lambda: list(domains_mod.TRAINED))  # source first; adapter order
    sites: list[int] = field(default_factory=lambda: [3, 5])  # g_s indices after which adapters sit
    width: int = 8  # adapter bottleneck channels
    kernel: int = 1  # adapter up-convolution kernel
    gate_channels: int = 16
    gate_kernel: int = 3
    gate_pool: str = "mean"  # "mean" or "meanstd" (the gate also pools its features' standard deviation)
    gate_norm: bool = False  # normalise ŷ per channel (the training latents' statistics) before the gate
    gate_stats: bool = False  # the gate's linear layer also reads ŷ's per-channel standard deviation and mean |ŷ|
    lmbda: float | None = None  # weight of the distortion; None: the rate point's training λ
    alpha: float | None = None  # weight of D_identity; None: the rate point's training α (0: pixel-loss ablation)
    gamma: float = 0.1  # weight of the gate's cross-entropy on the domain label
    recognizer: str = "mobilefacenet"
    steps: int = 1500
    batch_size: int = 8
    lr: float = 1e-3
    lr_drop_at: float = 0.85  # fraction of steps after which lr is divided by 10
    teacher_forcing: float = 0.2  # share of the first steps that blend by the true domain instead of the gate
    gate_epochs: int = 0  # epochs of training the gate alone on the cached ŷ (CE only) before the adapters; 0: none
    gate_lr: float = 3e-3  # the gate pre-training's peak learning rate (one-cycle schedule)
    gate_batch_size: int = 64
    freeze_gate: bool = False  # the gate keeps its pre-trained weights while the adapters train (no CE term)
    holdout: float = 0.0  # share of the images kept out of all training, to measure the gate and the decoder on
    images: int = 1000  # training images drawn (seeded) from the data sets; each appears in every domain
    datasets: list[str] = field(default_factory=lambda: ["lfw-train", "celeba-train"])
    seed: int = 0
    checkpoint_every: int = 100
    threads: int = 1
    mode: str = "adapters"  # "adapters": train adapters (+ gate); "whole": fine-tune the whole g_s (the upper bound)
    train_domains: list[str] = field(default_factory=list)  # train on these domains' crops only; empty: all
    eval_every: int = 0  # every this many steps, held-out PSNR per domain into eval.csv (needs holdout > 0); 0: never
    eval_images: int = 100  # held-out images that eval.csv measures on (each in every domain)
    # an adapters file (same rate point and configuration) to start from, its gate included (no gate pre-training):
    # e.g. a pixel-loss run continued with the identity term; its CPU time counts in cpu_seconds_total
    init_from: str | None = None
    # what the identity term compares the decoded crop's embedding with: "clean", the same image's source crop's
    # (the clean enrolment photo a gallery holds in deployment); "domain", the coded (domain-transformed) crop's,
    # which pulled nir faces toward their grey, noisy crop and cost q2 6.2 points on nir (research record, adapters)
    identity_target: str = "clean"
    # A variable-rate model (core v2): the qualities its training images are coded at, one drawn per image (seeded;
    # every domain of an image at the same quality, so the clean identity target is coded alike); null: every integer
    # quality of the model. One set of adapters and one gate then serve every quality: they read the latent after the
    # inverse gain, as the cloud's synthesis does. A rate point has one quality: it must stay null.
    qualities: list[float] | None = None

    def __post_init__(self):
        if not self.domains or self.domains[0] != "source":
            raise cfgmod.ConfigError(f"domains must start with source (no forgetting), got {self.domains}")
        for d in self.domains:
            if d not in domains_mod.DOMAINS:
                raise cfgmod.ConfigError(f"unknown domain {d!r}; known: {', '.join(domains_mod.DOMAINS)}")
        if domains_mod.UNSEEN in self.domains:
            raise cfgmod.ConfigError(f"{domains_mod.UNSEEN} is the held-out domain: no adapter or gate trains on it")
        for name in ("lmbda", "alpha"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise cfgmod.ConfigError(f"{name} must be a finite number ≥ 0, got {v}")
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise cfgmod.ConfigError(f"gamma must be a finite number ≥ 0, got {self.gamma}")
        if not 0.0 <= self.teacher_forcing <= 1.0 or not 0.0 <= self.lr_drop_at <= 1.0:
            raise cfgmod.ConfigError("teacher_forcing and lr_drop_at must lie in [0, 1]")
        if self.steps < 1 or self.batch_size < 1 or self.images < 1 or self.checkpoint_every < 1:
            raise cfgmod.ConfigError("steps, batch_size, images and checkpoint_every must be ≥ 1")
        if self.gate_epochs < 0 or self.gate_batch_size < 1 or not (self.gate_lr > 0 and math.isfinite(self.gate_lr)):
            raise cfgmod.ConfigError("gate_epochs must be ≥ 0, gate_batch_size ≥ 1 and gate_lr a finite number > 0")
        if not 0.0 <= self.holdout < 1.0:
            raise cfgmod.ConfigError(f"holdout must lie in [0, 1), got {self.holdout}")
        if self.mode not in ("adapters", "whole"):
            raise cfgmod.ConfigError(f"mode must be adapters or whole, got {self.mode!r}")
        for d in self.train_domains:
            if d not in self.domains:
                raise cfgmod.ConfigError(f"train_domains: {d!r} is none of the domains {self.domains}")
        if self.eval_every < 0 or self.eval_images < 1:
            raise cfgmod.ConfigError("eval_every must be ≥ 0 and eval_images ≥ 1")
        if self.eval_every and not self.holdout:
            raise cfgmod.ConfigError("eval_every measures on held-out images: set holdout > 0")
        if self.init_from is not None and self.mode == "whole":
            raise cfgmod.ConfigError("init_from starts adapters from a file: not with mode whole")
        if self.identity_target not in IDENTITY_TARGETS:
            raise cfgmod.ConfigError(f"identity_target must be one of {', '.join(IDENTITY_TARGETS)}, "
                                     f"got {self.identity_target!r}")
        if self.qualities is not None and (not self.qualities or any(
                not (isinstance(q, (int, float)) and math.isfinite(q) and q >= 0) for q in self.qualities)):
            raise cfgmod.ConfigError(f"qualities must be a non-empty list of finite numbers ≥ 0, got {self.qualities}")
        if self.freeze_gate and self.gate_epochs == 0:
            raise cfgmod.ConfigError("freeze_gate keeps a pre-trained gate: set gate_epochs > 0")
        try:
            self.adapter_config()
        except ValueError as e:
            raise cfgmod.ConfigError(str(e)) from e

    def adapter_config(self) -> adapters_mod.AdapterConfig:
        return adapters_mod.AdapterConfig(
            tuple(self.domains), tuple(self.sites), self.width, self.kernel, self.gate_channels, self.gate_kernel,
            self.gate_pool, self.gate_norm, self.gate_stats)


def loss_weights(cfg: AdapterTrainConfig, bundle: registry.ModelBundle) -> tuple[float, float]:
    """(λ, α): the configuration's, else those the rate point was trained with (its manifest). A variable-rate model:
    λ of its default quality (one scale for every sample: the adapters do not change the rate, and Adam makes the
    scale itself irrelevant; each sample's 255²·MSE and identity term weigh alike whatever its quality) and the α of
    its last training stage."""
    training = bundle.manifest.get("training", {})
    if variable_rate.is_variable_rate(bundle.manifest):
        stages = (training.get("config") or {}).get("stages") or [{}]
        own_lmbda = variable_rate.lmbda(registry.quality_range(bundle.manifest).default)
        own_alpha = stages[-1].get("alpha")
    else:
        own_lmbda, own_alpha = training.get("lambda"), training.get("alpha")
    lmbda = cfg.lmbda if cfg.lmbda is not None else own_lmbda
    alpha = cfg.alpha if cfg.alpha is not None else own_alpha
    if lmbda is None or alpha is None:
        raise cfgmod.ConfigError(f"{bundle.name}'s manifest does not say its training λ and α: set lmbda and alpha")
    return float(lmbda), float(alpha)


# ----------------------------------------------------------------------------------------------------------------
# Data: edge crops in every domain, coded as the rate point's edge codes them, cached once
# ----------------------------------------------------------------------------------------------------------------
def _image_key(path: Path) -> str:
    """A file's name relative to its data set (parent folder / file): what the domain draws are seeded with."""
    return f"{path.parent.name}/{path.name}"


def latent_cache_path(bundle: registry.ModelBundle, files: list[Path], domains: list[str],
                      qualities: list[float] | None = None) -> Path:
    h = hashlib.sha256(
        f"{LATENT_CACHE_VERSION}:{bundle.model_id}:{domains_mod.DOMAIN_SEED}:{','.join(domains)}\n".encode()
    )
    if qualities is not None:  # a variable-rate model's quality draw (a rate point's key stays as it was)
        h.update(f"qualities:{','.join(f'{q:g}' for q in qualities)}\n".encode())
    for f in files:
        h.update(f"{_image_key(f)}\n".encode())
    return runs_dir() / "cache" / f"adapter_latents_{bundle.name}_{h.hexdigest()[:16]}.npz"


def training_crops(cfg: AdapterTrainConfig, assets=None) -> tuple[list[Path], list[np.ndarray]]:
    """The seeded choice of training images that have a face, as the edge's aligned 112×112 crops."""
    import cv2

    from facelink.cloud.training.train import face_landmarks, training_files
    from facelink.shared.alignment import ARCFACE_112, align

    files = training_files(cfg.datasets, assets)
    files = sorted(random.Random(cfg.seed).sample(files, min(cfg.images, len(files))))
    images = [cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files]
    landmarks = face_landmarks(files, images)
    keep = [i for i in range(len(files)) if not np.isnan(landmarks[i]).any()]
    return [files[i] for i in keep], [align(images[i], landmarks[i], ARCFACE_112) for i in keep]


class EdgeLatents:
    """The ŷ the cloud decodes from the container the edge sends for an image: the rate point's ONNX analysis run
    as the edge runs it (edge-replication padding to multiples of 64, one thread), its hyper-latent symbols, the
    integer hyper-synthesis's means, the coded positions rounded around them and the means elsewhere, as
    :func:`facelink.shared.codec.encode_latents` codes; the lossless rANS coder in between is skipped.
    tests/test_adapters_training.py checks the equality with the edge's own container."""

    def __init__(self, bundle: registry.ModelBundle, version: int | None = None):
        import onnxruntime as ort

        from facelink.shared import bitstream

        self.variable_rate = bundle.tables.variable_rate

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(bundle.encoder_onnx), opts, providers=["CPUExecutionProvider"])
        self.tables = bundle.tables
        default = bitstream.VARIABLE_RATE_VERSION if self.variable_rate else bitstream.FORMAT_VERSION
        self.version = default if version is None else version

    def __call__(self, rgb: np.ndarray, quality: float | None = None) -> np.ndarray:
        """ŷ as the cloud entropy-decodes it; a variable-rate model's at ``quality`` (the gained latent, before the
        inverse gain)."""
        from facelink.shared import bitstream, codec

        if self.variable_rate == (quality is None):
            raise ValueError("a variable-rate model codes at a quality, a rate point at its one")
        h, w = rgb.shape[:2]
        pad_b, pad_r = bitstream.padding_for(h, w)
        padded = np.pad(rgb, ((0, pad_b), (0, pad_r), (0, 0)), mode="edge") if (pad_b or pad_r) else rgb
        x = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        feed = {"image": x}
        if self.variable_rate:
            feed["gain"] = self.tables.gain(bitstream.quantize_quality(quality))[None]
        y, z = (a[0] for a in self.session.run(["y", "z"], feed))
        idx, means = self.tables.entropy_parameters(codec.quantize_z(self.tables, z))
        ch, cw = bitstream.coded_latent_shape(h, w, self.version)
        y_sym = np.zeros(means.shape, dtype=np.int64)
        y_sym[:, :ch, :cw] = np.round(y[:, :ch, :cw].astype(np.float32) - means[:, :ch, :cw]).astype(np.int64)
        return (y_sym.astype(np.float32) + means).astype(np.float32)


def training_qualities(cfg: AdapterTrainConfig, bundle: registry.ModelBundle) -> list[float] | None:
    """The qualities a variable-rate model's training images are coded at (on the container's grid); None for a
    rate point (where ``qualities`` must not be set)."""
    from facelink.shared import bitstream

    if not variable_rate.is_variable_rate(bundle.manifest):
        if cfg.qualities is not None:
            raise cfgmod.ConfigError(f"{bundle.name} is a rate point with one quality: qualities must stay null")
        return None
    k = registry.quality_range(bundle.manifest)
    qs = cfg.qualities if cfg.qualities is not None else list(range(k.top + 1))
    for q in qs:
        if not 0 <= q <= k.top:
            raise cfgmod.ConfigError(f"quality {q} outside {bundle.name}'s range [0, {k.top}]")
    return [bitstream.quantize_quality(q) for q in qs]


def vr_model(bundle: registry.ModelBundle) -> variable_rate.VariableRateFaceCodec | None:
    """A variable-rate model's synthesis side (g_s and the inverse gains), frozen; None for a rate point."""
    if not variable_rate.is_variable_rate(bundle.manifest):
        return None
    model = variable_rate.load_synthesis(variable_rate.from_manifest(bundle.manifest), bundle.weights).eval()
    model.requires_grad_(False)
    return model


def coded_latents(cfg: AdapterTrainConfig, bundle: registry.ModelBundle, assets=None) -> dict[str, np.ndarray]:
    """``x`` (K×112×112×3 uint8, the domain crops), ``y_hat`` (K×M×8×8 float32, what the cloud's synthesis takes:
    for a variable-rate model after the inverse gain of the crop's quality), ``domain`` (K, index into cfg.domains)
    and, for a variable-rate model, ``quality`` (K); K = images × domains."""
    from tqdm import tqdm

    qualities = training_qualities(cfg, bundle)
    files, crops = training_crops(cfg, assets)
    path = latent_cache_path(bundle, files, cfg.domains, qualities)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    latent = EdgeLatents(bundle)
    model = vr_model(bundle)
    draw = random.Random(f"{cfg.seed}:qualities")
    xs, ys, ds, qs = [], [], [], []
    for f, crop in tqdm(list(zip(files, crops)), desc=f"coding training crops ({bundle.name})", unit="img"):
        q = None if qualities is None else draw.choice(qualities)
        for d, name in enumerate(cfg.domains):
            x = domains_mod.get_domain(name).apply(crop, _image_key(f))
            xs.append(x)
            y = latent(x, q)
            if model is not None:
                y = variable_rate.apply_inverse_gain(model, torch.from_numpy(y)[None], q)[0].numpy()
            ys.append(y)
            ds.append(d)
            qs.append(q)
    out = {"x": np.stack(xs), "y_hat": np.stack(ys).astype(np.float32), "domain": np.array(ds, np.int64)}
    if qualities is not None:
        out["quality"] = np.array(qs, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def base_synthesis(bundle: registry.ModelBundle) -> torch.nn.Sequential:
    m = bundle.manifest
    vr = vr_model(bundle)
    g_s = vr.g_s if vr is not None else load_synthesis(build(m["architecture"], m["N"], m["M"]), bundle.weights).g_s
    for p in g_s.parameters():
        p.requires_grad_(False)
    return g_s.eval()


def holdout_split(n_crops: int, domains: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) crop indices: whole images held out (every domain of an image on the same side), a
    seeded share ``holdout`` of them. The cache holds each image's domains consecutively."""
    images = n_crops // domains
    held = np.zeros(images, bool)
    held[np.random.default_rng(seed).permutation(images)[: round(holdout * images)]] = True
    per_crop = np.repeat(held, domains)
    return np.flatnonzero(~per_crop), np.flatnonzero(per_crop)


def _confusion(logits: torch.Tensor, d: torch.Tensor, domains: int) -> list[list[int]]:
    m = torch.zeros(domains, domains, dtype=torch.long)
    m.index_put_((d, logits.argmax(1)), torch.ones(len(d), dtype=torch.long), accumulate=True)
    return m.tolist()


def identity_target_indices(idx: torch.Tensor, domains: int, target: str) -> torch.Tensor:
    """The crops whose embedding the identity term aims at for the training crops ``idx``: themselves
    (``domain``) or their image's source crop (``clean``; the cache holds each image's domains consecutively,
    source first)."""
    if target == "domain":
        return idx
    if target == "clean":
        return torch.div(idx, domains, rounding_mode="floor") * domains
    raise ValueError(f"identity_target must be one of {', '.join(IDENTITY_TARGETS)}, got {target!r}")


def _batched(fn, *tensors, size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(*(t[i : i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)])


def pretrain_gate(gate: torch.nn.Module, y: torch.Tensor, d: torch.Tensor, cfg: AdapterTrainConfig,
                  held: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Train the gate alone on cached latents (cross-entropy on the domain label; AdamW, one-cycle schedule,
    ``cfg.gate_epochs`` passes over ``y``); returns its accuracy on the training crops and, given ``held`` (ŷ,
    domain), on the held-out ones with the confusion matrix (rows: true domain, columns: the gate's argmax)."""
    frozen = [p for p in gate.parameters() if not p.requires_grad]  # a gate frozen for the adapters' training
    for p in frozen:
        p.requires_grad_(True)
    gate.set_normalisation(y)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    batches = math.ceil(len(d) / cfg.gate_batch_size)
    opt = torch.optim.AdamW(gate.parameters(), lr=cfg.gate_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.gate_lr, total_steps=cfg.gate_epochs * batches)
    c0 = time.process_time()
    gate.train()
    for epoch in range(cfg.gate_epochs):
        order = torch.randperm(len(d), generator=gen)
        total = 0.0
        for i in range(0, len(d), cfg.gate_batch_size):
            b = order[i : i + cfg.gate_batch_size]
            loss = F.cross_entropy(gate(y[b]), d[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.gate_epochs:
            print(f"gate epoch {epoch + 1}/{cfg.gate_epochs} ce {total / len(d):.4f}", flush=True)
    gate.eval()
    for p in frozen:
        p.requires_grad_(False)
    result = {"epochs": cfg.gate_epochs, "train_crops": len(d),
              "train_accuracy": float((_batched(gate, y).argmax(1) == d).float().mean()),
              "cpu_seconds": round(time.process_time() - c0, 1)}
    if held is not None and len(held[1]):
        logits = _batched(gate, held[0])
        result.update(holdout_crops=len(held[1]), holdout_accuracy=float((logits.argmax(1) == held[1]).float().mean()),
                      holdout_confusion=_confusion(logits, held[1], logits.shape[1]))
    return result


def domain_psnr(fn, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, names) -> dict[str, float]:
    """Mean PSNR per domain of the decoder ``fn`` (ŷ → image) against the coded crops ``x`` (uint8, N×3×H×W)."""
    h, w = x.shape[2:]
    mse = _batched(lambda xx, yy: ((fn(yy)[:, :, :h, :w].clamp(0, 1) - xx.float() / 255.0) ** 2).mean(dim=(1, 2, 3)),
                   x, y)
    p = -10 * torch.log10(mse.clamp_min(1e-10))
    return {n: float(p[d == i].mean()) for i, n in enumerate(names) if bool((d == i).any())}


def evaluate_holdout(module: adapters_mod.AdaptedSynthesis, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor
                     ) -> dict:
    """On held-out crops: the gate's accuracy and confusion, and per domain the mean PSNR of the base decoder and of
    the adapters with the gate against the coded crop."""
    h, w = x.shape[2:]
    module.eval()
    logits = _batched(module.gate, y)

    def psnr(fn):
        mse = _batched(lambda xx, yy: ((fn(yy)[:, :, :h, :w] - xx.float() / 255.0) ** 2).mean(dim=(1, 2, 3)), x, y)
        return -10 * torch.log10(mse.clamp_min(1e-10))

    base, adapted = psnr(module.g_s), psnr(lambda yy: module(yy)[0])
    names = module.domains
    return {"crops": len(d), "gate_accuracy": float((logits.argmax(1) == d).float().mean()),
            "gate_confusion": _confusion(logits, d, len(names)),
            "psnr_base": {n: float(base[d == i].mean()) for i, n in enumerate(names)},
            "psnr_adapters": {n: float(adapted[d == i].mean()) for i, n in enumerate(names)}}


def gate_only(cfg: AdapterTrainConfig, assets=None) -> dict:
    """Pre-train a fresh gate alone as :func:`train` would (same cache, split and schedule) and measure it on the
    held-out images: how the gate's accuracy depends on the data, its width and its epochs, in seconds to minutes."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    bundle = registry.load(cfg.model)
    data = coded_latents(cfg, bundle, assets)
    y, d = torch.from_numpy(data["y_hat"]), torch.from_numpy(data["domain"])
    tr, held = (torch.from_numpy(i) for i in holdout_split(len(d), len(cfg.domains), cfg.holdout, cfg.seed))
    gate = adapters_mod.AdaptedSynthesis(base_synthesis(bundle), cfg.adapter_config(), bundle.manifest["M"]).gate
    result = pretrain_gate(gate, y[tr], d[tr], cfg, (y[held], d[held]))
    return {"model": bundle.name, "images": len(d) // len(cfg.domains), "gate_channels": cfg.gate_channels,
            "gate_kernel": cfg.gate_kernel, "gate_pool": cfg.gate_pool, "gate_norm": cfg.gate_norm,
            "gate_stats": cfg.gate_stats, "parameters": sum(p.numel() for p in gate.parameters()), **result}


def train(cfg: AdapterTrainConfig, out: Path, resume: bool = False, assets=None) -> Path:
    """Train adapters and gate into ``out`` (checkpoint.pt, log.csv, adapters.safetensors); returns the last. With
    ``mode: whole`` the whole g_s is fine-tuned instead (no adapters, no gate) into synthesis.safetensors: the costly
    upper bound that adapters are measured against."""
    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.shared.alignment import ARCFACE_112, similarity_transform

    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the adapters' and gate's initial weights
    bundle = registry.load(cfg.model)
    lmbda, alpha = loss_weights(cfg, bundle)
    module = adapters_mod.AdaptedSynthesis(base_synthesis(bundle), cfg.adapter_config(), bundle.manifest["M"])
    whole = cfg.mode == "whole"
    if whole:  # the g_s itself learns; the (zero-initialised) adapters and the gate stay unused
        module.requires_grad_(False)
        module.g_s.requires_grad_(True)
        params = list(module.g_s.parameters())
    else:
        if cfg.freeze_gate:
            module.gate.requires_grad_(False)
        params = [p for n, p in module.named_parameters() if not n.startswith("g_s.") and p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    step, cpu_before = 0, 0.0
    init_info = None
    if cfg.init_from:
        init_cfg, init_info = adapters_mod.read_config(cfg.init_from)
        if init_cfg != cfg.adapter_config() or init_info.get("model_id") != bundle.model_id:
            raise cfgmod.ConfigError(f"init_from {cfg.init_from}: made for another rate point or configuration")
        module.load_state_dict(adapters_mod.load(cfg.init_from, module.g_s, bundle.manifest["M"]).state_dict())
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["config"] != cfgmod.to_dict(cfg):
            raise cfgmod.ConfigError(f"{ckpt} was made with another configuration; resume with the same one")
        module.load_state_dict(state["module"], strict=False)
        if whole:
            module.g_s.load_state_dict(state["g_s"])
        opt.load_state_dict(state["opt"])
        step, cpu_before = state["step"], state["cpu_seconds"]
        print(f"resumed from {ckpt} at step {step}")
    (out / "config.json").write_text(json.dumps(cfgmod.to_dict(cfg), indent=2))
    data = coded_latents(cfg, bundle, assets)
    x_all = torch.from_numpy(data["x"]).permute(0, 3, 1, 2)  # uint8, K×3×112×112
    y_all = torch.from_numpy(data["y_hat"])
    d_all = torch.from_numpy(data["domain"])
    train_idx, held_idx = (torch.from_numpy(i) for i in holdout_split(len(d_all), len(cfg.domains), cfg.holdout,
                                                                       cfg.seed))
    if cfg.train_domains:
        keep = torch.tensor([cfg.domains.index(n) for n in cfg.train_domains])
        train_idx = train_idx[torch.isin(d_all[train_idx], keep)]
    if step == 0 and not whole and init_info is None:
        module.gate.set_normalisation(y_all[train_idx])  # a no-op unless gate_norm
    init_gate = Path(cfg.init_from).parent / "gate.json" if cfg.init_from else None
    if step == 0 and init_gate is not None and init_gate.exists():  # the gate's pre-training, in the run it came from
        (out / "gate.json").write_text(init_gate.read_text())
    if step == 0 and cfg.gate_epochs > 0 and not whole and init_info is None:
        gate_result = pretrain_gate(module.gate, y_all[train_idx], d_all[train_idx], cfg,
                                    (y_all[held_idx], d_all[held_idx]))
        (out / "gate.json").write_text(json.dumps(gate_result, indent=2) + "\n")
        print(f"gate pre-trained: accuracy {gate_result['train_accuracy']:.3f} on training crops, "
              f"{gate_result.get('holdout_accuracy', float('nan')):.3f} held out", flush=True)
    h, w = x_all.shape[2:]
    identity = IdentityLoss(cfg.recognizer) if alpha > 0 else None
    to_template = similarity_transform(ARCFACE_112.points, identity.template.points) if identity else None
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(step):  # a resumed run draws the batches the first run would have drawn next
        torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)
    log, writer = open_log(out / "log.csv", step, LOG_COLUMNS)
    evaluate = None
    if cfg.eval_every:  # held-out PSNR per domain over the steps (how far more steps go)
        ev = held_idx[: cfg.eval_images * len(cfg.domains)]
        ev_x, ev_y, ev_d = x_all[ev], y_all[ev], d_all[ev]
        ev_log, ev_writer = open_log(out / "eval.csv", step, ["step", "cpu_seconds", *cfg.domains])

        def evaluate(cpu_seconds: float, fn=None) -> None:
            module.eval()
            fn = fn or ((lambda yy: module.g_s(yy)) if whole else (lambda yy: module(yy)[0]))
            p = domain_psnr(fn, ev_x, ev_y, ev_d, cfg.domains)
            ev_writer.writerow([step, f"{cpu_seconds:.1f}", *(f"{p[n]:.3f}" for n in cfg.domains)])
            ev_log.flush()
            print(f"eval step {step}: PSNR " + ", ".join(f"{n} {p[n]:.2f}" for n in cfg.domains), flush=True)
            module.train()
            module.g_s.train(whole)

        if step == 0:
            evaluate(0.0)
    t0, c0 = time.time(), time.process_time()
    module.train()
    module.g_s.train(whole)
    print(
        f"{bundle.name}: λ {lmbda}, α {alpha}, γ {cfg.gamma}; {len(d_all)} coded crops "
        f"({len(d_all) // len(cfg.domains)} images × {len(cfg.domains)} domains, {len(held_idx)} held out); "
        + ("whole g_s fine-tuned" if whole else f"adapters + gate "
           f"{module.extra_parameters()} parameters = {100 * module.params_ratio():.2f} % of g_s")
        + (f"; training on {', '.join(cfg.train_domains)} only" if cfg.train_domains else "")
    )
    while step < cfg.steps:
        lr = cfg.lr if step < cfg.lr_drop_at * cfg.steps else cfg.lr / 10
        for g in opt.param_groups:
            g["lr"] = lr
        idx = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)]
        x = x_all[idx].float() / 255.0
        y, d = y_all[idx], d_all[idx]
        logits = module.gate(y)
        if whole:
            x_hat = module.g_s(y)[:, :, :h, :w]
        else:
            if step < cfg.teacher_forcing * cfg.steps:
                weights = F.one_hot(d, len(cfg.domains)).float()
            else:
                weights = torch.softmax(logits, dim=1)
            x_hat = module(y, weights)[0][:, :, :h, :w]
        mse = torch.mean((x_hat - x) ** 2)
        distortion = 255**2 * mse
        ident = float("nan")
        if identity is not None:
            mats = np.repeat(to_template[None], len(idx), axis=0)
            target = x_all[identity_target_indices(idx, len(cfg.domains), cfg.identity_target)].float() / 255.0
            d_id, _ = identity(target, x_hat, mats)
            distortion = distortion + alpha * d_id
            ident = d_id.item()
        ce = F.cross_entropy(logits, d)
        loss = lmbda * distortion + (0.0 if cfg.freeze_gate or whole else cfg.gamma) * ce
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        acc = (logits.argmax(1) == d).float().mean().item()
        psnr = -10 * math.log10(max(mse.item(), 1e-10))
        writer.writerow(
            [
                step,
                f"{loss.item():.5f}",
                f"{mse.item():.7f}",
                f"{psnr:.3f}",
                f"{ident:.5f}",
                f"{ce.item():.4f}",
                f"{acc:.3f}",
                lr,
                f"{time.time() - t0:.1f}",
                f"{cpu_before + time.process_time() - c0:.1f}",
            ]
        )
        if step % 50 == 0:
            print(
                f"step {step}/{cfg.steps} loss {loss.item():.4f} psnr {psnr:.2f} id {ident:.4f} ce {ce.item():.3f}",
                flush=True,
            )
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            evaluate(cpu_before + time.process_time() - c0)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            log.flush()
            tmp = out / "checkpoint.pt.tmp"
            torch.save(
                {
                    "module": module.extra_state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "cpu_seconds": cpu_before + time.process_time() - c0,
                    "config": cfgmod.to_dict(cfg),
                    **({"g_s": module.g_s.state_dict()} if whole else {}),
                },
                tmp,
            )
            tmp.replace(ckpt)
    log.close()
    if evaluate is not None:
        ev_log.close()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    info = {
        "model": bundle.name,
        "model_id": bundle.model_id,
        "lambda": lmbda,
        "alpha": alpha,
        "gamma": cfg.gamma,
        "steps": step,
        "cpu_seconds": round(state["cpu_seconds"], 1),
        "images": len(torch.unique(train_idx // len(cfg.domains))),
        "unseen_domain": domains_mod.UNSEEN,
        "config": cfgmod.to_dict(cfg),
    }
    info["cpu_seconds_total"] = info["cpu_seconds"]
    if init_info is not None:
        info["init_from"] = {k: init_info.get(k) for k in ("steps", "alpha", "cpu_seconds", "cpu_seconds_total")}
        info["cpu_seconds_total"] = round(info["cpu_seconds"] + init_info.get("cpu_seconds_total",
                                                                              init_info["cpu_seconds"]), 1)
    if cfg.train_domains:
        info["train_domains"] = list(cfg.train_domains)
    qualities = training_qualities(cfg, bundle)
    if qualities is not None:  # a variable-rate model: one set of adapters for every quality
        info["qualities"] = qualities
    if whole:
        return save_whole(module.g_s, out / WHOLE_FILE, {**info, "mode": "whole"})
    if len(held_idx):
        held = evaluate_holdout(module, x_all[held_idx], y_all[held_idx], d_all[held_idx])
        (out / "holdout.json").write_text(json.dumps(held, indent=2) + "\n")
        info["holdout_images"] = len(held_idx) // len(cfg.domains)
        info["holdout_gate_accuracy"] = round(held["gate_accuracy"], 4)
        print(f"held out ({len(held_idx)} crops): gate accuracy {held['gate_accuracy']:.3f}; PSNR base → adapters "
              + ", ".join(f"{n} {held['psnr_base'][n]:.2f} → {held['psnr_adapters'][n]:.2f}" for n in module.domains))
    final = out / "adapters.safetensors"
    module.eval()
    adapters_mod.save(module, final, info)
    print(f"wrote {final} ({info['cpu_seconds'] / 60:.1f} CPU minutes)")
    return final


# ----------------------------------------------------------------------------------------------------------------
# Install into a rate point's bundle
# ----------------------------------------------------------------------------------------------------------------
ADAPTERS_FILE = "adapters.safetensors"
WHOLE_FILE = "synthesis.safetensors"  # a whole-g_s fine-tune (mode: whole)
WHOLE_KEY = "facelink_whole_g_s"


def save_whole(g_s: torch.nn.Module, path: Path, info: dict) -> Path:
    """A fine-tuned g_s (float32) with its provenance in the metadata (``facelink_whole_g_s``)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in g_s.state_dict().items()}, str(tmp),
              metadata={WHOLE_KEY: json.dumps(info, sort_keys=True)})
    tmp.replace(path)
    print(f"wrote {path} ({info['cpu_seconds'] / 60:.1f} CPU minutes)")
    return path


def load_whole(path: Path, bundle: registry.ModelBundle) -> tuple[torch.nn.Sequential, dict]:
    """A whole-g_s fine-tune of ``bundle`` (strict: its model id and every tensor must fit) and its provenance."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if WHOLE_KEY not in meta:
        raise ValueError(f"{path}: not a whole-g_s fine-tune (no {WHOLE_KEY} metadata)")
    info = json.loads(meta[WHOLE_KEY])
    if info["model_id"] != bundle.model_id:
        raise ValueError(f"{path} was fine-tuned from model id {info['model_id']}, not {bundle.name}'s")
    g_s = base_synthesis(bundle)
    g_s.load_state_dict(load_file(str(path)))
    return g_s, info
ABLATION_FILE = "adapters-pixel.safetensors"


def install(run: Path, ablation: Path | None = None, folder: Path | None = None) -> Path:
    """Copy a run's adapters (and its α = 0 ablation's) into its rate point's folder and list them, with their
    sha256, in the manifest (``files``, and ``adapters``: file, ablation, domains, unseen domain, training)."""
    import shutil

    from facelink.shared.detection import sha256_file

    src = Path(run) / ADAPTERS_FILE
    _, info = adapters_mod.read_config(src)
    folder = Path(folder) if folder else registry.load(info["model"]).path
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if manifest["model_id"] != info["model_id"]:
        raise ValueError(f"{src} was trained for model id {info['model_id']}, {folder} is {manifest['model_id']}")
    entry = {
        "file": ADAPTERS_FILE,
        "domains": list(adapters_mod.read_config(src)[0].domains),
        "unseen_domain": info["unseen_domain"],
        "training": {k: v for k, v in info.items() if k != "config"},
    }
    gate_json = Path(run) / "gate.json"
    if gate_json.exists():  # the gate's pre-training on the cached latents (its CPU time and held-out accuracy)
        entry["gate_pretraining"] = json.loads(gate_json.read_text())
    copies = [(src, ADAPTERS_FILE)]
    if ablation is not None:
        abl = Path(ablation) / ADAPTERS_FILE
        _, abl_info = adapters_mod.read_config(abl)
        if abl_info["model_id"] != info["model_id"] or abl_info["alpha"] != 0:
            raise ValueError(f"{abl} is not an α = 0 ablation for model id {info['model_id']}")
        entry["ablation"] = ABLATION_FILE
        copies.append((abl, ABLATION_FILE))
    for path, name in copies:
        shutil.copyfile(path, folder / name)
        manifest["files"][name] = sha256_file(folder / name)
    manifest["adapters"] = entry
    tmp = manifest_path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    registry._load.cache_clear()
    return folder


def finish(run: Path) -> Path:
    """Write a run's final file from its last checkpoint, before its configured steps (a run stopped early: what it
    had learned by then, its provenance saying at which step)."""
    run = Path(run)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = cfgmod.from_mapping(AdapterTrainConfig, state["config"], f"{run}/checkpoint.pt's configuration")
    bundle = registry.load(cfg.model)
    lmbda, alpha = loss_weights(cfg, bundle)
    module = adapters_mod.AdaptedSynthesis(base_synthesis(bundle), cfg.adapter_config(), bundle.manifest["M"])
    module.load_state_dict(state["module"], strict=False)
    info = {"model": bundle.name, "model_id": bundle.model_id, "lambda": lmbda, "alpha": alpha, "gamma": cfg.gamma,
            "steps": state["step"], "stopped_early_of": cfg.steps, "cpu_seconds": round(state["cpu_seconds"], 1),
            "cpu_seconds_total": round(state["cpu_seconds"], 1), "unseen_domain": domains_mod.UNSEEN,
            "config": cfgmod.to_dict(cfg), **({"train_domains": list(cfg.train_domains)} if cfg.train_domains else {})}
    qualities = training_qualities(cfg, bundle)
    if qualities is not None:
        info["qualities"] = qualities
    if cfg.mode == "whole":
        module.g_s.load_state_dict(state["g_s"])
        return save_whole(module.g_s, run / WHOLE_FILE, {**info, "mode": "whole"})
    adapters_mod.save(module.eval(), run / ADAPTERS_FILE, info)
    return run / ADAPTERS_FILE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="facelink train-adapters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="train adapters and gate on a frozen rate point")
    run.add_argument("--config", help="YAML or JSON configuration (unknown keys are errors)")
    run.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv, adapters.safetensors")
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    run.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    run.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys (JSON values)")
    gate = sub.add_parser("gate", help="pre-train a gate alone on the cached latents and print its held-out accuracy")
    gate.add_argument("--config", help="YAML or JSON configuration (unknown keys are errors)")
    gate.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    gate.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys (JSON values)")
    gate.add_argument("--out", type=Path, help="also write the result here (JSON)")
    ins = sub.add_parser("install", help="add a run's adapters to its rate point's bundle and manifest")
    ins.add_argument("--run", required=True, type=Path, help="the IPR-trained run folder")
    ins.add_argument("--ablation", type=Path, help="the α = 0 run folder of the same rate point")
    ins.add_argument("--folder", type=Path, help="the rate point's folder (default: found in the registry)")
    fin = sub.add_parser("finish", help="write a run's final file from its last checkpoint (a run stopped early)")
    fin.add_argument("--run", required=True, type=Path, help="the run folder (its checkpoint.pt)")
    args = ap.parse_args(argv)
    try:
        if args.command == "finish":
            print(f"wrote {finish(args.run)}")
            return 0
        if args.command == "install":
            print(f"installed into {install(args.run, args.ablation, args.folder)}")
            return 0
        data = cfgmod.to_dict(cfgmod.load(AdapterTrainConfig, args.config)) if args.config else {}
        cfg = cfgmod.from_mapping(AdapterTrainConfig, cfgmod.apply_overrides(data, args.set), "adapter training config")
        if args.command == "gate":
            if cfg.gate_epochs < 1:
                raise cfgmod.ConfigError("facelink train-adapters gate needs gate_epochs ≥ 1")
            result = json.dumps(gate_only(cfg, assets=args.assets), indent=2)
            print(result)
            if args.out:
                args.out.write_text(result + "\n")
            return 0
        train(cfg, Path(args.out), resume=args.resume, assets=args.assets)
    except (OSError, ValueError, cfgmod.ConfigError, registry.UnknownModelError) as e:
        print(f"facelink train-adapters: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
