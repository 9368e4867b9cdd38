"""The face-domain adapters' benchmark: every capture domain's probes against the clean gallery, coded once per rate
point and decoded four ways (base g_s, adapters with gate, the true domain's adapter alone, the α = 0 adapters).

``python -m facelink.benchmarks.adapters_bench --out benchmarks/results/adapters [--limit N] ...`` runs, per capture
domain, the benchmark engine (``facelink bench run --probe-domain DOMAIN`` with the codecs ``facelink-ipr@base``,
``@adapters``, ``@oracle`` (trained domains only) and ``@pixel``; results in ``OUT/<dataset>-<domain>/``), then
decodes the cached probe bytes again to measure PSNR against the domain's crop that was coded, the gate's weights
(per true domain: the heat map ``gate_weights.png``; argmax against the true domain: ``gate_accuracy``) and the
decode time with and without adapters, interleaved in one process (``decode_time_ratio``), and writes
``OUT/summary.json`` with one row per (data set, domain, rate point, recognizer).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from facelink.benchmarks import bench, engine
from facelink.benchmarks.codecs import AdaptedFacelinkCodec, get_codec
from facelink.benchmarks.metrics import psnr

FAMILY = "facelink-ipr"  # the learned family whose rate points carry the adapters (--family)
VARIANT_KEYS = {"base": "acc_base", "adapters": "acc_adapters", "oracle": "acc_oracle", "pixel": "acc_pixel_adapters"}


def _codecs(family: str, models: list[str], domain: str, trained: tuple[str, ...]) -> list:
    variants = [v for v in AdaptedFacelinkCodec.VARIANTS if v != "oracle" or domain in trained]
    return [get_codec(f"{family}{AdaptedFacelinkCodec.SEP}{v}", models) for v in variants]


def run_domain(args, domain: str, trained: tuple[str, ...]) -> list[dict]:
    """The engine's run for one probe domain; its result documents (also written under OUT/<dataset>-<domain>)."""
    cfg = engine.RunConfig(datasets=args.datasets, protocols=["face-crop"], recognizers=args.recognizers,
                           codecs=_codecs(args.family, args.models, domain, trained), settings=["asymmetric"],
                           limit=args.limit,
                           flip=not args.no_flip, cache=args.cache, assets=args.assets, progress=False,
                           reference=(f"{args.family}@base", args.models[0]), probe_domain=domain)
    for c in engine.all_codecs(cfg):
        c.check_available()
    suites = {d: engine.load_suite(d, cfg.limit, cfg.assets) for d in cfg.datasets}
    stats = engine.compute(cfg, suites)
    prov = bench.provenance(cfg, suites, stats, engine.all_codecs(cfg))
    docs = bench.build_docs(cfg, suites, prov)
    for ds in cfg.datasets:
        bench.write_outputs([d for d in docs if d["dataset"] == ds], args.out / f"{ds}-{domain}",
                            f"face-domain adapters: {ds} probes in domain {domain}")
    return docs


def _probe_crops(suite: engine.Suite, keys: list[str], domain: str) -> dict[str, np.ndarray]:
    """The crops the edge coded for each probe: aligned on the source's landmarks, then the domain's transform."""
    from facelink.cloud.training.domains import get_domain
    from facelink.shared.alignment import TEMPLATES, align
    from facelink.shared.detection import YuNet

    det, dom, t = YuNet(), get_domain(domain), TEMPLATES[engine.CROP_TEMPLATE]
    out = {}
    for k in keys:
        src = engine.load_rgb(suite.root / k)
        d = det.largest(src, rgb=True)
        if d is not None:
            out[k] = dom.apply(align(src, d.landmarks, t), engine.domain_key(k))
    return out


