"""The model table beside the models: ``shared/resources/models/README.md``, generated from the committed manifests.

One row per rate point in the registry folder: family, λ, α, steps, start, training data, what it is for, and —
where a committed benchmark result measured exactly these files — bytes per face and verification accuracy on the
edge's aligned 112×112 face crops. A second table lists every file with its size and sha256 (from the manifest,
which the registry checks on every load).

A result counts for a model only when the benchmark recorded the hash of the model's manifest file list that the
committed manifest gives today (``benchmarks/codecs.py`` records it for every learned codec), so a result made with
other weights never lands in the table. Manifest fields that newer exports add (``family``, ``label``,
``purpose``, ``ablation_of``, ``tuned_from``) are used when present; older manifests fall back to the name
(``face-<family>-q<k>``), the description and the training configuration.

    facelink models readme                  # rewrite shared/resources/models/README.md
    facelink models readme --check          # exit 1 when the committed README is stale
    python -m facelink.cloud.evaluation.model_card --out -   # print it
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

from facelink.shared import paths

README_NAME = "README.md"
RESULTS_DIR = paths.PROTOCOLS_DIR.parent / "results"
DATASET_WORDS = {
    "lfw-train": "LFW outside View 2",
    "celeba-train": "CelebA train identities",
}
BENCH_SCHEMA = "facelink-bench/1"
CROP_DATASETS = (("lfw", "LFW View 2"), ("celeba", "CelebA test"))
RECOGNIZERS = ("mobilefacenet", "sface")


def files_hash(manifest: dict) -> str:
    """The hash the benchmark records per learned model: sha256 of the manifest's file list, 16 hex digits, without
    the decoder-only face-domain adapter files (benchmarks/codecs.py's _model_digest: adding adapters keeps it)."""
    from facelink.shared.registry import ADAPTER_FILE_KEYS

    entry = manifest.get("adapters") or {}
    skip = {entry[k] for k in ADAPTER_FILE_KEYS if k in entry}
    files = {k: v for k, v in manifest["files"].items() if k not in skip}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def load_manifests(models_dir: Path) -> list[dict]:
    out = []
    for m in sorted(Path(models_dir).glob("*/manifest.json")):
        manifest = json.loads(m.read_text())
        manifest["_dir"] = m.parent
        out.append(manifest)
    return out


def family_of(manifest: dict) -> str:
    if manifest.get("family"):
        return str(manifest["family"])
    parts = manifest["name"].split("-")
    return parts[1] if len(parts) >= 3 and parts[0] == "face" else manifest["name"]


def _models_of(codec: dict) -> dict[str, str]:
    models = (codec.get("settings") or {}).get("models") or {}
    return models if isinstance(models, dict) else {}


def crop_results(results_dir: Path, manifests: list[dict]) -> dict[tuple[str, str], dict]:
    """(model name, dataset) -> the newest full-protocol, probe-coded face-crop (112×112) measurement of exactly
    the committed files: {"bytes": mean bytes per face, "acc": {recognizer: accuracy}, "folder": results folder}."""
    wanted = {m["name"]: files_hash(m) for m in manifests}
    found: dict[tuple[str, str, str], tuple[str, float, float, str]] = {}
    for f, d, created in _crop_documents(results_dir):
        for codec in d.get("codecs", []):
            models = _models_of(codec)
            res = codec.get("results") or {}
            for i, q in enumerate(res.get("quality", [])):
                if q not in wanted or models.get(q) != wanted[q]:
                    continue
                key = (q, d["dataset"], d["recognizer"])
                cand = (created, res["bytes_per_face"][i], res["accuracy"][i], _folder_name(f, results_dir))
                if key not in found or cand[0] > found[key][0]:
                    found[key] = cand
    out: dict[tuple[str, str], dict] = {}
    for (name, dataset, recognizer), (_, nbytes, acc, folder) in sorted(found.items()):
        entry = out.setdefault((name, dataset), {"bytes": nbytes, "acc": {}, "folder": folder})
        entry["acc"][recognizer] = acc
    return out


def _folder_name(f: Path, results_dir: Path) -> str:
    return f.parent.relative_to(results_dir).as_posix()


def _crop_documents(results_dir: Path):
    """(file, document, created) of every full-protocol, probe-coded result on the edge's 112×112 face crops with
    MobileFaceNet or SFace, anywhere below ``results_dir``."""
    for f in sorted(Path(results_dir).rglob("*.json")):
        if f.name == "summary.json" or f.name.startswith("results"):
            continue
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict) or d.get("schema") != BENCH_SCHEMA or d.get("limited"):
            continue
        if (d.get("protocol"), d.get("setting")) != ("face-crop", "asymmetric"):
            continue
        if d.get("recognizer") not in RECOGNIZERS or d.get("probe_domain") not in (None, "source"):
            continue
        prov = d.get("provenance") or {}
        if (prov.get("config") or {}).get("crop_template", "arcface-112") != "arcface-112":
            continue
        yield f, d, str(prov.get("created", ""))


