"""Summarise training runs: per run folder, its configuration, steps, wall time and the last log rows' averages.

``facelink train-summary runs/ipr-q5 runs/ipr-q4 ... --out benchmarks/results/training_ipr.json`` writes JSON and
a markdown table beside it (``.md``). Wall time adds up the segments of a resumed run (``log.csv``'s ``seconds``
restarts at each resume), so it is the time the run really took, whatever else shared the machine then.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

TAIL = 200  # rows averaged for the end-of-training figures


def summarise(run: Path) -> dict:
    run = Path(run)
    cfg_path, log_path = run / "config.json", run / "log.csv"
    if not cfg_path.is_file() or not log_path.is_file():
        raise FileNotFoundError(f"{run}: not a training run folder (config.json and log.csv expected)")
    cfg = json.loads(cfg_path.read_text())
    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{log_path}: no rows")
    seconds, last = 0.0, 0.0
    for r in rows:
        s = float(r["seconds"])
        if s < last:  # a resume: the clock restarted
            seconds += last
        last = s
    seconds += last

    def mean(key: str) -> float | None:
        vals = [float(r[key]) for r in rows[-TAIL:] if r.get(key) not in (None, "")]
        vals = [v for v in vals if math.isfinite(v)]
        return round(sum(vals) / len(vals), 5) if vals else None

    return {"run": run.name, "lambda": cfg["lmbda"], "alpha": cfg.get("alpha", 0.0),
            "init_from": cfg.get("init_from"), "steps": int(rows[-1]["step"]), "steps_planned": cfg["steps"],
            "batch_size": cfg["batch_size"], "patch": cfg["patch"], "threads": cfg.get("threads"),
            "datasets": cfg["datasets"], "seconds": round(seconds, 1),
            "done": (run / "model.pt").is_file(),
            f"last{TAIL}": {k: mean(k) for k in ("bpp", "psnr", "identity")}}


def markdown(rows: list[dict]) -> str:
    out = ["| run | λ | α | fine-tuned from | steps | wall time | bpp (last 200) | PSNR dB | 1 − cos (MobileFaceNet) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r[f"last{TAIL}"]
        out.append(f"| {r['run']} | {r['lambda']} | {r['alpha']:g} | {r['init_from'] or 'scratch'} | {r['steps']} "
                   f"| {r['seconds'] / 60:.1f} min | {t['bpp']} | {t['psnr']} | {t['identity']} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink train-summary", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="training run folders")
    ap.add_argument("--out", type=Path, help="JSON file to write (a .md table beside it)")
    args = ap.parse_args(argv)
    rows = [summarise(r) for r in args.runs]
    md = markdown(rows)
    print(md, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": rows, "command": "facelink train-summary " + " ".join(
            str(r) for r in args.runs) + f" --out {args.out}"}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
