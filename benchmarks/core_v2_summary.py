"""``facelink bench core-v2-summary``: the variable-rate codec (core v2) against HEVC, AVIF, JPEG XL and the committed
``face-ipr`` ladder, from ``facelink bench run`` result folders, in one JSON file with a plot.

Per data set × protocol × recognizer × setting the folders hold (each codec taken from the first folder that has it
on the same pairs), for core v2, HEVC and the ladder alike:

- ``bd_rate_vs_hevc``: accuracy BD-rate in bytes per face against HEVC (``facelink bench compare``), in percent;
- ``bytes_within_half_point``: bytes per face where the curve comes within half a point of uncompressed;
- ``parity_pct_of_hevc_crf23``: the bytes at which it reaches HEVC CRF 23's accuracy, in percent of HEVC CRF 23's
  bytes (null if not reached);
- ``best_accuracy`` (and its bytes) and the curve itself; ``uncompressed_accuracy`` once per row;

and core v2 against each anchor (HEVC, AVIF, JPEG XL, the ladder): BD rate and BD accuracy at equal bytes. Per data
set on face crops: PSNR of the decoded probe crops against the crops the edge coded, from the bytes the benchmark
cached, as a (bytes, PSNR) curve for core v2 and HEVC, ``bd_psnr_vs_hevc_db`` and the PSNR at 0.6 bpp. ``targets``
puts each figure beside the target it answers to, with its distance; ``model`` says which weights were measured
(the exported model's training step) and ``training`` where the training stands (``progress.json``).

  FACELINK_MODELS_PATH=runs/models facelink bench core-v2-summary benchmarks/results/core-v2/lfw-crop-limit10 \\
      --out benchmarks/results/core-v2/summary.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facelink.benchmarks import compare, engine, metrics
from facelink.benchmarks.bench import NEAR_UNCOMPRESSED, _default_cache, floats
from facelink.benchmarks.results_io import read_results

CODEC = "facelink-v2"
HEVC = "hevc"
LADDER = "facelink-ipr"
ANCHORS = (HEVC, "avif", "jxl", LADDER)
PARITY_CRF = 23
ROI = "+roi"
PSNR_BPP = 0.6  # the pixel-fidelity target's operating point (bits per crop pixel)
PSNR_IMAGES = 400  # probe crops decoded per data set and setting for the PSNR curves (the first, in protocol order)
SCHEMA = "facelink-core-v2-summary/1"
# The issue's targets: (figure, threshold, "max" = at most / "min" = at least, per data set where it differs).
TARGETS = {"bd_psnr_vs_hevc_db": (0.5, "min"), "psnr_at_0.6_bpp_db": (35.8, "min"),
           "bytes_within_half_point": ({"lfw": 300.0, "celeba": 450.0}, "max"),
           "bd_rate_vs_hevc": (-35.0, "max"), "parity_pct_of_hevc_crf23": (50.0, "max")}


class SummaryError(ValueError):
    pass


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (what a committed summary records)."""
    from facelink.shared.paths import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT)) if REPO_ROOT else str(path)
    except ValueError:
        return str(path)


def _none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


# --------------------------------------------------------------------------------------------------------------
# Locating curves
# --------------------------------------------------------------------------------------------------------------
def _index(folders: list[Path]) -> dict[tuple, list[tuple[Path, dict]]]:
    """(dataset, recognizer, protocol, setting) → [(folder, doc)] in the order of ``folders``."""
    out: dict[tuple, list[tuple[Path, dict]]] = {}
    for folder in folders:
        docs = read_results(folder)
        if not docs:
            raise SummaryError(f"{folder}: no benchmark results (facelink-bench JSON files) there")
        for d in docs:
            out.setdefault((d["dataset"], d["recognizer"], d["protocol"], d["setting"]), []).append((folder, d))
    return out


def _has(doc: dict, codec: str) -> bool:
    return any(c["codec"] == codec for c in doc["codecs"])


