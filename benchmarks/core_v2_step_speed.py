"""Seconds per training step of codec core v2 on one CPU thread: the reference step against the fast one and each
of its changes alone, measured in one run and reported as ratios.

    python -m facelink.benchmarks.core_v2_step_speed [--config cloud/training/configs/core-v2.yaml]
        [--paths reference allocator recognizer fast bf16] [--steps 10] [--warmup 2] [--images 256]
        [--grad-batches 4] [--validate] [--checkpoint COPY_OF_checkpoint.pt]
        [--out benchmarks/results/core-v2/step_speed.json]

Paths (:mod:`facelink.cloud.training.core_v2_step`): ``reference`` is the step as configured with ``fast_step: false``;
``allocator`` adds :func:`tune_allocator`, ``recognizer`` :func:`fast_recognizer` alone, ``fast`` both (what
``fast_step: true`` trains with), ``bf16`` the fast step with the analysis and synthesis transforms autocast to bfloat16
(a CPU needs AVX-512 BF16 or AMX for it to pay), ``bf16-cached`` that step with the recurring aligned crops' source
embeddings remembered (what core v2 trains with: :meth:`IdentityLoss.source_embeddings`). Each path is its own child
process on one thread (the allocator setting is process-wide); the children are stepped in lock-step, one step of each
in turn with the order rotated every step and only one computing at a time, so that a change of the machine's load falls
on every path alike. A child loads the committed milestone (fresh optimizer) or ``--checkpoint`` (read only, never a run
folder's file in use: pass a copy), samples the run's own batches (the first stage's mix of aligned crops and full-frame
crops, from a seeded subset of ``--images`` training images) and qualities with ``--seed``, and reports per step the
wall and CPU seconds (data sampling included), its page faults and the loss. The same seed gives every child the same
batches and qualities, so a path's losses must match the reference's to float tolerance (folding batch norm rounds
differently, and training amplifies that slowly): the result records the relative difference per step.

Before its first step each child also computes the gradient of ``--grad-batches`` batches (the same batches and
noise in every child) without stepping, and the result gives each path's cosine similarity to the reference's
gradient of the same batch, per part of the model (``g_a``, ``g_s``, the hyperprior, the gains), beside the
reference's cosine between the gradients of two different batches (how far apart minibatches already are): what a
path changes in what is learned, where the loss differences of later steps also carry the paths' divergence.
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

# What each path changes against the reference step: the allocator, the folded recognizer, bfloat16 transforms and
# the source-embedding cache.
PATH_FEATURES = {"reference": set(), "allocator": {"allocator"}, "recognizer": {"recognizer"},
                 "fast": {"allocator", "recognizer"}, "bf16": {"allocator", "recognizer", "bf16"},
                 "bf16-cached": {"allocator", "recognizer", "bf16", "cache"}}
PATHS = tuple(PATH_FEATURES)
DEFAULT_CONFIG = "cloud/training/configs/core-v2.yaml"


GRAD_PARTS = ("g_a", "g_s", "h_a", "h_s", "entropy_bottleneck", "log_gain", "log_inv_gain")


def _gradients(model, identity, batches: list, alpha: float, transform_dtype, seed: int) -> dict[str, np.ndarray]:
    """The loss's gradient on each batch (the noise seeded per batch), flattened per part of the model: arrays
    ``<part>/<k>`` (k = batch)."""
    import torch

    from facelink.cloud.training.core_v2_step import auxiliary_gradients, restore_auxiliary_gradients, step_loss

    kept = auxiliary_gradients(model)  # what the first step will clip with, as in a resumed run
    out = {"aux_norm": np.array([float(torch.sqrt(sum(g.pow(2).sum() for g in kept.values()))) if kept else 0.0])}
    for k, b in enumerate(batches):
        torch.manual_seed(seed + k)
        model.zero_grad()
        step_loss(model, identity, *b, alpha, transform_dtype)["loss"].backward()
        named = [(n, p.grad) for n, p in model.named_parameters()
                 if p.grad is not None and not n.endswith(".quantiles")]
        for part in GRAD_PARTS:
            out[f"{part}/{k}"] = torch.cat([g.flatten() for n, g in named if n.split(".")[0] == part]).double().numpy()
    model.zero_grad()
    restore_auxiliary_gradients(model, kept)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def gradient_agreement(files: dict[str, Path], batches: int) -> dict:
    """Per path, per part (and ``all``): the cosine of its gradient with the reference's on the same batch (median,
    min, max over the batches), and the reference's cosine between batch k and k + 1."""
    grads = {p: dict(np.load(f)) for p, f in files.items()}
    aux_norms = {p: float(g.pop("aux_norm", np.zeros(1))[0]) for p, g in grads.items()}

    def stacked(g: dict, k: int, part: str) -> np.ndarray:
        return np.concatenate([g[f"{q}/{k}"] for q in GRAD_PARTS]) if part == "all" else g[f"{part}/{k}"]

    def summary(values: list[float]) -> dict:
        return {"median": round(float(np.median(values)), 4), "min": round(min(values), 4),
                "max": round(max(values), 4)}

    ref = grads["reference"]
    # what the clipping of a step adds up: the model's gradient norm per batch, and the quantiles' auxiliary
    # gradient that a step finds from the step before (restored on resume)
    norms = [float(np.linalg.norm(stacked(ref, k, "all"))) for k in range(batches)]
    out = {"reference_gradient_norm": summary(norms), "auxiliary_gradient_norm": aux_norms["reference"],
           "batches": batches, "reference_between_batches": {
        part: summary([_cosine(stacked(ref, k, part), stacked(ref, k + 1, part)) for k in range(batches - 1)])
        for part in ("all", *GRAD_PARTS)} if batches > 1 else None, "same_batch_vs_reference": {}}
    for p, g in grads.items():
        if p != "reference":
            out["same_batch_vs_reference"][p] = {
                part: summary([_cosine(stacked(ref, k, part), stacked(g, k, part)) for k in range(batches)])
                for part in ("all", *GRAD_PARTS)}
    return out