def variable_rate_results(results_dir: Path, manifests: list[dict]) -> dict[tuple[str, str], dict]:
    """(variable-rate model name, dataset) -> its newest full-protocol crop sweep of exactly the committed files:
    {"folder": results folder, "quality": {quality: {"bytes": mean bytes per face, "acc": {recognizer: accuracy}}}}."""
    from facelink.shared.registry import quality_range

    wanted = {m["name"]: files_hash(m) for m in manifests if quality_range(m) is not None}
    found: dict[tuple[str, str, str], tuple[str, dict, str]] = {}
    for f, d, created in _crop_documents(results_dir):
        for codec in d.get("codecs", []):
            settings = codec.get("settings") or {}
            name = settings.get("model")
            if name not in wanted or settings.get("model_digest") != wanted[name]:
                continue
            res = codec.get("results") or {}
            sweep = {float(q): (b, a) for q, b, a in zip(res.get("quality", []), res.get("bytes_per_face", []),
                                                          res.get("accuracy", []))}
            key = (name, d["dataset"], d["recognizer"])
            if key not in found or created > found[key][0]:
                found[key] = (created, sweep, _folder_name(f, results_dir))
    out: dict[tuple[str, str], dict] = {}
    for (name, dataset, recognizer), (_, sweep, folder) in sorted(found.items()):
        entry = out.setdefault((name, dataset), {"folder": folder, "quality": {}})
        for q, (nbytes, acc) in sweep.items():
            cell = entry["quality"].setdefault(q, {"bytes": nbytes, "acc": {}})
            cell["acc"][recognizer] = acc
    return out


def edge_speed_bytes(results_dir: Path, manifests: list[dict]) -> dict[str, tuple[float, int]]:
    """model name -> (mean bytes per face, faces) from ``edge_speed.json`` when it measured that model's tables."""
    f = Path(results_dir) / "edge_speed.json"
    if not f.is_file():
        return {}
    d = json.loads(f.read_text())
    ids = {m["name"]: m["model_id"] for m in manifests}
    name = d.get("model")
    if name in ids and d.get("model_id") == ids[name] and "bytes_per_face" in d:
        return {name: (float(d["bytes_per_face"]["mean"]), int(d.get("faces", 0)))}
    return {}


def _num(x) -> str:
    return "—" if x is None else f"{x:g}"


def _start(manifest: dict) -> str:
    if manifest.get("tuned_from"):
        return f"`{manifest['tuned_from']}`"
    init = ((manifest.get("training") or {}).get("config") or {}).get("init_from")
    if not init:
        return "scratch"
    init = str(init)
    if init.startswith("registry:"):
        return f"`{init.removeprefix('registry:')}`"
    if init.startswith("runs/") and init.endswith("/model.pt"):  # runs/ipr-q1/model.pt: the ladder's next point
        return f"run `{init.split('/')[1]}`"
    return f"`{init}`"


def _data(manifest: dict) -> str:
    tr = manifest.get("training") or {}
    cfg = tr.get("config") or {}
    words = [DATASET_WORDS.get(d, d) for d in tr.get("datasets") or cfg.get("datasets") or []]
    text = " + ".join(words) or "—"
    frac = cfg.get("face_crop_fraction")
    stage_fracs = {st.get("face_crop_fraction") for st in cfg.get("stages") or []} - {None}
    if frac is None and len(stage_fracs) == 1:  # a schedule of stages (core v2) that all draw the same share
        frac = stage_fracs.pop()
    if frac is not None:
        text += f"; {float(frac):.0%} aligned face crops" if float(frac) < 1 else "; aligned face crops only"
    return text


def _purpose(manifest: dict) -> str:
    text = str(manifest.get("purpose") or manifest.get("description", "")).split(" (cloud/")[0]
    if manifest.get("ablation_of"):
        text += f" (ablation of `{manifest['ablation_of']}`)"
    adapters = manifest.get("adapters")
    if isinstance(adapters, dict) and adapters.get("domains"):
        text += f"; cloud face-domain adapters for {', '.join(map(str, adapters['domains']))}"
    return text.replace("|", "\\|")


def _family(manifest: dict) -> str:
    fam = family_of(manifest)
    return f"{fam} ({manifest['label']})" if manifest.get("label") else fam


def _train_command(manifest: dict) -> str | None:
    ladder = manifest.get("ladder")
    if isinstance(ladder, dict) and ladder.get("name") and ladder.get("point"):
        return (f"facelink train --ladder {ladder['name']} --point {ladder['point']} "
                f"--out runs/{ladder['name']}-{ladder['point']}")
    return None