def _locate(entries: list[tuple[Path, dict]], pairs: int, protocol: str, name: str) -> tuple[Path, str] | None:
    """The first folder with codec ``name`` on ``pairs`` pairs; on full frames the codec behind the edge's ROI
    (``<name>+roi``) where a folder has it."""
    names = [name + ROI, name] if protocol == "full-frame" and not name.endswith(ROI) else [name]
    for n in names:
        for folder, doc in entries:
            if doc["pairs"] == pairs and _has(doc, n):
                return folder, n
    return None


def _curve(entries, spec: tuple[Path, str]) -> dict:
    doc = next(d for f, d in entries if f == spec[0])
    return next(c["results"] for c in doc["codecs"] if c["codec"] == spec[1])


# --------------------------------------------------------------------------------------------------------------
# Figures of one curve
# --------------------------------------------------------------------------------------------------------------
def curve_figures(curve: dict, uncompressed: float, hevc_ref: tuple[float, float] | None) -> dict:
    """The per-codec figures of one (quality, bytes per face, accuracy) curve; ``hevc_ref``: HEVC CRF 23's (bytes,
    accuracy) on the same pairs."""
    rate, acc = floats(curve["bytes_per_face"]), floats(curve["accuracy"])
    half, half_status = metrics.rate_at_quality(rate, acc, uncompressed - NEAR_UNCOMPRESSED)
    out = {"bytes_within_half_point": _none(half), "bytes_within_half_point_status": half_status}
    if hevc_ref is not None:
        p = metrics.bpp_at_parity(rate, acc, hevc_ref[0], hevc_ref[1])
        out.update({"parity_pct_of_hevc_crf23": _none(p.percent_of_reference),
                    "parity_bytes": _none(p.bpp), "parity_status": p.status})
    else:
        out.update({"parity_pct_of_hevc_crf23": None, "parity_bytes": None, "parity_status": "no_hevc_crf23"})
    finite = [i for i, a in enumerate(acc) if math.isfinite(a)]
    best = max(finite, key=lambda i: (acc[i], -rate[i])) if finite else None
    out.update({"best_accuracy": None if best is None else acc[best],
                "best_accuracy_bytes": None if best is None else _none(rate[best]),
                "curve": [{"quality": q, "bytes_per_face": _none(r), "accuracy": _none(a)}
                          for q, r, a in zip(curve["quality"], rate, acc)]})
    return out


def _hevc_reference(curve: dict) -> tuple[float, float] | None:
    for q, r, a in zip(curve["quality"], floats(curve["bytes_per_face"]), floats(curve["accuracy"])):
        if q == PARITY_CRF and math.isfinite(r) and math.isfinite(a):
            return r, a
    return None


def _compared(anchor: tuple[Path, str], test: tuple[Path, str], key: tuple) -> dict | None:
    """``facelink bench compare`` of two curves, the comparison of ``key`` (dataset, recognizer, protocol,
    setting)."""
    result = compare.compare(anchor, test)
    row = next((c for c in result["comparisons"]
                if (c["dataset"], c["recognizer"], c["protocol"], c["setting"]) == key), None)
    if row is None:
        return None
    return {"anchor": f"{anchor[0]}:{anchor[1]}", "bd_rate_bytes_percent": row["bd_rate_bytes_percent"],
            "bd_accuracy_points": row["bd_accuracy_points"]}


def row_summary(key: tuple, entries: list[tuple[Path, dict]], codec: str, ladder: str,
                anchors: tuple[str, ...]) -> dict | None:
    """One data set × recognizer × protocol × setting: core v2, HEVC and the ladder, and core v2 against each
    anchor. None where no folder has core v2."""
    first = next(((f, d) for f, d in entries if _locate([(f, d)], d["pairs"], key[2], codec)), None)
    if first is None:
        return None
    pairs = first[1]["pairs"]
    v2 = _locate(entries, pairs, key[2], codec)
    specs = {"v2": v2, "hevc": _locate(entries, pairs, key[2], HEVC), "ladder": _locate(entries, pairs, key[2], ladder)}
    plain_hevc = _locate(entries, pairs, "", HEVC)  # the parity reference: HEVC CRF 23 itself, never behind the ROI
    hevc_ref = _hevc_reference(_curve(entries, plain_hevc)) if plain_hevc else None
    doc = first[1]
    unc = doc["uncompressed"]["accuracy"]
    row = {"dataset": key[0], "recognizer": key[1], "protocol": key[2], "setting": key[3], "pairs": pairs,
           "limit_pairs_per_fold": doc.get("limit_pairs_per_fold"), "flip": doc.get("flip"),
           "uncompressed_accuracy": unc,
           "hevc_crf23": None if hevc_ref is None else {"bytes_per_face": hevc_ref[0], "accuracy": hevc_ref[1]}}
    for role, spec in specs.items():
        if spec is None:
            row[role] = None
            continue
        figures = curve_figures(_curve(entries, spec), unc, hevc_ref)
        bd = None
        if specs["hevc"] is not None:
            bd = 0.0 if spec == specs["hevc"] else (_compared(specs["hevc"], spec, key) or {}).get(
                "bd_rate_bytes_percent")
        row[role] = {"codec": spec[1], "results": str(spec[0]), "bd_rate_vs_hevc": bd, **figures}
    row["v2_against"] = {}
    for name in anchors:
        spec = _locate(entries, pairs, key[2], name)
        if spec is not None:
            row["v2_against"][spec[1]] = _compared(spec, v2, key)
    return row