def _measures_path(args, ds: str, model: str, domain: str) -> Path:
    """Where one (data set, rate point, domain)'s decode measures are kept, keyed by what decides them: the probe
    bytes' condition and the adapters' files."""
    import hashlib

    from facelink.benchmarks.codecs import _adapters_digest

    cond = engine.condition_for(ds, "face-crop", get_codec(f"{args.family}@base", args.models), model,
                                not args.no_flip, engine.CROP_TEMPLATE, domain)
    key = hashlib.sha256(f"{cond.key}:{args.limit}:{_adapters_digest(model)}".encode()).hexdigest()[:16]
    return Path(args.cache).with_name("adapters-measures") / f"{ds}-{domain}-{model}-{key}.json"


def decode_measures(args, domain: str, trained: tuple[str, ...]) -> dict:
    """Per (data set, rate point): mean PSNR of base and adapters decodes against the coded crops, the gate's mean
    weights and how often its argmax is the true domain; the probe bytes as the benchmark cached them. Kept beside
    the engine's cache, so a run that adds rate points measures only those."""
    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.shared import registry

    cache = engine.Cache(args.cache)
    base_codec = get_codec(f"{args.family}@base", args.models)
    out = {}
    for ds in args.datasets:
        suite = engine.load_suite(ds, args.limit, args.assets)
        probes = [suite.keys[i] for i in engine.encoded_indices(suite, "asymmetric")]
        crops = None
        for model in args.models:
            kept = _measures_path(args, ds, model, domain)
            if kept.exists():
                out[(ds, model)] = json.loads(kept.read_text())
                continue
            crops = crops if crops is not None else _probe_crops(suite, probes, domain)
            cond = engine.condition_for(ds, "face-crop", base_codec, model, not args.no_flip, engine.CROP_TEMPLATE,
                                        domain)
            datas = cache.encoded(cond.key, list(crops))
            path = str(registry.load(model).path)
            base, adapted = CloudDecoder([path], adapters="off"), CloudDecoder([path])
            p_base, p_ad, weights, hits = [], [], [], []
            for k, data in datas.items():
                b, a = base.decode(data), adapted.decode(data)
                p_base.append(psnr(b.image, crops[k]))
                p_ad.append(psnr(a.image, crops[k]))
                w = np.array(list(a.domain_weights.values()))
                weights.append(w)
                if domain in trained:
                    hits.append(list(a.domain_weights)[int(np.argmax(w))] == domain)
            out[(ds, model)] = {"psnr_base": float(np.mean(p_base)), "psnr_adapters": float(np.mean(p_ad)),
                                "gate_weights": np.mean(weights, axis=0).tolist(), "gate_hits": hits,
                                "probes_decoded": len(datas), "adapter_domains": list(adapted.domains(
                                    registry.load(model).model_id))}
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(out[(ds, model)]))
    cache.close()
    return out


def decode_time_ratio(args, model: str, domain: str, n: int = 60, repeats: int = 3) -> dict:
    """Decode time with adapters over without, the same containers interleaved in one process, one thread."""
    import torch

    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.shared import registry

    torch.set_num_threads(1)
    cache = engine.Cache(args.cache)
    base_codec = get_codec(f"{args.family}@base", args.models)
    ds = args.datasets[0]
    cond = engine.condition_for(ds, "face-crop", base_codec, model, not args.no_flip, engine.CROP_TEMPLATE, domain)
    suite = engine.load_suite(ds, args.limit, args.assets)
    datas = list(cache.encoded(cond.key, suite.keys).values())[:n]
    cache.close()
    path = str(registry.load(model).path)
    decoders = {"base": CloudDecoder([path], adapters="off"), "adapters": CloudDecoder([path])}
    for d in decoders.values():
        d.decode(datas[0])  # load the synthesis before timing
    total = {k: 0.0 for k in decoders}
    for _ in range(repeats):
        for data in datas:
            for k, d in decoders.items():
                t0 = time.perf_counter()
                d.decode(data)
                total[k] += time.perf_counter() - t0
    return {"model": model, "dataset": ds, "probe_domain": domain, "containers": len(datas), "repeats": repeats,
            "base_ms": 1e3 * total["base"] / (len(datas) * repeats),
            "adapters_ms": 1e3 * total["adapters"] / (len(datas) * repeats),
            "ratio": total["adapters"] / total["base"]}


