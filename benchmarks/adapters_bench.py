"""The face-domain adapters' benchmark: every capture domain's probes against the clean gallery, coded once per rate
point and decoded four ways (base g_s, adapters with gate, the true domain's adapter alone, the α = 0 adapters).

``python -m facelink.benchmarks.adapters_bench --out benchmarks/results/adapters [--limit N] ...`` runs, per capture
domain, the benchmark engine (``facelink bench run --probe-domain DOMAIN`` with the codecs ``facelink-ipr@base``,
``@adapters``, ``@oracle`` (trained domains only) and ``@pixel``; results in ``OUT/<dataset>-<domain>/``), then
decodes the cached probe bytes again to measure PSNR against the domain's crop that was coded, the gate's weights
(per true domain: the heat map ``gate_weights.png``; argmax against the true domain: ``gate_accuracy``) and the
decode time with and without adapters, interleaved in one process (``decode_time_ratio``), and writes
``OUT/summary.json`` with one row per (data set, domain, rate point, recognizer).

``--models`` names the units measured: ``NAME``, a fixed-rate rate point (``face-ipr-q2``), or ``NAME:Q``, a
variable-rate model (``face-v2``) coded at quality ``Q`` in its range ``[0, K-1]`` (``face-v2:2``). A unit's string
is its ``rate_point`` in the rows and the key of every per-rate-point result.
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
VARIANT_KEYS = {"base": "acc_base", "adapters": "acc_adapters", "oracle": "acc_oracle", "pixel": "acc_pixel_adapters",
                "whole": "acc_whole_g_s"}
PSNR_KEYS = {"base": "psnr_base", "adapters": "psnr_adapters", "oracle": "psnr_oracle", "pixel": "psnr_pixel_adapters",
             "whole": "psnr_whole_g_s"}


def parse_unit(unit: str) -> tuple[str, float | None]:
    """A ``--models`` entry → (registry name or folder, quality): ``NAME`` a fixed-rate rate point (quality None),
    ``NAME:Q`` a variable-rate model coded at quality ``Q``. A quality on a rate point, a variable-rate model
    without one or a quality outside the model's range is a SystemExit that says the model's range."""
    from facelink.cloud.serving import variable_rate
    from facelink.shared import registry

    name, sep, q = unit.rpartition(":")
    if not sep:
        name, quality = unit, None
    else:
        try:
            quality = float(q)
        except ValueError:
            raise SystemExit(f"--models {unit!r}: expected NAME or NAME:QUALITY (a number), got quality {q!r}") \
                from None
    try:
        manifest = registry.load(name).manifest
    except registry.UnknownModelError as e:
        raise SystemExit(f"--models {unit!r}: {e}") from None
    qr = registry.quality_range(manifest) if variable_rate.is_variable_rate(manifest) else None
    if qr is None and quality is not None:
        raise SystemExit(f"--models {unit!r}: {name} is a fixed-rate rate point (one rate, no quality range): "
                         f"name it without a quality, --models {name}")
    if qr is not None and quality is None:
        raise SystemExit(f"--models {unit!r}: {name} is a variable-rate model: name a quality in its range "
                         f"[0, {qr.top}], e.g. --models {name}:{qr.default:g}")
    if qr is not None and not (math.isfinite(quality) and 0.0 <= quality <= qr.top):
        raise SystemExit(f"--models {unit!r}: quality {q} is outside {name}'s range [0, {qr.top}]")
    return name, quality


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


# ----------------------------------------------------------------------------------------------------------------
# The batched path: every probe entropy-decoded once, each decoder variant and each recognizer run in batches
# ----------------------------------------------------------------------------------------------------------------
BATCH = 32


def source_landmarks(suite: engine.Suite, keys: list[str]) -> dict[str, np.ndarray | None]:
    """YuNet's largest face on each source image (None: no face), as the engine finds it."""
    det = engine._detector()
    return {k: engine._source_landmarks(det, str(suite.root), k, engine.load_rgb(suite.root / k)) for k in keys}


def clean_crops(suite: engine.Suite, keys: list[str], landmarks: dict) -> dict[str, np.ndarray]:
    """The edge's aligned crops of the source images that have a face."""
    from facelink.shared.alignment import TEMPLATES, align

    t = TEMPLATES[engine.CROP_TEMPLATE]
    return {k: align(engine.load_rgb(suite.root / k), landmarks[k], t) for k in keys if landmarks.get(k) is not None}