# --------------------------------------------------------------------------------------------------------------
# PSNR on face crops, from the cached bytes
# --------------------------------------------------------------------------------------------------------------
def _source_crops(suite: engine.Suite, keys: list[str], template: str) -> dict[str, np.ndarray]:
    """The crops the face-crop protocol coded: each source's largest face aligned to ``template``."""
    from facelink.shared.alignment import TEMPLATES, align
    from facelink.shared.detection import YuNet

    det, t = YuNet(), TEMPLATES[template]
    out = {}
    for k in keys:
        src = engine.load_rgb(suite.root / k)
        d = det.largest(src, rgb=True)
        if d is not None:
            out[k] = align(src, d.landmarks, t)
    return out


def psnr_curves(doc: dict, codecs: dict[str, str], cache_path: Path, max_images: int = PSNR_IMAGES,
                assets=None) -> dict:
    """Per codec (role → codec name in ``doc``): mean bytes and PSNR per quality over the first ``max_images``
    probe crops whose bytes the cache holds at every quality, decoded again; ``doc`` a face-crop result."""
    from facelink.benchmarks.codecs import get_codec

    if doc["protocol"] != "face-crop":
        raise SummaryError("PSNR is measured on face crops only")
    config = doc["provenance"]["config"]
    template = config.get("crop_template", engine.CROP_TEMPLATE)
    suite = engine.load_suite(doc["dataset"], doc.get("limit_pairs_per_fold"), assets)
    probes = [suite.keys[i] for i in engine.encoded_indices(suite, doc["setting"])]
    cache = engine.Cache(cache_path)
    out, crops = {}, None
    try:
        for role, name in codecs.items():
            entry = next(c for c in doc["codecs"] if c["codec"] == name)
            codec = get_codec(name, entry["results"]["quality"])
            datas = {}
            for q in codec.qualities:
                cond = engine.condition_for(doc["dataset"], "face-crop", codec, q, bool(doc.get("flip")), template)
                datas[q] = cache.encoded(cond.key, probes)
            keys = [k for k in probes if all(k in d for d in datas.values())][:max_images]
            if not keys:
                out[role] = {"codec": name, "images": 0, "curve": None,
                             "note": f"the cache {cache_path} holds no bytes of these probes"}
                continue
            crops = crops if crops is not None else _source_crops(suite, probes, template)
            keys = [k for k in keys if k in crops]
            curve = []
            for q in tqdm(codec.qualities, desc=f"PSNR: decoding {len(keys)} {doc['dataset']} crops of {name}",
                          unit="quality"):
                decoded = codec.decode_many([datas[q][k] for k in keys])
                values = [metrics.psnr(im, crops[k]) for im, k in zip(decoded, keys)]
                nbytes = np.mean([codec.bits(datas[q][k]) / 8 for k in keys])
                pixels = np.mean([crops[k].shape[0] * crops[k].shape[1] for k in keys])
                curve.append({"quality": q, "bytes_per_face": float(nbytes), "bpp": float(8 * nbytes / pixels),
                              "psnr_db": float(np.mean(values))})
            out[role] = {"codec": name, "images": len(keys), "curve": curve}
    finally:
        cache.close()
    return out