def heat_map(matrix: np.ndarray, rows: list[str], cols: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2, 0.6 * len(rows) + 1.6))
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("adapter")
    ax.set_ylabel("true domain of the probe")
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w" if matrix[i, j] < 0.6 else "k")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _training(models: list[str]) -> dict:
    from facelink.cloud.serving import adapters
    from facelink.shared import registry

    out = {}
    for m in models:
        b = registry.load(m)
        entry = b.manifest["adapters"]
        runs = {"ipr": entry["file"], "pixel": entry.get("ablation")}
        out[m] = {}
        for kind, name in runs.items():
            if name:
                _, info = adapters.read_config(b.path / name)
                out[m][kind] = {k: info.get(k) for k in ("steps", "cpu_seconds", "lambda", "alpha", "gamma", "images",
                                                         "holdout_images", "holdout_gate_accuracy")}
                out[m][kind]["gate"] = {k: (info.get("config") or {}).get(k) for k in
                                        ("gate_channels", "gate_kernel", "gate_epochs", "freeze_gate")}
                if kind == "ipr":
                    out[m][kind]["gate_cpu_seconds"] = (entry.get("gate_pretraining") or {}).get("cpu_seconds")
    return out


def summarize(args, docs_by_domain: dict, measures: dict, timing: dict, command: str) -> dict:
    from facelink.cloud.evaluation.provenance import git_state
    from facelink.cloud.serving import adapters
    from facelink.cloud.training import domains as dm
    from facelink.cloud.training.train_adapters import base_synthesis
    from facelink.shared import registry

    rows = []
    for domain, docs in docs_by_domain.items():
        for doc in docs:
            curves = {c["codec"].split("@")[1]: c["results"] for c in doc["codecs"]}
            for i, model in enumerate(curves["base"]["quality"]):
                m = measures[domain][(doc["dataset"], model)]
                row = {"dataset": doc["dataset"], "domain": domain, "rate_point": model,
                       "recognizer": doc["recognizer"], "pairs": doc["pairs"],
                       "bytes_per_face": curves["base"]["bytes_per_face"][i],
                       "acc_uncompressed_domain": doc["uncompressed"]["accuracy"]}
                for variant, key in VARIANT_KEYS.items():
                    row[key] = curves[variant]["accuracy"][i] if variant in curves else None
                row["fold_std"] = curves["adapters"]["accuracy_std"][i]
                row["fold_std_base"] = curves["base"]["accuracy_std"][i]
                row["psnr_base"], row["psnr_adapters"] = m["psnr_base"], m["psnr_adapters"]
                row["gate_weights"] = dict(zip(m["adapter_domains"], m["gate_weights"]))
                rows.append(row)
    hits = [h for domain in measures for m in measures[domain].values() for h in m["gate_hits"]]
    by_domain = {d: float(np.mean([h for m in measures[d].values() for h in m["gate_hits"]]))
                 for d in measures if any(m["gate_hits"] for m in measures[d].values())}
    by_rate = {model: float(np.mean([h for d in measures for (_, mm), m in measures[d].items() if mm == model
                                     for h in m["gate_hits"]])) for model in args.models}
    ratios = {}
    for model in args.models:
        b = registry.load(model)
        module = adapters.load(b.path / b.manifest["adapters"]["file"], base_synthesis(b), b.manifest["M"])
        ratios[model] = module.params_ratio()
    adapter_domains = next(iter(next(iter(measures.values())).values()))["adapter_domains"]
    heat = {}
    for ds in args.datasets:
        order = [d for d in dm.DOMAINS if d in measures]
        mat = np.array([np.mean([measures[d][(ds, m)]["gate_weights"] for m in args.models], axis=0) for d in order])
        name = f"gate_weights_{ds}.png"
        heat_map(mat, order, adapter_domains, args.out / name,
                 f"{ds}: mean gate weight per probe, rate points {', '.join(args.models)}")
        heat[ds] = {"png": name, "rows": order, "columns": adapter_domains, "matrix": mat.tolist()}
    git = git_state()
    return {"schema": "facelink-adapters/1", "command": command, "git_commit": git["commit"], "git_dirty": git["dirty"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "protocol": "face-crop (the edge's 112x112 crop), asymmetric: clean uncompressed gallery, probe in the "
                        "domain, coded once per rate point; the variants decode the same bytes",
            "limit_pairs_per_fold": args.limit, "flip": not args.no_flip, "recognizers": args.recognizers,
            "rate_points": args.models, "unseen_domain": dm.UNSEEN, "trained_domains": list(dm.TRAINED),
            "gate_accuracy": float(np.mean(hits)) if hits else None, "gate_accuracy_probes": len(hits),
            "gate_accuracy_by_domain": by_domain, "gate_accuracy_by_rate_point": by_rate,
            "params_ratio": max(ratios.values()), "params_ratio_by_rate_point": ratios,
            "decode_time_ratio": timing["ratio"], "decode_time": timing, "gate_heat_map": heat,
            "training": _training(args.models), "rows": rows}


def _finite(x):
    """NaN (a result that could not be measured) as null: summary.json stays strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def readme(summary: dict) -> str:
    """The summary as a Markdown report (README.md beside summary.json)."""
    lines = ["# Face-domain adapters: accuracy, PSNR and gate per capture domain", "",
             f"Made by `{summary['command']}` at commit `{summary['git_commit'][:12]}`"
             f"{' (working tree dirty)' if summary['git_dirty'] else ''}, {summary['created']}.", "",
             f"Protocol: {summary['protocol']}. Pairs per fold: {summary['limit_pairs_per_fold'] or 'all'} "
             f"(10 folds); flip averaging {'on' if summary['flip'] else 'off'}. Unseen domain (no adapter, never "
             f"trained on): `{summary['unseen_domain']}`. Accuracy in %, PSNR in dB against the coded domain crop.",
             "", "| data set | domain | rate point | recognizer | bytes | uncompressed | base | adapters | oracle | "
             "α = 0 adapters | adapters − base | fold std | PSNR base | PSNR adapters |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        delta = (None if r["acc_adapters"] is None or r["acc_base"] is None else r["acc_adapters"] - r["acc_base"])
        lines.append(f"| {r['dataset']} | {r['domain']} | {r['rate_point']} | {r['recognizer']} | "
                     f"{r['bytes_per_face']:.0f} | {_pct(r['acc_uncompressed_domain'])} | {_pct(r['acc_base'])} | "
                     f"{_pct(r['acc_adapters'])} | {_pct(r['acc_oracle'])} | {_pct(r['acc_pixel_adapters'])} | "
                     f"{'—' if delta is None else f'{100 * delta:+.2f}'} | {_pct(r['fold_std'])} | "
                     f"{r['psnr_base']:.2f} | {r['psnr_adapters']:.2f} |")
    t = summary["decode_time"]
    lines += ["", f"Gate accuracy (trained domains, test probes, argmax of the gate): "
                  f"{_pct(summary['gate_accuracy'])} % over {summary['gate_accuracy_probes']} probe decodes; by domain "
                  + ", ".join(f"{d} {_pct(a)} %" for d, a in summary.get("gate_accuracy_by_domain", {}).items())
                  + "; by rate point "
                  + ", ".join(f"{m} {_pct(a)} %" for m, a in summary.get("gate_accuracy_by_rate_point", {}).items())
                  + ".",
              f"Adapters + gate parameters over g_s: {100 * summary['params_ratio']:.2f} % (largest over the rate "
              "points).",
              f"Decode time with adapters over without (whole cloud decode, {t['containers']} containers × "
              f"{t['repeats']}, interleaved, one thread, {t['model']}): {t['ratio']:.3f} "
              f"({t['adapters_ms']:.1f} / {t['base_ms']:.1f} ms on a shared machine).", ""]
    for ds, h in summary["gate_heat_map"].items():
        lines += [f"Mean gate weights, {ds} (rows: true domain; columns: adapter):", "",
                  f"![gate weights]({h['png']})", ""]
    lines += ["Training (one thread each, on two cores shared with other work). CPU min: the adapters' steps, plus "
              "for the IPR run the gate's pre-training (the α = 0 run pre-trains the same gate: same data and "
              "seed). Held-out gate accuracy: training-set images kept out of all training.", "",
              "| rate point | run | steps | CPU min | λ | α | gate (channels, epochs, frozen) | held-out gate acc. |",
              "|---|---|---:|---:|---:|---:|---|---:|"]
    for m, runs in summary["training"].items():
        for kind, info in runs.items():
            cpu, g, acc = info.get("cpu_seconds"), info.get("gate") or {}, info.get("holdout_gate_accuracy")
            cpu = None if cpu is None else cpu + (info.get("gate_cpu_seconds") or 0.0)
            lines.append(f"| {m} | {kind} | {info.get('steps')} | {'—' if cpu is None else f'{cpu / 60:.1f}'} | "
                         f"{info.get('lambda')} | {info.get('alpha')} | {g.get('gate_channels')}, "
                         f"{g.get('gate_epochs')}, {g.get('freeze_gate')} | {_pct(acc)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.adapters_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="result folder (summary.json, heat maps, per-domain runs)")
    ap.add_argument("--datasets", nargs="+", default=["lfw"], choices=engine.DATASETS, help="data sets (default lfw)")
    ap.add_argument("--models", nargs="+", default=["face-ipr-q0", "face-ipr-q2", "face-ipr-q4"],
                    help="rate points with adapters installed")
    ap.add_argument("--family", default=FAMILY, help=f"learned codec family of the rate points (default {FAMILY})")
    ap.add_argument("--recognizers", nargs="+", default=["mobilefacenet", "sface"], help="recognizers")
    ap.add_argument("--domains", nargs="+", default=None, help="probe domains (default: all, the unseen one included)")
    ap.add_argument("--limit", type=int, default=None, help="pairs per fold (default: all 600)")
    ap.add_argument("--no-flip", action="store_true", help="embed without flip averaging (saves CPU)")
    ap.add_argument("--cache", type=Path, default=None, help="engine cache (default runs/bench/adapters.sqlite)")
    ap.add_argument("--measure-only", action="store_true",
                    help="fill the engine's and the decode measures' caches, write no summary (a later run with "
                         "every rate point then only reads them)")
    ap.add_argument("--assets", default=None, help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    args = ap.parse_args(argv)
    from facelink.cloud.training import domains as dm
    from facelink.shared.paths import runs_dir

    args.cache = args.cache or runs_dir() / "bench" / "adapters.sqlite"
    domains = args.domains or list(dm.DOMAINS)
    for d in domains:
        dm.get_domain(d)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m facelink.benchmarks.adapters_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    engine._init_worker(1)
    docs, measures = {}, {}
    for d in domains:
        print(f"== probe domain {d}", flush=True)
        docs[d] = run_domain(args, d, dm.TRAINED)
        measures[d] = decode_measures(args, d, dm.TRAINED)
    if args.measure_only:
        return 0
    timing = decode_time_ratio(args, args.models[len(args.models) // 2], domains[0])
    summary = summarize(args, docs, measures, timing, command)
    (args.out / "summary.json").write_text(json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n")
    (args.out / "README.md").write_text(readme(_finite(summary)))
    print(f"wrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