def child(path: str, config: str, images: int, seed: int, checkpoint: Path | None = None,
          grad_out: Path | None = None, grad_batches: int = 0) -> None:
    """Set up ``path`` in this process (one thread), say so on stdout, then train one step per ``step`` line read from
    stdin and answer each with a JSON line: wall and CPU seconds (data sampling included), page faults, loss."""
    import torch

    from facelink.cloud.training import core_v2 as c
    from facelink.cloud.training.core_v2_step import (
        fast_recognizer,
        restore_auxiliary_gradients,
        training_step,
        tune_allocator,
    )
    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.cloud.training.train import LandmarkPatchSampler
    from facelink.shared.alignment import CROP_TEMPLATES

    torch.set_num_threads(1)
    features = PATH_FEATURES[path]
    tuned = tune_allocator() if "allocator" in features else False
    transform_dtype = torch.bfloat16 if "bf16" in features else None
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
        restore_auxiliary_gradients(model, state.get("aux_grads"))  # as a resumed training run does
        source = f"checkpoint at step {int(state['step'])}"
    else:
        model, record = c.load_milestone(c.milestone_paths(cfg.run_name)[0], cfg)
        opt, aux_opt = c._optimizers(model, cfg.stages[0].lr, cfg.aux_lr)
        restore_auxiliary_gradients(model)
        source = f"milestone at step {record['step']} (fresh optimizer)"
    stage = cfg.stages[0]
    files, _ = c.split_files(replace(cfg, max_images=images))
    sampler = LandmarkPatchSampler(files, cfg.patch, cfg.min_scale, seed, stage.face_crop_fraction,
                                   crop_template=CROP_TEMPLATES[cfg.crop_template])
    identity = IdentityLoss(cfg.recognizer, "cpu")
    if "recognizer" in features:
        identity.recognizer = fast_recognizer(identity.recognizer)
    model.train()
    identity.train()
    qrng = random.Random(seed)
    if grad_out is not None and grad_batches:
        batches = [(*sampler.batch_with_faces(cfg.batch_size),
                    c.sample_qualities(qrng, cfg.batch_size, stage, cfg.continuous_share)) for _ in range(grad_batches)]
        np.savez(grad_out, **_gradients(model, identity, batches, stage.alpha, transform_dtype, seed))
    print(json.dumps({"path": path, "allocator_tuned": tuned, "source": source, "batch_size": cfg.batch_size,
                      "patch": cfg.patch, "alpha": stage.alpha}), flush=True)
    val_batch = None
    for line in sys.stdin:
        if line.strip() == "validate":  # the raw weights on the run's validation crops, as progress.json reports
            if val_batch is None:
                val_batch = c.validation_batch(cfg, c.split_files(cfg)[1])
            with torch.no_grad():
                print(json.dumps({"validation": c.validate(model, val_batch, identity)}), flush=True)
            continue
        if line.strip() != "step":
            break
        r0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
        x, mats, faces, sizes = sampler.batch_with_faces(cfg.batch_size)
        q = c.sample_qualities(qrng, len(x), stage, cfg.continuous_share)
        keys = sampler.batch_keys if "cache" in features else None
        res = training_step(model, opt, aux_opt, identity, x, mats, faces, sizes, q, stage.alpha, transform_dtype,
                            keys)
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
            checkpoint: Path | None = None, grad_batches: int = 0, validate: bool = False) -> dict:
    """One child process per path, stepped in lock-step (one step of each path in turn, the order rotated every
    step, only one child computing at a time) so that a change of the machine's load falls on every path alike;
    medians per path, ratios to the reference, and the losses' agreement with the reference's."""
    if "reference" not in paths:
        paths = ["reference", *paths]
    import tempfile

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs, info = {}, {}
    scratch = tempfile.TemporaryDirectory(prefix="core-v2-grads-")
    grad_files = {p: Path(scratch.name) / f"{p}.npz" for p in paths}
    try:
        for p in paths:
            cmd = [sys.executable, "-m", "facelink.benchmarks.core_v2_step_speed", "--child", p, "--config", config,
                   "--images", str(images), "--seed", str(seed), "--grad-batches", str(grad_batches),
                   "--grad-out", str(grad_files[p])]
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
        validation = {}
        if validate:
            for p in paths:
                procs[p].stdin.write("validate\n")
                procs[p].stdin.flush()
                validation[p] = _answer(procs[p], p)["validation"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(timeout=60)
    agreement = gradient_agreement(grad_files, grad_batches) if grad_batches else None
    scratch.cleanup()
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
            "warmup": warmup, "paths": stats, "gradient_agreement": agreement,
            "validation_after_steps": _validation_summary(validation) if validate else None}