def psnr_figures(curves: dict) -> dict:
    """BD-PSNR of core v2 against HEVC at equal bytes and each curve's PSNR at :data:`PSNR_BPP`."""
    out = {}
    for role, c in curves.items():
        pts = c.get("curve") or []
        out[f"{role}_psnr_at_{PSNR_BPP}_bpp_db"] = _none(metrics.quality_at_rate(
            [p["bpp"] for p in pts], [p["psnr_db"] for p in pts], PSNR_BPP)) if pts else None
    v2, hevc = (curves.get(r, {}).get("curve") for r in ("v2", "hevc"))
    out["bd_psnr_vs_hevc_db"] = _none(metrics.bd_quality(
        [p["bytes_per_face"] for p in hevc], [p["psnr_db"] for p in hevc],
        [p["bytes_per_face"] for p in v2], [p["psnr_db"] for p in v2])) if v2 and hevc else None
    return out


# --------------------------------------------------------------------------------------------------------------
# Training progress, targets
# --------------------------------------------------------------------------------------------------------------
def lineage(entries: list[dict]) -> list[dict]:
    """The entries that lead to the last one: a run resumed from an earlier checkpoint or milestone (its machine and
    newer checkpoint gone) logs steps and wall seconds again from there, and the entries of the abandoned branch that
    lie past that point (a later step or a later wall time than the resumed run's entry) are not the last weights'
    history. An abandoned entry logged between the resume point and the resumed run's first entry stays in (at most
    one checkpoint interval)."""
    kept: list[dict] = []
    for e in entries:
        step, wall = int(e["step"]), float(e.get("wall_seconds", 0.0))
        while kept and (int(kept[-1]["step"]) >= step or float(kept[-1].get("wall_seconds", 0.0)) >= wall):
            kept.pop()
        kept.append(e)
    return kept


def training_progress(path: Path) -> dict | None:
    """Where the training stands: its last entry's step and stage, and the hours the last weights have trained per
    device (the wall-clock time between the logged entries of their :func:`lineage`; one CPU thread, so at most that
    many CPU hours); ``abandoned_entries`` counts the entries of branches that were lost."""
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    entries = doc.get("entries") or []
    if not entries:
        return {"progress": _shown(path), "step": 0}
    hours: dict[str, float] = {}
    previous = 0.0
    line = lineage(entries)  # wall seconds rise along it
    for e in line:
        wall = float(e.get("wall_seconds", 0.0))
        hours[e.get("device", "cpu")] = hours.get(e.get("device", "cpu"), 0.0) + (wall - previous) / 3600
        previous = wall
    last = entries[-1]
    total = doc["stages"][-1]["until_step"] if doc.get("stages") else None
    return {"progress": _shown(path), "step": last["step"], "total_steps": total, "stage": last.get("stage"),
            "time_utc": last.get("time_utc"), "cpu_hours": round(hours.get("cpu", 0.0), 2),
            "hours_by_device": {k: round(v, 2) for k, v in hours.items()},
            "hours_note": "wall-clock hours of a one-thread run between logged entries (its CPU hours at most this)",
            "abandoned_entries": len(entries) - len(line),
            "validation": last.get("validation")}


def model_record(codec: str) -> dict:
    """The measured model: registry name, model id, and the training step and stage its manifest records."""
    from facelink.benchmarks.codecs import VariableRateFacelinkCodec, get_codec

    c = get_codec(codec)
    if not isinstance(c, VariableRateFacelinkCodec):
        raise SummaryError(f"{codec} is not a variable-rate model's codec in the registry "
                           "(FACELINK_MODELS_PATH=runs/models for an exported one)")
    from facelink.shared import registry

    m = registry.load(c.model, verify=False).manifest
    t = m.get("training") or {}
    return {"codec": codec, "model": c.model, "model_id": m["model_id"], "weights": m.get("weights"),
            "step": t.get("step"), "stage": t.get("stage"), "source": t.get("source"),
            "run_name": t.get("run_name"), "qualities": m.get("qualities")}


