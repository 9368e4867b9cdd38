"""Paired accuracy differences between decoders that :mod:`facelink.benchmarks.adapters_bench` measured.

The adapters bench keeps, per (data set, domain, rate point), every variant's pair scores (``base``, ``adapters``,
``oracle``, ``pixel``, ...) in ``adapters-measures-v2/<dataset>-<domain>-<rate point>-<key>.json`` next to its
cache. Decoders of different rate-point bundles (e.g. a copy of a rate point carrying other adapters, found through
``$FACELINK_MODELS_PATH``) are measured on the same pairs and probes, so their accuracies compare pair by pair:

``python -m facelink.benchmarks.adapters_paired --measures runs/x/adapters-measures-v2 --domains nir source
--decoders base=face-ipr-q2:base ipr=face-ipr-q2:adapters --versus base --out result.json``

writes each decoder's 10-fold accuracy and, for each decoder against each ``--versus`` one, the fold-by-fold
difference's mean, standard deviation and standard error (``adapters_bench.paired_difference``, as the bench's
``diff_se``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from facelink.benchmarks import engine
from facelink.benchmarks.adapters_bench import accuracy, paired_difference
from facelink.cloud.evaluation.provenance import emit_json, stamp


def _decoders(items: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        model, sep2, variant = rest.rpartition(":")
        if not (sep and sep2 and name and model and variant):
            raise ValueError(f"--decoders expects NAME=RATE_POINT:VARIANT, got {item!r}")
        out[name] = (model, variant)
    return out


def measure_file(folder: Path, dataset: str, domain: str, model: str) -> Path:
    """The one measure file of (data set, domain, rate point) in ``folder``."""
    found = sorted(folder.glob(f"{dataset}-{domain}-{model}-*.json"))
    found = [f for f in found if f.name.count("-") == f"{dataset}-{domain}-{model}-x.json".count("-")]
    if len(found) != 1:
        raise ValueError(f"{folder}: {len(found)} measure files for {dataset} {domain} {model}, need exactly one")
    return found[0]


def compare(folder: Path, dataset: str, domains: list[str], decoders: dict[str, tuple[str, str]],
            versus: list[str], recognizer: str, limit: int | None, assets=None) -> dict:
    suite = engine.load_suite(dataset, limit, assets)
    out: dict = {}
    for domain in domains:
        folds, row = {}, {"decoders": {}, "differences": {}}
        for name, (model, variant) in decoders.items():
            path = measure_file(folder, dataset, domain, model)
            scores = json.loads(path.read_text())["scores"][variant][recognizer]
            if len(scores) != len(suite.pairs):
                raise ValueError(f"{path}: {len(scores)} scores, the suite has {len(suite.pairs)} pairs")
            mean, std, per_fold = accuracy(suite, scores)
            folds[name] = per_fold
            row["decoders"][name] = {"rate_point": model, "variant": variant, "measures": path.name,
                                     "accuracy": mean, "fold_std": std}
        for ref in versus:
            for name in decoders:
                if name == ref:
                    continue
                row["differences"][f"{name}-{ref}"] = paired_difference(folds[name], folds[ref])
        out[domain] = row
    return {"dataset": dataset, "recognizer": recognizer, "pairs": int(len(suite.pairs)), "domains": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.adapters_paired", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measures", type=Path, required=True, help="the adapters bench's adapters-measures-v2 folder")
    ap.add_argument("--dataset", default="lfw", choices=["lfw", "celeba"], help="data set (default lfw)")
    ap.add_argument("--domains", nargs="+", required=True, help="probe domains")
    ap.add_argument("--decoders", nargs="+", required=True, metavar="NAME=RATE_POINT:VARIANT",
                    help="decoders: a name, the rate point measured and its variant (base, adapters, pixel, ...)")
    ap.add_argument("--versus", nargs="+", default=None, metavar="NAME",
                    help="decoders every other one is compared with (default: the first)")
    ap.add_argument("--recognizer", default="mobilefacenet", help="recognizer whose scores count")
    ap.add_argument("--limit", type=int, default=None, help="pairs per fold the bench ran with (its --limit)")
    ap.add_argument("--assets", help="data folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--out", type=Path, help="also write the result here (JSON)")
    args = ap.parse_args(argv)
    try:
        decoders = _decoders(args.decoders)
        versus = args.versus or [next(iter(decoders))]
        for v in versus:
            if v not in decoders:
                raise ValueError(f"--versus {v!r} is none of the decoders {', '.join(decoders)}")
        result = compare(args.measures, args.dataset, args.domains, decoders, versus, args.recognizer, args.limit,
                         args.assets)
    except (OSError, ValueError, KeyError) as e:
        print(f"adapters_paired: {e}", file=sys.stderr)
        return 2
    argv_used = sys.argv[1:] if argv is None else argv
    emit_json(stamp({"command": "python -m facelink.benchmarks.adapters_paired " + shlex.join(argv_used), **result}),
              args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