def _validation_summary(validation: dict[str, dict]) -> dict:
    """Per path: the validation per quality after the steps, and its mean PSNR and bpp differences to the
    reference's (same steps on the same batches)."""
    ref = validation["reference"]
    out = {}
    for p, v in validation.items():
        qs = sorted(v, key=float)
        out[p] = {"per_quality": v,
                  "psnr_minus_reference_db_mean": round(float(np.mean([v[q]["psnr"] - ref[q]["psnr"] for q in qs])), 4),
                  "bpp_vs_reference_pct_mean": round(float(np.mean([100 * (v[q]["bpp"] / ref[q]["bpp"] - 1)
                                                                    for q in qs])), 3)}
    return out


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
    ap.add_argument("--grad-batches", type=int, default=4,
                    help="batches whose gradients are compared with the reference's before stepping (default "
                         "%(default)s; 0: none)")
    ap.add_argument("--validate", action="store_true",
                    help="after the steps, validate every path's raw weights on the run's validation crops (bpp and "
                         "PSNR per quality, and the differences to the reference's)")
    ap.add_argument("--grad-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if min(args.steps, args.images) < 1 or args.warmup < 0 or args.grad_batches < 0:
        print("core_v2_step_speed: --steps and --images must be ≥ 1, --warmup and --grad-batches ≥ 0",
              file=sys.stderr)
        return 2
    if args.child:
        child(args.child, args.config, args.images, args.seed, args.checkpoint, args.grad_out, args.grad_batches)
        return 0
    from facelink.cloud.evaluation.provenance import emit_json, stamp

    doc = measure(list(dict.fromkeys(args.paths)), args.config, args.steps, args.warmup, args.images, args.seed,
                  args.checkpoint, args.grad_batches, args.validate)
    command = "python -m facelink.benchmarks.core_v2_step_speed " + shlex.join(sys.argv[1:] if argv is None else argv)
    emit_json(stamp({"command": command, "conditions": args.conditions, **doc}), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