def _cell(entry: dict | None, link_prefix: str) -> str:
    if entry is None:
        return "—"
    acc = " / ".join(f"{100 * entry['acc'][r]:.2f}" if r in entry["acc"] else "—" for r in RECOGNIZERS)
    return f"{entry['bytes']:.0f} B → {acc} % ([{entry['folder']}]({link_prefix}{entry['folder']}/README.md))"


def _quality_cell(entry: dict | None, quality: float) -> str:
    cell = (entry or {}).get("quality", {}).get(float(quality))
    if cell is None:
        return "—"
    acc = " / ".join(f"{100 * cell['acc'][r]:.2f}" if r in cell["acc"] else "—" for r in RECOGNIZERS)
    return f"{cell['bytes']:.0f} B → {acc} %"


def _variable_rate_row(m: dict, default: bool, swept: dict, link: str) -> str:
    """A variable-rate model's row in the main table: its quality range and default, λ range, the training's α
    and steps, and the default quality's measured bytes and accuracy."""
    from facelink.shared.registry import quality_range

    tr = m.get("training") or {}
    cfg = tr.get("config") or {}
    qr = quality_range(m)
    top, dq, lambdas = qr.top, qr.default, list(qr.lambdas.values())
    alphas = sorted({float(st.get("alpha", 0)) for st in cfg.get("stages") or []})
    name = f"`{m['name']}`" + (" (default)" if default else "")
    cells = []
    for ds, _ in CROP_DATASETS:
        entry = swept.get((m["name"], ds))
        cell = _quality_cell(entry, dq)
        cells.append(cell if cell == "—" else
                     f"{cell} at quality {dq:g} ([{entry['folder']}]({link}{entry['folder']}/README.md))")
    config = f"cloud/training/configs/{tr['run_name']}.yaml" if tr.get("run_name") else None
    return "| " + " | ".join([
        name, "variable rate", f"0–{top} (default {dq:g})",
        f"{min(lambdas):g}–{max(lambdas):g}" if lambdas else "—", " / ".join(f"{a:g}" for a in alphas) or "—",
        f"{tr['step']:,}" if tr.get("step") else "—", "scratch", _data(m), _purpose(m),
        f"`facelink core-v2 start --config {config}`" if config else "—", *cells]) + " |"


def _variable_rate_table(m: dict, swept: dict, link: str, para) -> list[str]:
    """Bytes per face and accuracy at each measured quality of a variable-rate model, both data sets."""
    entries = {ds: swept.get((m["name"], ds)) for ds, _ in CROP_DATASETS}
    qualities = sorted({q for e in entries.values() if e for q in e["quality"]})
    if not qualities:
        return para("No full-protocol result has measured these files yet.")
    from facelink.shared.registry import quality_range

    sources = ", ".join(f"[{e['folder']}]({link}{e['folder']}/README.md)" for e in entries.values() if e)
    qr = quality_range(m)
    lam = qr.lambdas
    out = [*para(f"The edge codes at any quality in the range (`facelink-edge --quality Q`), or at the highest "
                 f"whose container fits a byte budget (`--max-bytes B`); unless told, at quality "
                 f"{qr.default:g}. Measured as above ({sources}):"),
           "| quality | λ | " + " | ".join(f"{label} crops" for _, label in CROP_DATASETS) + " |",
           "|---|---|" + "---|" * len(CROP_DATASETS)]
    for q in qualities:
        key = str(int(q)) if float(q).is_integer() else str(q)
        out.append(f"| {q:g} | {_num(lam.get(key))} | "
                   + " | ".join(_quality_cell(entries[ds], q) for ds, _ in CROP_DATASETS) + " |")
    return out


