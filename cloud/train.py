"""Training of the face codec: rate + λ·(pixel distortion), resumable, on CPU or GPU.

``facelink train --config CONFIG --out RUN_DIR`` trains; ``--resume`` continues from ``RUN_DIR/checkpoint.pt``.
The identity (IPR) term and rate points are added by the IPR training work; this loop is what they extend.
"""
from __future__ import annotations

import argparse
import csv
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

from facelink.cloud import config as cfgmod
from facelink.cloud import datasets
from facelink.cloud.codec_model import ARCHITECTURE, build, rate_distortion_terms


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
    init_from: str | None = None  # fine-tune from another run's model.pt
    datasets: list[str] = field(default_factory=lambda: ["lfw-train", "celeba-train"])


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

    def sample(self) -> np.ndarray:
        im = self.images[self.rng.randrange(len(self.images))]
        h, w = im.shape[:2]
        lo = max(self.min_scale, self.patch / min(h, w))
        s = self.rng.uniform(lo, 1.0)
        if s < 0.999:
            im = cv2.resize(im, (max(self.patch, round(w * s)), max(self.patch, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = im.shape[:2]
        y, x = self.rng.randrange(h - self.patch + 1), self.rng.randrange(w - self.patch + 1)
        crop = im[y : y + self.patch, x : x + self.patch]
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        return crop

    def batch(self, n: int) -> torch.Tensor:
        arr = np.stack([self.sample() for _ in range(n)]).astype(np.float32) / 255.0
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _optimizers(model, cfg: TrainConfig):
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(params, lr=cfg.lr), torch.optim.Adam(aux, lr=cfg.aux_lr)


def train(cfg: TrainConfig, out: Path, resume: bool = False, assets=None) -> Path:
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
        step = state["step"]
        print(f"resumed from {ckpt} at step {step}")
    elif cfg.init_from:
        state = torch.load(cfg.init_from, map_location=device, weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        print(f"initialised from {cfg.init_from}")
    (out / "config.json").write_text(json.dumps(cfgmod.to_dict(cfg), indent=2))
    sampler = PatchSampler(training_files(cfg.datasets, assets), cfg.patch, cfg.min_scale, cfg.seed + step)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or step == 0
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "bpp", "mse", "psnr", "aux", "lr", "seconds"])
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train λ={cfg.lmbda}", unit="step")
    model.train()
    while step < cfg.steps:
        lr = cfg.lr if step < cfg.lr_drop_at * cfg.steps else cfg.lr / 10
        for g in opt.param_groups:
            g["lr"] = lr
        x = sampler.batch(cfg.batch_size).to(device)
        out_ = model(x)
        bpp, mse = rate_distortion_terms(out_, x)
        loss = bpp + cfg.lmbda * 255**2 * mse
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        aux = model.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
        step += 1
        psnr = -10 * math.log10(max(mse.item(), 1e-10))
        writer.writerow([step, f"{loss.item():.5f}", f"{bpp.item():.5f}", f"{mse.item():.7f}", f"{psnr:.3f}",
                         f"{aux.item():.3f}", lr, f"{time.time() - t0:.1f}"])
        bar.update(1)
        bar.set_postfix(bpp=f"{bpp.item():.3f}", psnr=f"{psnr:.2f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            log.flush()
            tmp = out / "checkpoint.pt.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                        "step": step, "config": cfgmod.to_dict(cfg)}, tmp)
            tmp.replace(ckpt)  # atomic: a crash never leaves a half-written checkpoint
    bar.close()
    log.close()
    model.update(force=True)
    final = out / "model.pt"
    torch.save({"model": model.state_dict(), "config": cfgmod.to_dict(cfg), "step": step}, final)
    print(f"wrote {final}")
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink train", description=__doc__)
    ap.add_argument("--config", help="YAML or JSON training configuration (unknown keys are errors)")
    ap.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv, model.pt")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (JSON value)")
    args = ap.parse_args(argv)
    try:
        data = cfgmod.to_dict(cfgmod.load(TrainConfig, args.config)) if args.config else {}
        for kv in args.set:
            k, _, v = kv.partition("=")
            try:
                data[k] = json.loads(v)
            except json.JSONDecodeError:
                data[k] = v
        cfg = cfgmod.from_mapping(TrainConfig, data, "training config")
        train(cfg, Path(args.out), resume=args.resume, assets=args.assets)
    except (OSError, cfgmod.ConfigError) as e:
        print(f"facelink train: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
