"""Seconds per training step of codec core v2 on one CPU thread: the reference step against the fast one and each
of its changes alone, measured in one run and reported as ratios.

    python -m facelink.benchmarks.core_v2_step_speed [--config cloud/training/configs/core-v2.yaml]
        [--paths reference allocator recognizer fast] [--steps 10] [--warmup 2] [--images 256]
        [--checkpoint COPY_OF_checkpoint.pt] [--out benchmarks/results/core-v2/step_speed.json]

Paths (:mod:`facelink.cloud.training.core_v2_step`): ``reference`` is the step as configured with ``fast_step:
false``; ``allocator`` adds :func:`tune_allocator`, ``recognizer`` :func:`fast_recognizer` alone, ``fast`` both
(what ``fast_step: true`` trains with). Each path is its own child process on one thread (the allocator setting is
process-wide); the children are stepped in lock-step, one step of each in turn with the order rotated every step and
only one computing at a time, so that a change of the machine's load falls on every path alike. A child loads the
committed milestone (fresh optimizer) or ``--checkpoint`` (read only, never a run folder's file in use: pass a copy),
samples the run's own batches (the first stage's mix of aligned crops and full-frame crops, from a seeded subset of
``--images`` training images) and qualities with ``--seed``, and reports per step the wall and CPU seconds (data
sampling included), its page faults and the loss. The same seed gives every child the same batches and qualities, so
a path's losses must match the reference's to float tolerance (folding batch norm rounds differently, and training
amplifies that slowly): the result records the relative difference per step.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

PATHS = ("reference", "allocator", "recognizer", "fast")
DEFAULT_CONFIG = "cloud/training/configs/core-v2.yaml"


def child(path: str, config: str, images: int, seed: int, checkpoint: Path | None = None) -> None:
    """Set up ``path`` in this process (one thread), say so on stdout, then train one step per ``step`` line read from
    stdin and answer each with a JSON line: wall and CPU seconds (data sampling included), page faults, loss."""
    import torch

    from facelink.cloud.training import core_v2 as c
    from facelink.cloud.training.core_v2_step import fast_recognizer, training_step, tune_allocator
    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.cloud.training.train import LandmarkPatchSampler
    from facelink.shared.alignment import CROP_TEMPLATES

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
        model, record = c.load_milestone(c.milestone_paths(cfg.run_name)[0], cfg)
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
    print(json.dumps({"path": path, "allocator_tuned": tuned, "source": source, "batch_size": cfg.batch_size,
                      "patch": cfg.patch, "alpha": stage.alpha}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        r0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
        x, mats, faces, sizes = sampler.batch_with_faces(cfg.batch_size)
        q = c.sample_qualities(qrng, len(x), stage, cfg.continuous_share)
        res = training_step(model, opt, aux_opt, identity, x, mats, faces, sizes, q, stage.alpha)
        loss = res["loss"].item()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0.ru_minflt
        print(json.dumps({"wall_s": wall, "cpu_s": cpu, "minor_faults": faults, "loss": loss}), flush=True)


def _answer(proc: subprocess.Popen, path: str) -> dict:
    line = proc.stdout.readline()
    while line and not line.startswith("{"):  # the sampler's own messages
        line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the {path} child ended early (exit {proc.wait()}); run it alone to see why")
    return json.loads(line)


def measure(paths: list[str], config: str, steps: int, warmup: int, images: int, seed: int,
            checkpoint: Path | None = None) -> dict:
    """One child process per path, stepped in lock-step (one step of each path in turn, the order rotated every
    step, only one child computing at a time) so that a change of the machine's load falls on every path alike;
    medians per path, ratios to the reference, and the losses' agreement with the reference's."""
    if "reference" not in paths:
        paths = ["reference", *paths]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs, info = {}, {}
    try:
        for p in paths:
            cmd = [sys.executable, "-m", "facelink.benchmarks.core_v2_step_speed", "--child", p, "--config", config,
                   "--images", str(images), "--seed", str(seed)]
            if checkpoint is not None:
                cmd += ["--checkpoint", str(checkpoint)]
            procs[p] = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
            info[p] = _answer(procs[p], p)  # set up one after another: loading is not what is measured
        runs: dict[str, list[dict]] = {p: [] for p in paths}
        for k in range(warmup + steps):
            for p in paths[k % len(paths):] + paths[:k % len(paths)]:
                procs[p].stdin.write("step\n")
                procs[p].stdin.flush()
                runs[p].append(_answer(procs[p], p))
            print(f"step {k + 1}: " + "  ".join(f"{p} {runs[p][-1]['cpu_s']:.3f} s" for p in paths),
                  file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(timeout=60)
    ref_losses = np.array([r["loss"] for r in runs["reference"]])
    stats = {}
    for p, rs in runs.items():
        timed = rs[warmup:]
        losses = np.array([r["loss"] for r in rs])
        stats[p] = {"wall_s_per_step": round(float(np.median([r["wall_s"] for r in timed])), 4),
                    "cpu_s_per_step": round(float(np.median([r["cpu_s"] for r in timed])), 4),
                    "cpu_s_steps": [round(r["cpu_s"], 4) for r in timed],
                    "minor_faults_per_step": int(np.median([r["minor_faults"] for r in timed])),
                    "allocator_tuned": info[p]["allocator_tuned"],
                    "loss_rel_diff_vs_reference_per_step": [
                        float(f"{v:.2e}") for v in np.abs(losses - ref_losses) / np.abs(ref_losses)]}
    ref = stats["reference"]
    for st in stats.values():
        st["speedup_wall"] = round(ref["wall_s_per_step"] / st["wall_s_per_step"], 3)
        st["speedup_cpu"] = round(ref["cpu_s_per_step"] / st["cpu_s_per_step"], 3)
        # the ratio of the same step's CPU seconds, reference / this path: its median and spread over the steps
        per_step = np.array(ref["cpu_s_steps"]) / np.array(st["cpu_s_steps"])
        st["speedup_cpu_paired"] = {"median": round(float(np.median(per_step)), 3),
                                    "min": round(float(per_step.min()), 3), "max": round(float(per_step.max()), 3)}
    first = info["reference"]
    return {"config": config, "source": first["source"], "threads": 1, "batch_size": first["batch_size"],
            "patch": first["patch"], "alpha": first["alpha"], "images": images, "seed": seed, "steps": steps,
            "warmup": warmup, "paths": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.core_v2_step_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="the run's YAML configuration (default %(default)s)")
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS),
                    help="step variants to time; the reference always runs (default: all)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per path (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps per path (default %(default)s)")
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
    if min(args.steps, args.images) < 1 or args.warmup < 0:
        print("core_v2_step_speed: --steps and --images must be ≥ 1, --warmup ≥ 0", file=sys.stderr)
        return 2
    if args.child:
        child(args.child, args.config, args.images, args.seed, args.checkpoint)
        return 0
    from facelink.cloud.evaluation.provenance import emit_json, stamp

    doc = measure(list(dict.fromkeys(args.paths)), args.config, args.steps, args.warmup, args.images, args.seed,
                  args.checkpoint)
    command = "python -m facelink.benchmarks.core_v2_step_speed " + shlex.join(sys.argv[1:] if argv is None else argv)
    emit_json(stamp({"command": command, "conditions": args.conditions, **doc}), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