def _target(name: str, value, dataset: str) -> dict:
    threshold, kind = TARGETS[name]
    if isinstance(threshold, dict):
        threshold = threshold.get(dataset)
    if threshold is None:
        return {"target": name, "threshold": None, "value": value, "met": None, "distance": None}
    met = None if value is None else (value >= threshold if kind == "min" else value <= threshold)
    distance = None if value is None else (threshold - value if kind == "min" else value - threshold)
    return {"target": name, "kind": "at least" if kind == "min" else "at most", "threshold": threshold,
            "value": value, "met": met, "distance": distance}


def targets(rows: list[dict], psnr_rows: list[dict]) -> list[dict]:
    """Each target beside its measured value (``distance``: how far from meeting it, > 0 short, in its units; an
    unreached within-half-point or parity is ``met`` false with no distance)."""
    out = []
    for p in psnr_rows:
        for name, key in (("bd_psnr_vs_hevc_db", "bd_psnr_vs_hevc_db"),
                          ("psnr_at_0.6_bpp_db", f"v2_psnr_at_{PSNR_BPP}_bpp_db")):
            t = _target(name, p.get(key), p["dataset"])
            out.append({"dataset": p["dataset"], "protocol": "face-crop", **t})
    for r in rows:
        if r.get("v2") is None:
            continue
        for name in ("bytes_within_half_point", "bd_rate_vs_hevc", "parity_pct_of_hevc_crf23"):
            t = _target(name, r["v2"].get(name), r["dataset"])
            if t["value"] is None and name != "bd_rate_vs_hevc":
                t["met"] = False
            out.append({"dataset": r["dataset"], "protocol": r["protocol"], "recognizer": r["recognizer"], **t})
    return out


# --------------------------------------------------------------------------------------------------------------
# The summary and its plot
# --------------------------------------------------------------------------------------------------------------
def summarize(folders: list[Path], codec: str = CODEC, ladder: str = LADDER, anchors: tuple[str, ...] = ANCHORS,
              cache: Path | None = None, psnr_images: int = PSNR_IMAGES, progress: Path | None = None,
              assets=None) -> dict:
    index = _index(folders)
    rows = [r for key in sorted(index) if (r := row_summary(key, index[key], codec, ladder, anchors)) is not None]
    if not rows:
        raise SummaryError(f"no codec {codec!r} in {', '.join(map(str, folders))}")
    psnr_rows = []
    if cache is not None:
        for ds in sorted({r["dataset"] for r in rows if r["protocol"] == "face-crop"}):
            r = next((r for r in rows if r["dataset"] == ds and r["protocol"] == "face-crop"
                      and r["v2"] and r["hevc"] and r["v2"]["results"] == r["hevc"]["results"]), None)
            if r is None:  # PSNR decodes one run's cached bytes: core v2 and HEVC of the same folder
                continue
            doc = next(d for f, d in index[(ds, r["recognizer"], "face-crop", r["setting"])]
                       if str(f) == r["v2"]["results"])
            curves = psnr_curves(doc, {"v2": r["v2"]["codec"], "hevc": r["hevc"]["codec"]}, cache, psnr_images,
                                 assets)
            psnr_rows.append({"dataset": ds, "protocol": "face-crop", "setting": r["setting"],
                              "pairs": r["pairs"], "curves": curves, **psnr_figures(curves)})
    limited = sorted({r["limit_pairs_per_fold"] for r in rows if r["limit_pairs_per_fold"]})
    model = model_record(codec)
    return {"schema": SCHEMA, "model": model,
            "status": (f"measured with {model['model']} at step {model['step']:,} ({model['stage']} stage)"
                       if model.get("step") is not None else f"measured with {model['model']}")
                      + (f" on a limited protocol ({', '.join(map(str, limited))} pairs per fold)" if limited else
                         " on the full protocols"),
            "results": [str(f) for f in folders],
            "rows": rows, "psnr": psnr_rows, "targets": targets(rows, psnr_rows),
            "training": training_progress(progress) if progress else None,
            "definitions": {
                "bd_rate_vs_hevc": "accuracy BD-rate in bytes per face against HEVC (facelink bench compare), %",
                "bytes_within_half_point": f"bytes per face within {100 * NEAR_UNCOMPRESSED} point of uncompressed",
                "parity_pct_of_hevc_crf23": "bytes reaching HEVC CRF 23's accuracy, % of its bytes; null: not "
                                            "reached (upper_bound: the lowest quality already reaches it)",
                "bd_psnr_vs_hevc_db": "BD-PSNR at equal bytes per face, dB, probe crops decoded from the cache",
                "curves": "Pareto points, pchip interpolation (benchmarks/metrics.py)"}}