def _relpath(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def render(models_dir: Path = paths.MODELS_DIR, results_dir: Path = RESULTS_DIR,
           default_model: str | None = None, out_dir: Path | None = None) -> str:
    """The README text for the registry folder ``models_dir``, its links relative to ``out_dir`` (default: the
    registry folder, where the README lives)."""
    from facelink.shared import registry  # the default model's name and manifest readings; no model is loaded

    default_model = default_model or registry.DEFAULT_MODEL
    manifests = load_manifests(models_dir)
    measured = crop_results(results_dir, manifests)
    swept = variable_rate_results(results_dir, manifests)
    speed = edge_speed_bytes(results_dir, manifests)
    link = _relpath(Path(results_dir).resolve(), Path(out_dir or models_dir).resolve()) + "/"
    def para(text: str) -> list[str]:
        return [*textwrap.wrap(text, 120, break_on_hyphens=False, break_long_words=False), ""]

    lines = [
        "# Models shipped with facelink",
        "",
        *para("Generated from the `manifest.json` files in this folder by `facelink models readme` "
              "(`python -m facelink.cloud.evaluation.model_card`); do not edit by hand. "
              "`tests/test_model_card.py` fails when this file is stale."),
        *para(f"The default model (`facelink.shared.registry.DEFAULT_MODEL`) is `{default_model}`. Every model is a "
              "mean-scale hyperprior: a rate point codes at one λ, a variable-rate model at any quality of its range "
              "(one λ per integer quality). λ weighs the distortion (255²·MSE) against the rate, α the identity "
              "term (1 − cos of MobileFaceNet embeddings of source and reconstruction; 0: pixel loss only)."),
        *para("Bytes per face and accuracy are for the edge's aligned 112×112 face crop, the whole container "
              "included: verification accuracy on the full protocol (6,000 pairs), probe coded and gallery "
              "uncompressed, MobileFaceNet / SFace. Only results that measured exactly these files (the same "
              "manifest file hashes) count, the newest of them."),
        "| rate point | family | quality | λ | α | steps | start | training data | what it is for | trained by "
        "| LFW View 2 crops | CelebA test crops |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in manifests:
        if registry.quality_range(m) is not None:
            lines.append(_variable_rate_row(m, m["name"] == default_model, swept, link))
            continue
        tr = m.get("training") or {}
        name = f"`{m['name']}`" + (" (default)" if m["name"] == default_model else "")
        cells = [_cell(measured.get((m["name"], ds)), link) for ds, _ in CROP_DATASETS]
        if cells[0] == "—" and m["name"] in speed:
            b, faces = speed[m["name"]]
            cells[0] = (f"{b:.0f} B (mean of {faces} faces, [edge_speed.json]({link}edge_speed.json)); "
                        "no full-protocol accuracy")
        if cells[0] == "—" and m.get("bytes_per_face"):
            cells[0] = f"{float(m['bytes_per_face']):.0f} B (manifest)"
        lines.append("| " + " | ".join([
            name, _family(m), _num(m.get("quality")), _num(tr.get("lambda")), _num(tr.get("alpha")),
            _num(tr.get("steps")), _start(m),
            _data(m), _purpose(m), f"`{_train_command(m)}`" if _train_command(m) else "—", *cells]) + " |")
    for m in manifests:
        if registry.quality_range(m) is not None:
            lines += ["", f"## `{m['name']}` by quality", "", *_variable_rate_table(m, swept, link, para)]
    while lines[-1] == "":
        lines.pop()
    notes: dict[str, list[str]] = {}
    for m in manifests:
        if m.get("name_note"):
            notes.setdefault(str(m["name_note"]), []).append(m["name"])
    if notes:
        lines += ["", "## Names", "",
                  *para("`quality` is facelink's quality index, one λ per index in every family; rate points named "
                        "before it keep their suffix:")]
        for note, names in notes.items():
            lines += textwrap.wrap(f"- {', '.join(f'`{n}`' for n in names)}: {note}", 120, break_on_hyphens=False,
                                   break_long_words=False, subsequent_indent="  ")
    lines += [
        "",
        "## Files",
        "",
        *para("Each rate point is `encoder.onnx` (the edge: analysis and hyper-analysis), `tables.npz` (both sides: "
              "entropy tables and the integer hyper-synthesis), `decoder.safetensors` (the cloud: synthesis only), "
              "`manifest.json` and, where listed, the cloud's face-domain adapters. The registry checks every sha256 "
              "below on load."),
        "| rate point | model id | weights | file | bytes | sha256 |",
        "|---|---|---|---|---|---|",
    ]
    for m in manifests:
        for fname, digest in sorted(m["files"].items()):
            p = m["_dir"] / fname
            size = f"{p.stat().st_size:,}" if p.is_file() else "missing"
            lines.append(f"| `{m['name']}` | `{m['model_id']}` | {m.get('weights', '—')} | `{fname}` | {size} "
                         f"| `{digest}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink models readme",
                                 description="Write the model table (README.md beside the models) from the manifests.")
    ap.add_argument("--models", type=Path, default=paths.MODELS_DIR,
                    help="registry folder holding <name>/manifest.json (default: the package's models)")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR,
                    help="benchmark results folder to take bytes per face and accuracy from")
    ap.add_argument("--out", help="where to write (default: README.md in --models; '-' prints it)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 when the file at --out differs from what would be written")
    args = ap.parse_args(argv)
    out = None if args.out == "-" else Path(args.out) if args.out else args.models / README_NAME
    text = render(args.models, args.results, out_dir=out.parent if out else None)
    if out is None:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = out.read_text() if out.is_file() else None
        if current != text:
            print(f"{out} is stale: run `facelink models readme` and commit it", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text)
    print(f"wrote {out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