def domain_crops(crops: dict[str, np.ndarray], domain: str) -> dict[str, np.ndarray]:
    from facelink.cloud.training.domains import get_domain

    dom = get_domain(domain)
    return {k: dom.apply(c, engine.domain_key(k)) for k, c in crops.items()}


def embed(recognizer: str, images: list[np.ndarray], flip: bool) -> np.ndarray:
    """Embeddings of decoded 112×112 crops, each re-warped to the recognizer's template as the engine does."""
    import cv2

    from facelink.shared.alignment import TEMPLATES, similarity_transform

    r, crop_t = engine._recognizer(recognizer), TEMPLATES[engine.CROP_TEMPLATE]
    if r.template.name != crop_t.name:
        m = similarity_transform(crop_t.points, r.template.points)
        images = [cv2.warpAffine(im, m, (r.template.width, r.template.height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE) for im in images]
    return np.concatenate([r.embed(np.stack(images[i : i + BATCH]), flip=flip) for i in range(0, len(images), BATCH)])


class Variants:
    """A rate point's decoder variants on one set of latents: ``base`` (g_s), ``adapters`` (blended by the gate),
    ``oracle`` (a domain's adapter alone), ``pixel`` (the α = 0 adapters and their gate) and ``whole`` (a whole g_s
    fine-tuned on the domain, where given). Each container is entropy-decoded once (the cloud's exact decoder);
    the variants then run in batches on the same ŷ, as :class:`CloudDecoder` would one by one. ``model``: a
    registry name or folder; a variable-rate model's containers may carry any qualities (each its own)."""

    def __init__(self, model: str, whole: Path | None = None):
        import torch

        from facelink.cloud.serving import adapters, variable_rate
        from facelink.cloud.serving.decoder import CloudDecoder
        from facelink.shared import registry

        self.bundle = registry.load(model)
        self.decoder = CloudDecoder([str(self.bundle.path)], adapters="off", device="cpu")
        synthesis = self.decoder.synthesis(self.bundle.model_id)
        # A variable-rate model (None for a rate point): the decoded latent is the gained one; each container's
        # inverse gain (its quality) turns it into what g_s, the adapters and their gate read.
        self.vr, self.variable_rate = synthesis.vr, variable_rate
        g_s = synthesis.g_s
        entry, M = self.bundle.manifest["adapters"], self.bundle.manifest["M"]
        self.modules = {"base": g_s, "adapters": adapters.load(self.bundle.path / entry["file"], g_s, M).eval()}
        if entry.get("ablation"):
            self.modules["pixel"] = adapters.load(self.bundle.path / entry["ablation"], g_s, M).eval()
        if whole is not None:
            from facelink.cloud.training.train_adapters import load_whole

            self.modules["whole"] = load_whole(whole, self.bundle)[0].eval()
        self.domains = self.modules["adapters"].domains
        self.torch = torch

    def latents(self, datas: list[bytes]) -> tuple[np.ndarray, list]:
        """The entropy-decoded latents (N×M×h×w; a variable-rate model's still gained) and the containers' frames."""
        frames, ys = [], []
        for data in datas:
            frame, _, y = self.decoder.latents(data)
            frames.append(frame)
            ys.append(y)
        return np.stack(ys), frames

    def decode(self, y_hat: np.ndarray, frames: list, oracle: str | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """{variant: N×H×W×3 uint8} and the gate's weights (N×D); ``oracle``: the domain of the oracle variant."""
        torch = self.torch
        out: dict[str, list] = {}
        weights = []
        h, w = frames[0].height, frames[0].width
        if any((f.height, f.width) != (h, w) for f in frames):
            raise ValueError("the batched decode needs crops of one size")
        with torch.inference_mode():
            for i in range(0, len(y_hat), BATCH):
                y = torch.from_numpy(y_hat[i : i + BATCH])
                if self.vr is not None:  # as _Synthesis does: each container's inverse gain before g_s and gate
                    y = torch.cat([self.variable_rate.apply_inverse_gain(self.vr, y[j : j + 1], f.quality)
                                   for j, f in enumerate(frames[i : i + BATCH])])
                runs = {"base": self.modules["base"](y)}
                runs["adapters"], wts = self.modules["adapters"](y)
                weights.append(wts.numpy())
                if oracle in self.domains:
                    forced = torch.zeros(len(y), len(self.domains))
                    forced[:, self.domains.index(oracle)] = 1.0
                    runs["oracle"] = self.modules["adapters"](y, forced)[0]
                if "pixel" in self.modules:
                    runs["pixel"] = self.modules["pixel"](y)[0]
                if "whole" in self.modules:
                    runs["whole"] = self.modules["whole"](y)
                for k, x in runs.items():
                    im = (x.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
                    out.setdefault(k, []).append(im[:, :h, :w])
        return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(weights)


def _measure_path(args, ds: str, domain: str, unit: str) -> Path:
    """Where one (data set, domain, unit)'s measures are kept, keyed by everything that decides them (a
    variable-rate unit's quality too, on the container's grid; a rate point's key is the one it always had)."""
    import hashlib

    from facelink.benchmarks.codecs import _adapters_digest, _model_digest
    from facelink.shared.bitstream import quantize_quality

    model, quality = parse_unit(unit)
    whole = args.whole_runs.get((registry_name(model), domain))
    key = {"v": MEASURE_VERSION, "ds": ds, "limit": args.limit, "model": _model_digest(model),
           "adapters": _adapters_digest(model), "flip": not args.no_flip,
           "recognizers": [[r, args.rec_limit.get(r, args.limit)] for r in args.recognizers],
           "secondary": args.secondary_variants,
           "whole": None if whole is None else hashlib.sha256(whole.read_bytes()).hexdigest()[:16]}
    if quality is not None:
        key["quality"] = quantize_quality(quality)
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = model if quality is None else f"{model}-q{quantize_quality(quality):g}"
    return Path(args.cache).with_name("adapters-measures-v2") / f"{ds}-{domain}-{stem}-{h}.json"


def registry_name(model: str) -> str:
    """The registry name of a model named by name or folder (what whole-g_s runs and training info are keyed by)."""
    from facelink.shared import registry

    return registry.load(model).name


MEASURE_VERSION = 2


def _suites(args, ds: str) -> dict[str, engine.Suite]:
    """The suite of each recognizer (its own pairs per fold; a smaller limit's pairs are a subset of a larger's)."""
    return {r: engine.load_suite(ds, args.rec_limit.get(r, args.limit), args.assets) for r in args.recognizers}


def measure(args, ds: str, domains: list[str], trained: tuple[str, ...]) -> dict:
    """Per (domain, unit: a rate point or a variable-rate model at a quality): bytes, PSNR per variant, gate
    weights and hits, and per (recognizer, variant) the pair scores; also the uncompressed domain's scores. Kept per
    (data set, domain, unit) as JSON, so an interrupted run resumes and a run that adds units measures only those."""
    from facelink.cloud.evaluation.codec import LearnedCodec
    from facelink.shared.alignment import TEMPLATES

    suite = engine.load_suite(ds, args.limit, args.assets)
    suites = _suites(args, ds)
    flip = not args.no_flip
    probes = [suite.keys[i] for i in engine.encoded_indices(suite, "asymmetric")]
    gallery = [suite.keys[i] for i in np.unique(suite.pairs[:, 0])]
    state: dict = {}

    def crops() -> dict:
        if "crops" not in state:
            marks = source_landmarks(suite, sorted(set(probes) | set(gallery)))
            state["crops"] = clean_crops(suite, sorted(set(probes) | set(gallery)), marks)
        return state["crops"]

    def scores_for(rec: str, probe_emb: dict[str, np.ndarray]) -> list:
        sub = suites[rec]
        if ("gallery", rec) not in state:
            g = [k for k in (sub.keys[i] for i in np.unique(sub.pairs[:, 0])) if k in crops()]
            state[("gallery", rec)] = dict(zip(g, embed(rec, [crops()[k] for k in g], flip)))
        gal = state[("gallery", rec)]
        s = [float(np.dot(gal[sub.keys[a]], probe_emb[sub.keys[b]])) if sub.keys[a] in gal and sub.keys[b] in
             probe_emb else None for a, b in sub.pairs]
        return s

    out = {}
    for domain in domains:
        for unit in args.models:
            model, quality = parse_unit(unit)
            kept = _measure_path(args, ds, domain, unit)
            if kept.exists():
                out[(domain, unit)] = json.loads(kept.read_text())
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            dcrops = domain_crops({k: crops()[k] for k in probes if k in crops()}, domain)
            keys = list(dcrops)
            res: dict = {"probes": len(keys), "scores": {}}
            unc_key = ("uncompressed", domain)
            if unc_key not in state:
                state[unc_key] = {}
                for rec in args.recognizers:
                    want = [k for k in keys if k in set(suites[rec].keys)]
                    state[unc_key][rec] = scores_for(rec, dict(zip(want, embed(rec, [dcrops[k] for k in want],
                                                                                    flip))))
            res["scores"]["uncompressed"] = state[unc_key]
            codec = LearnedCodec(model)
            datas = [codec.encode(dcrops[k], TEMPLATES[engine.CROP_TEMPLATE], quality) for k in keys]
            res["bytes_per_face"] = float(np.mean([len(d) for d in datas]))
            variants = Variants(model, args.whole_runs.get((registry_name(model), domain)))
            y_hat, frames = variants.latents(datas)
            images, weights = variants.decode(y_hat, frames, domain if domain in trained else None)
            res["psnr"] = {v: float(np.mean([psnr(im, dcrops[k]) for im, k in zip(ims, keys)]))
                           for v, ims in images.items()}
            res["gate_weights"] = weights.mean(axis=0).tolist()
            res["adapter_domains"] = list(variants.domains)
            res["gate_hits"] = ([bool(variants.domains[int(i)] == domain) for i in weights.argmax(1)]
                                if domain in trained else [])
            for rec in args.recognizers:
                want = [i for i, k in enumerate(keys) if k in set(suites[rec].keys)]
                wanted = (list(images) if rec == args.recognizers[0]
                          else [v for v in images if v in args.secondary_variants])
                for v in wanted:
                    emb = embed(rec, [images[v][i] for i in want], flip)
                    res["scores"].setdefault(v, {})[rec] = scores_for(rec, dict(zip([keys[i] for i in want], emb)))
            res["cpu_seconds"] = round(time.process_time() - c0, 1)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"  {ds} {domain} {unit}: {len(keys)} probes, {res['cpu_seconds']:.0f} CPU s; PSNR "
                  + ", ".join(f"{v} {p:.2f}" for v, p in res["psnr"].items()), flush=True)
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(res))
            out[(domain, unit)] = res
    return out


def accuracy(suite: engine.Suite, scores: list) -> tuple[float, float, list[float]]:
    """10-fold accuracy (mean, fold std, per fold) of pair scores, None (no face) scoring below every pair."""
    from facelink.cloud.evaluation.verification import floor_missing, verification_metrics

    s = np.array([np.nan if v is None else v for v in scores], dtype=np.float64)
    m = verification_metrics(floor_missing(s), suite.same, suite.folds)
    return m.accuracy_mean, m.accuracy_std, m.fold_accuracies


def decode_time_ratio(args, unit: str, domain: str, n: int = 60, repeats: int = 3) -> dict:
    """Decode time with adapters over without: the whole cloud decode of the same containers (entropy decoding
    and synthesis, one container at a time as a server without batching), interleaved in one process, one thread."""
    import torch

    from facelink.cloud.evaluation.codec import LearnedCodec
    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.shared import registry
    from facelink.shared.alignment import TEMPLATES

    model, quality = parse_unit(unit)
    torch.set_num_threads(1)
    ds = args.datasets[0]
    suite = engine.load_suite(ds, args.limit, args.assets)
    keys = [suite.keys[i] for i in engine.encoded_indices(suite, "asymmetric")][: 2 * n]
    crops = domain_crops(clean_crops(suite, keys, source_landmarks(suite, keys)), domain)
    codec = LearnedCodec(model)
    datas = [codec.encode(c, TEMPLATES[engine.CROP_TEMPLATE], quality) for c in list(crops.values())[:n]]
    path = str(registry.load(model).path)
    decoders = {"base": CloudDecoder([path], adapters="off"), "adapters": CloudDecoder([path], adapters="on")}
    for d in decoders.values():
        d.decode(datas[0])  # load the synthesis before timing
    total = {k: 0.0 for k in decoders}
    for _ in range(repeats):
        for data in datas:
            for k, d in decoders.items():
                t0 = time.perf_counter()
                d.decode(data)
                total[k] += time.perf_counter() - t0
    return {"model": unit, "dataset": ds, "probe_domain": domain, "containers": len(datas), "repeats": repeats,
            "base_ms": 1e3 * total["base"] / (len(datas) * repeats),
            "adapters_ms": 1e3 * total["adapters"] / (len(datas) * repeats),
            "ratio": total["adapters"] / total["base"]}


def speedup_check(args, domain: str, trained: tuple[str, ...]) -> dict:
    """The engine's path (each variant a codec: its own entropy decode, decode and embeddings per probe, then a
    second decoding pass for PSNR and the gate) against the batched one, on the same probes, with fresh caches,
    one thread: CPU seconds of each and the largest accuracy and PSNR differences between them."""
    import copy
    import tempfile

    from facelink.cloud.serving.decoder import CloudDecoder
    from facelink.shared import registry

    model = args.models[0]
    if parse_unit(model)[1] is not None:
        raise SystemExit(f"--speedup-check compares against the engine's {args.family}@VARIANT codecs, which code "
                         f"rate points only: give a fixed-rate rate point first in --models, not {model}")
    with tempfile.TemporaryDirectory() as tmp:
        old = copy.copy(args)
        old.models, old.cache, old.out = [model], Path(tmp) / "engine.sqlite", Path(tmp) / "engine-out"
        c0 = time.process_time()
        docs = run_domain(old, domain, trained)
        # the engine path's second pass: decode every cached probe again with and without adapters (PSNR, gate)
        suite = engine.load_suite(args.datasets[0], args.limit, args.assets)
        probes = [suite.keys[i] for i in engine.encoded_indices(suite, "asymmetric")]
        crops = domain_crops(clean_crops(suite, probes, source_landmarks(suite, probes)), domain)
        cond = engine.condition_for(args.datasets[0], "face-crop", get_codec(f"{args.family}@base", [model]), model,
                                    not args.no_flip, engine.CROP_TEMPLATE, domain)
        cache = engine.Cache(old.cache)
        datas = cache.encoded(cond.key, list(crops))
        cache.close()
        path = str(registry.load(model).path)
        base, adapted = CloudDecoder([path], adapters="off"), CloudDecoder([path])
        p_old = {"base": [], "adapters": []}
        for k, data in datas.items():
            p_old["base"].append(psnr(base.decode(data).image, crops[k]))
            p_old["adapters"].append(psnr(adapted.decode(data).image, crops[k]))
        cpu_engine = time.process_time() - c0

        new = copy.copy(args)
        new.models, new.cache = [model], Path(tmp) / "new" / "adapters.sqlite"
        new.secondary_variants = list(VARIANT_KEYS)  # every variant for every recognizer, as the engine does
        c0 = time.process_time()
        unit = measure(new, args.datasets[0], [domain], trained)[(domain, model)]
        cpu_batched = time.process_time() - c0
    suites = _suites(new, args.datasets[0])
    diffs = {}
    for doc in docs:
        for c in doc["codecs"]:
            variant = c["codec"].split("@")[1]
            a_new = accuracy(suites[doc["recognizer"]], unit["scores"][variant][doc["recognizer"]])[0]
            diffs[f"{variant}/{doc['recognizer']}"] = {"engine": c["results"]["accuracy"][0], "batched": a_new}
    worst = max(abs(v["engine"] - v["batched"]) for v in diffs.values())
    psnr_diff = max(abs(float(np.mean(p_old[v])) - unit["psnr"][v]) for v in p_old)
    return {"dataset": args.datasets[0], "domain": domain, "model": model, "limit_pairs_per_fold": args.limit,
            "recognizers": args.recognizers, "flip": not args.no_flip, "probes": unit["probes"],
            "cpu_seconds_engine": round(cpu_engine, 1), "cpu_seconds_batched": round(cpu_batched, 1),
            "speedup": cpu_engine / cpu_batched, "accuracy": diffs, "max_accuracy_difference": worst,
            "max_psnr_difference_db": psnr_diff}


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


def paired_difference(folds_a, folds_b) -> dict:
    """``a`` − ``b`` measured on the same pairs, fold by fold: its mean, its standard deviation over the folds and
    the mean's standard error (what a difference between two decoders is judged by)."""
    diff = np.asarray(folds_a, dtype=float) - np.asarray(folds_b, dtype=float)
    return {"mean": float(diff.mean()), "fold_std": float(diff.std(ddof=1)),
            "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}


def _training(units: list[str]) -> dict:
    """Per unit (its string): the training provenance of its model's adapters (and α = 0 ablation)."""
    from facelink.cloud.serving import adapters
    from facelink.shared import registry

    out = {}
    for m in units:
        b = registry.load(parse_unit(m)[0])
        entry = b.manifest["adapters"]
        runs = {"ipr": entry["file"], "pixel": entry.get("ablation")}
        out[m] = {}
        for kind, name in runs.items():
            if name:
                _, info = adapters.read_config(b.path / name)
                out[m][kind] = {k: info.get(k) for k in ("steps", "cpu_seconds", "cpu_seconds_total", "init_from",
                                                         "lambda", "alpha", "gamma", "images", "holdout_images",
                                                         "holdout_gate_accuracy")}
                out[m][kind]["gate"] = {k: (info.get("config") or {}).get(k) for k in
                                        ("gate_channels", "gate_kernel", "gate_epochs", "freeze_gate")}
                if kind == "ipr":
                    out[m][kind]["gate_cpu_seconds"] = (entry.get("gate_pretraining") or {}).get("cpu_seconds")
    return out


def _whole_info(args) -> dict:
    from facelink.cloud.training.train_adapters import load_whole
    from facelink.shared import registry

    return {f"{m}/{d}": {k: v for k, v in load_whole(p, registry.load(m))[1].items() if k != "config"}
            for (m, d), p in args.whole_runs.items()}


def summarize(args, measures: dict, timing: dict, command: str) -> dict:
    from facelink.cloud.evaluation.provenance import git_state
    from facelink.cloud.serving import adapters
    from facelink.cloud.training import domains as dm
    from facelink.cloud.training.train_adapters import base_synthesis
    from facelink.shared import registry

    rows = []
    for ds, by_unit in measures.items():
        suites = _suites(args, ds)
        for (domain, model), m in by_unit.items():
            for rec in args.recognizers:
                suite = suites[rec]
                acc = {v: accuracy(suite, sc[rec]) for v, sc in m["scores"].items() if rec in sc}
                row = {"dataset": ds, "domain": domain, "rate_point": model, "recognizer": rec,
                       "pairs": int(len(suite.pairs)), "probes": m["probes"], "bytes_per_face": m["bytes_per_face"],
                       "acc_uncompressed_domain": acc["uncompressed"][0]}
                for variant, key in VARIANT_KEYS.items():
                    row[key] = acc[variant][0] if variant in acc else None
                row["fold_std"] = acc["adapters"][1]
                row["fold_std_base"] = acc["base"][1]
                # adapters − base on the same pairs, fold by fold: its spread is what a difference is judged by
                d = paired_difference(acc["adapters"][2], acc["base"][2])
                row["diff_adapters_base"], row["diff_fold_std"], row["diff_se"] = d["mean"], d["fold_std"], d["se"]
                for variant, key in PSNR_KEYS.items():
                    row[key] = m["psnr"].get(variant)
                row["gate_weights"] = dict(zip(m["adapter_domains"], m["gate_weights"]))
                rows.append(row)
    units = [(d, mo, m) for by_unit in measures.values() for (d, mo), m in by_unit.items()]
    hits = [h for _, _, m in units for h in m["gate_hits"]]
    by_domain = {d: float(np.mean([h for dd, _, m in units if dd == d for h in m["gate_hits"]]))
                 for d in dict.fromkeys(d for d, _, m in units if m["gate_hits"])}
    by_rate = {mo: float(np.mean([h for _, mm, m in units if mm == mo for h in m["gate_hits"]]))
               for mo in args.models}
    ratios, by_model = {}, {}
    for unit in args.models:  # looked up by the registry model, keyed by the unit
        model = parse_unit(unit)[0]
        if model not in by_model:
            b = registry.load(model)
            module = adapters.load(b.path / b.manifest["adapters"]["file"], base_synthesis(b), b.manifest["M"])
            by_model[model] = module.params_ratio()
        ratios[unit] = by_model[model]
    adapter_domains = units[0][2]["adapter_domains"]
    heat = {}
    for ds, by_unit in measures.items():
        order = [d for d in dm.DOMAINS if any(dd == d for dd, _ in by_unit)]
        mat = np.array([np.mean([by_unit[(d, m)]["gate_weights"] for m in args.models], axis=0) for d in order])
        name = f"gate_weights_{ds}.png"
        heat_map(mat, order, adapter_domains, args.out / name,
                 f"{ds}: mean gate weight per probe, rate points {', '.join(args.models)}")
        heat[ds] = {"png": name, "rows": order, "columns": adapter_domains, "matrix": mat.tolist()}
    git = git_state()
    return {"schema": "facelink-adapters/2", "command": command, "git_commit": git["commit"], "git_dirty": git["dirty"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "protocol": "face-crop (the edge's 112x112 crop), asymmetric: clean uncompressed gallery, probe in the "
                        "domain, coded once per rate point and entropy-decoded once; the variants decode the same ŷ",
            "limit_pairs_per_fold": args.limit,
            "pairs_per_recognizer": {r: 10 * args.rec_limit.get(r, args.limit) if args.rec_limit.get(
                r, args.limit) else None for r in args.recognizers},
            "secondary_recognizer_variants": args.secondary_variants,
            "flip": not args.no_flip, "recognizers": args.recognizers,
            "rate_points": args.models, "unseen_domain": dm.UNSEEN, "trained_domains": list(dm.TRAINED),
            "gate_accuracy": float(np.mean(hits)) if hits else None, "gate_accuracy_probes": len(hits),
            "gate_accuracy_by_domain": by_domain, "gate_accuracy_by_rate_point": by_rate,
            "params_ratio": max(ratios.values()), "params_ratio_by_rate_point": ratios,
            "decode_time_ratio": timing["ratio"], "decode_time": timing, "gate_heat_map": heat,
            "training": _training(args.models), "whole_g_s": _whole_info(args),
            "bench_cpu_seconds": round(sum(m.get("cpu_seconds", 0.0) for _, _, m in units), 1), "rows": rows}


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


def _db(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def readme(summary: dict) -> str:
    """The summary as a Markdown report (README.md beside summary.json)."""
    pairs = ", ".join(f"{r} {n or 6000}" for r, n in summary["pairs_per_recognizer"].items())
    lines = ["# Face-domain adapters: accuracy, PSNR and gate per capture domain", "",
             f"Made by `{summary['command']}` at commit `{summary['git_commit'][:12]}`"
             f"{' (working tree dirty)' if summary['git_dirty'] else ''}, {summary['created']}.", "",
             f"Protocol: {summary['protocol']}. Pairs (10 folds): {pairs}; recognizers after the first measure the "
             f"variants {', '.join(summary['secondary_recognizer_variants'])}. Flip averaging "
             f"{'on' if summary['flip'] else 'off'}. Unseen domain (no adapter, never trained on): "
             f"`{summary['unseen_domain']}`. Accuracy in %, PSNR in dB against the coded domain crop. "
             "Δ: adapters − base on the same pairs, ± its standard error over the 10 folds (fold std of the "
             "difference / √10); fold std: the adapters' accuracy's over the folds.",
             "", "| data set | domain | rate point | recognizer | pairs | bytes | uncompressed | base | adapters | "
             "oracle | α = 0 | whole g_s | Δ ± se | fold std | PSNR base | adapters | oracle | α = 0 | whole g_s |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        lines.append(f"| {r['dataset']} | {r['domain']} | {r['rate_point']} | {r['recognizer']} | {r['pairs']} | "
                     f"{r['bytes_per_face']:.0f} | {_pct(r['acc_uncompressed_domain'])} | {_pct(r['acc_base'])} | "
                     f"{_pct(r['acc_adapters'])} | {_pct(r['acc_oracle'])} | {_pct(r['acc_pixel_adapters'])} | "
                     f"{_pct(r['acc_whole_g_s'])} | {100 * r['diff_adapters_base']:+.2f} ± "
                     f"{100 * r['diff_se']:.2f} | {_pct(r['fold_std'])} | {_db(r['psnr_base'])} | "
                     f"{_db(r['psnr_adapters'])} | {_db(r['psnr_oracle'])} | {_db(r['psnr_pixel_adapters'])} | "
                     f"{_db(r['psnr_whole_g_s'])} |")
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
    lines += ["Training (one thread each, on two cores shared with other work). Steps and CPU min: the pixel-loss "
              "stage both runs start from plus their own 200 steps, and for the IPR run the gate's pre-training "
              "(the α = 0 run shares it). Held-out gate accuracy: training-set images kept out of all training.", "",
              "| rate point | run | steps | CPU min | λ | α | gate (channels, epochs, frozen) | held-out gate acc. |",
              "|---|---|---:|---:|---:|---:|---|---:|"]
    for m, runs in summary["training"].items():
        for kind, info in runs.items():
            cpu, g, acc = (info.get("cpu_seconds_total") or info.get("cpu_seconds"), info.get("gate") or {},
                           info.get("holdout_gate_accuracy"))
            steps = info.get("steps") + ((info.get("init_from") or {}).get("steps") or 0)
            cpu = None if cpu is None else cpu + (info.get("gate_cpu_seconds") or 0.0)
            lines.append(f"| {m} | {kind} | {steps} | {'—' if cpu is None else f'{cpu / 60:.1f}'} | "
                         f"{info.get('lambda')} | {info.get('alpha')} | {g.get('gate_channels')}, "
                         f"{g.get('gate_epochs')}, {g.get('freeze_gate')} | {_pct(acc)} |")
    return "\n".join(lines) + "\n"


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for kv in items:
        k, sep, v = kv.partition("=")
        if not sep:
            raise SystemExit(f"{what} expects NAME=VALUE, got {kv!r}")
        out[k] = v
    return out


def _whole_runs(paths: list[Path]) -> dict[tuple[str, str], Path]:
    """(rate point, domain) → a whole-g_s fine-tune's file, from run folders (mode: whole, one train domain)."""
    from safetensors import safe_open

    from facelink.cloud.training.train_adapters import WHOLE_FILE, WHOLE_KEY

    out = {}
    for p in paths:
        f = p / WHOLE_FILE if p.is_dir() else p
        with safe_open(str(f), framework="pt") as h:
            info = json.loads((h.metadata() or {})[WHOLE_KEY])
        if len(info.get("train_domains") or []) != 1:
            raise SystemExit(f"{f}: a whole-g_s fine-tune for one domain is needed (train_domains: one)")
        out[(info["model"], info["train_domains"][0])] = f
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelink.benchmarks.adapters_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="result folder (summary.json, README.md, heat maps)")
    ap.add_argument("--datasets", nargs="+", default=["lfw"], choices=engine.DATASETS, help="data sets (default lfw)")
    ap.add_argument("--models", nargs="+", default=["face-ipr-q0", "face-ipr-q2", "face-ipr-q4"],
                    help="units with adapters installed: NAME (a fixed-rate rate point) or NAME:Q (a variable-rate "
                         "model at quality Q in [0, K-1], e.g. face-v2:0 face-v2:2 face-v2:4)")
    ap.add_argument("--recognizers", nargs="+", default=["mobilefacenet", "sface"],
                    help="recognizers; the first measures every variant, the others --secondary-variants")
    ap.add_argument("--secondary-variants", nargs="+", default=["base", "adapters"], choices=list(VARIANT_KEYS),
                    help="variants the recognizers after the first measure (default base adapters: CPU)")
    ap.add_argument("--recognizer-limit", nargs="+", default=[], metavar="NAME=N",
                    help="pairs per fold for a recognizer (a subset of --limit's pairs; default --limit)")
    ap.add_argument("--whole", nargs="+", type=Path, default=[], metavar="RUN",
                    help="whole-g_s fine-tune runs (facelink train-adapters run --set mode=whole "
                         "train_domains=[D]): the whole g_s variant for their rate point and domain")
    ap.add_argument("--domains", nargs="+", default=None, help="probe domains (default: all, the unseen one included)")
    ap.add_argument("--limit", type=int, default=None, help="pairs per fold (default: all 600)")
    ap.add_argument("--no-flip", action="store_true", help="embed without flip averaging (saves CPU)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache file whose folder keeps the measures (default runs/bench/adapters.sqlite)")
    ap.add_argument("--measure-only", action="store_true",
                    help="fill the measures' cache, write no summary (a later run with every rate point then only "
                         "reads them)")
    ap.add_argument("--speedup-check", action="store_true",
                    help="time the engine's per-variant path against this batched one on --models[0], --domains[0] "
                         "and --limit with fresh caches, compare their accuracies, write OUT/speedup.json and stop")
    ap.add_argument("--family", default=FAMILY, help=f"the engine's learned codec family (--speedup-check; "
                                                     f"default {FAMILY})")
    ap.add_argument("--assets", default=None, help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    args = ap.parse_args(argv)
    from facelink.cloud.training import domains as dm
    from facelink.shared.paths import runs_dir

    for unit in args.models:
        parse_unit(unit)  # a wrong unit stops the run before any measuring
    args.cache = args.cache or runs_dir() / "bench" / "adapters.sqlite"
    args.rec_limit = {k: int(v) for k, v in _pairs(args.recognizer_limit, "--recognizer-limit").items()}
    args.whole_runs = _whole_runs(args.whole)
    domains = args.domains or list(dm.DOMAINS)
    for d in domains:
        dm.get_domain(d)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m facelink.benchmarks.adapters_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    engine._init_worker(1)
    if args.speedup_check:
        result = speedup_check(args, domains[0], dm.TRAINED)
        (args.out / "speedup.json").write_text(json.dumps({"command": command, **result}, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    measures = {ds: measure(args, ds, domains, dm.TRAINED) for ds in args.datasets}
    if args.measure_only:
        return 0
    timing = decode_time_ratio(args, args.models[len(args.models) // 2], domains[0])
    summary = summarize(args, measures, timing, command)
    (args.out / "summary.json").write_text(json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n")
    (args.out / "README.md").write_text(readme(_finite(summary)))
    print(f"wrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