def plot(summary: dict, path: Path) -> Path:
    """Accuracy against bytes per face for every row and PSNR against bytes per data set, in one figure."""
    from facelink.benchmarks.plots import _pyplot

    plt = _pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    panels = [("acc", r) for r in summary["rows"]] + [("psnr", p) for p in summary["psnr"]]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (kind, r) in zip(axes.flat, panels):
        if kind == "acc":
            for role, style in (("v2", "o-"), ("hevc", "s--"), ("ladder", "^-.")):
                c = r.get(role)
                if c:
                    pts = [p for p in c["curve"] if p["bytes_per_face"] and p["accuracy"] is not None]
                    ax.plot([p["bytes_per_face"] for p in pts], [100 * p["accuracy"] for p in pts], style,
                            label=c["codec"], ms=4)
            ax.axhline(100 * r["uncompressed_accuracy"], color="grey", lw=0.8, label="uncompressed")
            ax.axhline(100 * (r["uncompressed_accuracy"] - NEAR_UNCOMPRESSED), color="grey", lw=0.8, ls=":")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{r['dataset']} / {r['protocol']} / {r['recognizer']} ({r['pairs']} pairs)", fontsize=9)
        else:
            for role, style in (("v2", "o-"), ("hevc", "s--")):
                c = r["curves"].get(role) or {}
                if c.get("curve"):
                    ax.plot([p["bytes_per_face"] for p in c["curve"]], [p["psnr_db"] for p in c["curve"]], style,
                            label=c["codec"], ms=4)
            ax.set_ylabel("PSNR (dB)")
            bd = r.get("bd_psnr_vs_hevc_db")
            ax.set_title(f"{r['dataset']} face crops: PSNR"
                         + (f" (BD-PSNR {bd:+.2f} dB)" if bd is not None else ""), fontsize=9)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bytes per face")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(summary["status"], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(summary: dict) -> str:
    """The summary as tables: the figures per row and codec, PSNR per data set, and the targets."""
    lines = ["# Core v2 against HEVC and the committed ladder", "", f"**{summary['status']}.**", "",
             (f"Results made by `{summary['made_by']}`; " if summary.get("made_by") else "")
             + f"summary written by `{summary.get('command')}`. Accuracy in %, sizes in bytes per face; "
             "definitions in summary.json.", "",
             "| data set | protocol | recognizer | pairs | codec | BD-rate vs HEVC % | bytes within 0.5 pt | "
             "parity % of HEVC CRF 23 | best accuracy (bytes) | uncompressed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        for role in ("v2", "hevc", "ladder"):
            c = r.get(role)
            if c is None:
                continue
            best = c["best_accuracy"]
            lines.append(f"| {r['dataset']} | {r['protocol']} | {r['recognizer']} | {r['pairs']} | {c['codec']} | "
                         f"{_cell(c['bd_rate_vs_hevc'], '+.1f')} | {_cell(c['bytes_within_half_point'], '.0f')} | "
                         f"{_cell(c['parity_pct_of_hevc_crf23'], '.1f')} | "
                         f"{_cell(best and 100 * best, '.2f')} ({_cell(c['best_accuracy_bytes'], '.0f')}) | "
                         f"{100 * r['uncompressed_accuracy']:.2f} |")
    if summary["psnr"]:
        lines += ["", "| data set | crops decoded | BD-PSNR vs HEVC dB | v2 PSNR at 0.6 bpp | v2 (bytes: dB) | "
                  "HEVC (bytes: dB) |", "|---|---|---|---|---|---|"]
        for p in summary["psnr"]:
            curves = {role: ", ".join(f"{c['bytes_per_face']:.0f}: {c['psnr_db']:.2f}" for c in (v.get("curve") or []))
                      for role, v in p["curves"].items()}
            lines.append(f"| {p['dataset']} | {p['curves']['v2']['images']} | "
                         f"{_cell(p['bd_psnr_vs_hevc_db'], '+.2f')} | "
                         f"{_cell(p.get(f'v2_psnr_at_{PSNR_BPP}_bpp_db'), '.2f')} | {curves.get('v2', '')} | "
                         f"{curves.get('hevc', '')} |")
    lines += ["", "| target | where | value | threshold | met | distance |", "|---|---|---|---|---|---|"]
    for t in summary["targets"]:
        where = " / ".join(str(t[k]) for k in ("dataset", "protocol", "recognizer") if t.get(k))
        lines.append(f"| {t['target']} | {where} | {_cell(t['value'], '.2f')} | {t.get('kind', '')} "
                     f"{_cell(t['threshold'], 'g')} | {t['met']} | {_cell(t['distance'], '.2f')} |")
    tr = summary.get("training")
    if tr:
        others = "".join(f" and {h} hours on {dev}" for dev, h in (tr.get("hours_by_device") or {}).items()
                         if dev != "cpu")
        lines += ["", f"Training ({tr['progress']}): step {tr['step']:,} of {_cell(tr.get('total_steps'), ',')}, "
                      f"stage {tr.get('stage')}, {tr.get('cpu_hours')} CPU hours ({tr.get('hours_note')}){others} "
                      f"at {tr.get('time_utc')}."]
    lines += ["", f"![summary]({summary['plot']})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink bench core-v2-summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path,
                    help="result folders of facelink bench run (core v2 and its anchors on the same pairs; a codec is "
                         "taken from the first folder that has it)")
    ap.add_argument("--codec", default=CODEC, help="the variable-rate model's codec (default %(default)s)")
    ap.add_argument("--ladder", default=LADDER, help="the committed ladder's codec (default %(default)s)")
    ap.add_argument("--anchors", nargs="+", default=list(ANCHORS), metavar="CODEC",
                    help="codecs core v2 is compared against at equal bytes (default: %(default)s)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="the benchmark cache whose bytes are decoded again for PSNR (default runs/bench/cache.sqlite)")
    ap.add_argument("--no-psnr", action="store_true", help="skip the PSNR curves (no decoding)")
    ap.add_argument("--psnr-images", type=int, default=PSNR_IMAGES,
                    help="probe crops per data set decoded for the PSNR curves (default %(default)s)")
    ap.add_argument("--progress", type=Path, default=None,
                    help="the training's progress.json (default benchmarks/results/core-v2/progress.json)")
    ap.add_argument("--made-by", default=None, help="how the result folders were made (recorded), e.g. a make recipe")
    ap.add_argument("--assets", default=None, help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the summary JSON (default benchmarks/results/core-v2/summary.json); its tables (.md) and "
                         "plot (.png) beside it")
    args = ap.parse_args(argv)
    from facelink.shared.paths import REPO_ROOT

    base = (REPO_ROOT or Path.cwd()) / "benchmarks" / "results" / "core-v2"
    cache = None if args.no_psnr else (args.cache or _default_cache())
    try:
        summary = summarize(args.results, args.codec, args.ladder, tuple(args.anchors), cache, args.psnr_images,
                            args.progress or base / "progress.json", args.assets)
    except (SummaryError, compare.CompareError, OSError) as e:
        print(f"facelink bench core-v2-summary: {e}", file=sys.stderr)
        return 2
    from facelink.cloud.evaluation.provenance import git_state

    summary["command"] = "facelink bench core-v2-summary " + " ".join(sys.argv[1:] if argv is None else argv)
    summary["made_by"] = args.made_by
    summary["git"] = git_state()
    summary["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out = args.out or base / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary["plot"] = plot(summary, out.with_suffix(".png")).name
    out.write_text(json.dumps(summary, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(summary))
    for t in summary["targets"]:
        where = " / ".join(str(t[k]) for k in ("dataset", "protocol", "recognizer") if t.get(k))
        print(f"{where}: {t['target']} = {t['value']} (target {t.get('kind', '')} {t['threshold']}; met {t['met']})")
    print(f"wrote {out}, {out.with_suffix('.md').name} and {summary['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
