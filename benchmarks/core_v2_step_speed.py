"""Seconds per training step of codec core v2 on one CPU thread: the reference step against the fast one and each
of its changes alone, measured in one run and reported as ratios.

    python -m facelink.benchmarks.core_v2_step_speed [--config cloud/training/configs/core-v2.yaml]
        [--paths reference allocator recognizer fast] [--steps 8] [--rounds 3] [--images 256]
        [--checkpoint COPY_OF_checkpoint.pt] [--out benchmarks/results/core-v2/step_speed.json]

Paths (:mod:`facelink.cloud.training.core_v2_step`): ``reference`` is the step as configured with ``fast_step:
false``; ``allocator`` adds :func:`tune_allocator`, ``recognizer`` :func:`fast_recognizer` alone, ``fast`` both
(what ``fast_step: true`` trains with). Each (round, path) is a fresh child process on one thread (the allocator
setting is process-wide), the paths in a rotated order each round so that a drift of the machine's load falls on
all of them. A child loads the committed milestone (fresh optimizer) or ``--checkpoint`` (read only, never a run
folder's file in use: pass a copy), samples the run's own batches (the first stage's mix of aligned crops and
full-frame crops, from a seeded subset of ``--images`` training images) and qualities with ``--seed``, trains
``--warmup`` + ``--steps`` steps and reports the wall and CPU seconds of each timed step (data sampling included),
its page faults, and every step's loss. The same seed gives every child the same batches and qualities, so a
path's losses must match the reference's to float tolerance (folding batch norm rounds differently, and training
amplifies that slowly): the result records the largest relative difference per step.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

PATHS = ("reference", "allocator", "recognizer", "fast")
DEFAULT_CONFIG = "cloud/training/configs/core-v2.yaml"


def child(path: str, config: str, steps: int, warmup: int, images: int, seed: int,
          checkpoint: Path | None = None) -> dict:
    """Train ``warmup + steps`` steps of ``path`` in this process (one thread) and return its timings and losses."""
    import torch

    from facelink.cloud.training import core_v2 as c
    from facelink.cloud.training.core_v2_step import fast_recognizer, training_step, tune_allocator
    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.cloud.training.train import LandmarkPatchSampler
    from facelink.shared.alignment import CROP_TEMPLATES

    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    torch.set_num_threads(1)
    tuned = tune_allocator() if path in ("allocator", "fast") else False
    cfg = c._load_config(config)
    torch.manual_seed(seed)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = c.new_model(cfg)
        c._resize_entropy_buffers(model, state["model"])
        model.load_state_dict(state["model"])
        opt, aux_opt = c._optimizers(model, cfg.stages[0].lr, cfg.aux_lr)
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        source = f"checkpoint at step {int(state['step'])}"
    else:
        weights = c.milestone_paths(cfg.run_name)[0]
        model, record = c.load_milestone(weights, cfg)
        opt, aux_opt = c._optimizers(model, cfg.stages[0].lr, cfg.aux_lr)
        source = f"milestone at step {record['step']} (fresh optimizer)"
    stage = cfg.stages[0]
    files, _ = c.split_files(replace(cfg, max_images=images))
    sampler = LandmarkPatchSampler(files, cfg.patch, cfg.min_scale, seed, stage.face_crop_fraction,
                                   crop_template=CROP_TEMPLATES[cfg.crop_template])
    identity = IdentityLoss(cfg.recognizer, "cpu")
    if path in ("recognizer", "fast"):
        identity.recognizer = fast_recognizer(identity.recognizer)
    model.train()
    identity.train()
    qrng = random.Random(seed)
    wall, cpu, faults, losses = [], [], [], []
    for _ in range(warmup + steps):
        r0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
        x, mats, faces, sizes = sampler.batch_with_faces(cfg.batch_size)
        q = c.sample_qualities(qrng, len(x), stage, cfg.continuous_share)
        res = training_step(model, opt, aux_opt, identity, x, mats, faces, sizes, q, stage.alpha)
        losses.append(res["loss"].item())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0.ru_minflt)
    return {"path": path, "allocator_tuned": tuned, "source": source, "wall_s": wall[warmup:],
            "cpu_s": cpu[warmup:], "minor_faults": faults[warmup:], "losses": losses,
            "batch_size": cfg.batch_size, "patch": cfg.patch, "alpha": stage.alpha}


def measure(paths: list[str], config: str, steps: int, warmup: int, rounds: int, images: int, seed: int,
            checkpoint: Path | None = None) -> dict:
    """Run every path ``rounds`` times in fresh one-thread child processes, rotating their order; medians per path,
    ratios to the reference, and the losses' agreement with the reference."""
    if "reference" not in paths:
        paths = ["reference", *paths]
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for r in range(rounds):
        k = r % len(paths)
        for p in paths[k:] + paths[:k]:
            cmd = [sys.executable, "-m", "facelink.benchmarks.core_v2_step_speed", "--child", p, "--config", config,
                   "--steps", str(steps), "--warmup", str(warmup), "--images", str(images), "--seed", str(seed)]
            if checkpoint is not None:
                cmd += ["--checkpoint", str(checkpoint)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{p} (round {r + 1}) failed:\n{proc.stderr[-3000:]}")
            runs[p].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {p}: median {np.median(runs[p][-1]['wall_s']):.3f} s wall, "
                  f"{np.median(runs[p][-1]['cpu_s']):.3f} s CPU per step", file=sys.stderr, flush=True)
    ref_losses = np.array([run["losses"] for run in runs["reference"]])
    stats = {}
    for p, rs in runs.items():
        wall = float(np.median(np.concatenate([run["wall_s"] for run in rs])))
        cpu = float(np.median(np.concatenate([run["cpu_s"] for run in rs])))
        losses = np.array([run["losses"] for run in rs])
        rel = np.abs(losses - ref_losses[0]) / np.abs(ref_losses[0])
        stats[p] = {"wall_s_per_step": round(wall, 4), "cpu_s_per_step": round(cpu, 4),
                    "wall_s_per_round": [round(float(np.median(run["wall_s"])), 4) for run in rs],
                    "cpu_s_per_round": [round(float(np.median(run["cpu_s"])), 4) for run in rs],
                    "minor_faults_per_step": int(np.median(np.concatenate([run["minor_faults"] for run in rs]))),
                    "allocator_tuned": rs[0]["allocator_tuned"],
                    "loss_max_rel_diff_vs_reference_per_step": [float(f"{v:.2e}") for v in rel.max(axis=0)]}
    ref = stats["reference"]
    for s in stats.values():
        s["speedup_wall"] = round(ref["wall_s_per_step"] / s["wall_s_per_step"], 3)
        s["speedup_cpu"] = round(ref["cpu_s_per_step"] / s["cpu_s_per_step"], 3)
    first = runs["reference"][0]
    return {"config": config, "source": first["source"], "threads": 1, "batch_size": first["batch_size"],
            "patch": first["patch"], "alpha": first["alpha"], "images": images, "seed": seed, "steps": steps,
            "warmup": warmup, "rounds": rounds, "paths": stats,
            "reference_losses_deterministic": bool(np.ptp(ref_losses, 0).max() == 0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.core_v2_step_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="the run's YAML configuration (default %(default)s)")
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS),
                    help="step variants to time; the reference always runs (default: all)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per child (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps per child (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="child processes per path (default %(default)s)")
    ap.add_argument("--images", type=int, default=256, help="training images sampled from (default %(default)s)")
    ap.add_argument("--seed", type=int, default=23, help="seed of the batches and qualities (default %(default)s)")
    ap.add_argument("--checkpoint", type=Path, help="start from this checkpoint.pt (a copy; read only) instead of the "
                                                    "committed milestone")
    ap.add_argument("--conditions", default="", help="how the machine was when this ran, recorded in the result "
                                                    "(e.g. 'under /tmp/team/quiet: background training paused')")
    ap.add_argument("--out", type=Path, help="result JSON with provenance, e.g. "
                                             "benchmarks/results/core-v2/step_speed.json")
    ap.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if min(args.steps, args.rounds, args.images) < 1 or args.warmup < 0:
        print("core_v2_step_speed: --steps, --rounds and --images must be ≥ 1, --warmup ≥ 0", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(child(args.child, args.config, args.steps, args.warmup, args.images, args.seed,
                               args.checkpoint)))
        return 0
    from facelink.cloud.evaluation.provenance import emit_json, stamp

    doc = measure(list(dict.fromkeys(args.paths)), args.config, args.steps, args.warmup, args.rounds, args.images,
                  args.seed, args.checkpoint)
    command = "python -m facelink.benchmarks.core_v2_step_speed " + " ".join(
        sys.argv[1:] if argv is None else argv)
    emit_json(stamp({"command": command, "conditions": args.conditions, **doc}), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
