"""The accuracy-versus-bpp engine: encode every benchmark image with every codec setting, recognise the decoded
faces, and score the verification protocol.

Protocols (what is encoded):

- ``full-frame`` (the IPR paper's): the whole image (LFW 250×250, CelebA 256×256) is encoded; YuNet detects
  and the recognizer's template aligns on the *decoded* image. bpp is over the whole frame.
- ``face-crop`` (the edge's): YuNet detects on the *source* image, the face is aligned to the edge's canonical
  112×112 crop (ArcFace template, :data:`facelink.shared.alignment.ARCFACE_112`) and only that crop is encoded;
  the decoded crop is re-warped from the template's points to each recognizer's template (no detection on the
  decoded crop). bpp is over the 112×112 crop.

Settings (what is compared):

- ``asymmetric``: in every pair the first image is the uncompressed gallery image (processed like the
  Uncompressed codec of the same protocol), the second is the compressed probe. A run that asks for this
  setting alone codes only the probes (LFW View 2: 4,576 of 7,701 images).
- ``symmetric``: both images of every pair are compressed with the same setting.

Everything per (condition, image) — bits, whether a face was found, one embedding per recognizer — goes into a
SQLite cache (:class:`Cache`), so an interrupted run resumes where it stopped and adding a codec or a quality
only computes what is new.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelink.benchmarks.codecs import Codec, get_codec

PROTOCOLS = ("full-frame", "face-crop")
SETTINGS = ("asymmetric", "symmetric")
DATASETS = ("lfw", "celeba")
CROP_TEMPLATE = "arcface-112"  # the edge's canonical crop (face-crop protocol)
ENGINE_VERSION = 1  # bump when what is cached per (condition, image) changes meaning


# ------------------------------------------------------------------------------------------------------------
# Suites: the images to encode and the pairs to score
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Suite:
    dataset: str
    root: Path  # image keys are paths relative to this
    keys: list[str]  # unique images, in first-use order
    pairs: np.ndarray  # (P, 2) indices into keys
    same: np.ndarray  # (P,) bool
    folds: np.ndarray  # (P,) int, 0-based
    protocol_file: Path
    limit: int | None = None
    description: str = ""

    def path(self, i: int) -> Path:
        return self.root / self.keys[i]


def _limit_pairs(rows: list[tuple], folds: list[int], limit: int | None) -> tuple[list[tuple], list[int]]:
    """Keep, per fold, the first ``limit // 2`` matched and first ``limit - limit // 2`` mismatched pairs."""
    if not limit:
        return rows, folds
    n_same, n_diff = limit - limit // 2, limit // 2
    counts: dict[tuple[int, bool], int] = {}
    out_rows, out_folds = [], []
    for r, f in zip(rows, folds):
        k = (f, bool(r[2]))
        cap = n_same if r[2] else n_diff
        if counts.get(k, 0) < cap:
            counts[k] = counts.get(k, 0) + 1
            out_rows.append(r)
            out_folds.append(f)
    return out_rows, out_folds


def _suite_from_rows(dataset, root, rows, folds, protocol_file, limit, description) -> Suite:
    rows, folds = _limit_pairs(rows, folds, limit)
    index: dict[str, int] = {}
    pairs = []
    for a, b, _ in rows:
        for k in (a, b):
            if k not in index:
                index[k] = len(index)
        pairs.append((index[a], index[b]))
    return Suite(dataset, root, list(index), np.array(pairs, dtype=np.int64).reshape(-1, 2),
                 np.array([r[2] for r in rows], dtype=bool), np.array(folds, dtype=np.int64),
                 protocol_file, limit, description)


def load_suite(dataset: str, limit: int | None = None, assets: str | Path | None = None) -> Suite:
    """LFW View 2 or the CelebA test protocol (``benchmarks/protocols/celeba_test_pairs.txt``, the same View-2
    form), 10 folds × (300 matched + 300 mismatched); ``limit``: pairs per fold (the first ``limit - limit//2``
    matched and ``limit//2`` mismatched of each fold, in file order)."""
    from facelink.cloud.training import datasets as ds

    if dataset == "lfw":
        root = ds.lfw_root(assets)
        pfile = root / "pairs.txt"
        path_of, desc = ds.lfw_image_path, "LFW View 2 (deep-funneled), 10 folds"
    elif dataset == "celeba":
        root = ds.celeba_root(assets)
        pfile = Path(__file__).resolve().parent / "protocols" / "celeba_test_pairs.txt"  # package data
        path_of, desc = ds.celeba_image_path, "CelebA faces 256×256, test identities, 10 identity-disjoint folds"
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    pairs = ds.read_lfw_pairs(pfile)
    n_folds = int(pfile.read_text().split()[0])
    per_fold = len(pairs) // n_folds
    rows, folds = [], []
    for i, (a, b, same) in enumerate(pairs):
        rows.append((str(path_of(root, *a).relative_to(root)), str(path_of(root, *b).relative_to(root)), same))
        folds.append(i // per_fold)
    return _suite_from_rows(dataset, root, rows, folds, pfile, limit, desc)


# ------------------------------------------------------------------------------------------------------------
# Conditions: one codec setting under one protocol on one dataset
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    dataset: str
    protocol: str
    codec: str
    quality: object
    settings_json: str  # the codec's fixed settings, canonical JSON
    flip: bool
    crop_template: str = CROP_TEMPLATE  # what the face-crop protocol aligns to and codes
    probe_domain: str | None = None  # a capture domain (facelink.cloud.training.domains) applied before coding

    @property
    def key(self) -> str:
        from facelink.shared.detection import YUNET_SHA256

        fields = {"v": ENGINE_VERSION, "dataset": self.dataset, "protocol": self.protocol,
                  "codec": self.codec, "quality": self.quality, "settings": self.settings_json,
                  "detector": YUNET_SHA256[:16], "crop": self.crop_template}
        if self.probe_domain is not None:  # absent otherwise: the keys of every earlier condition stay as they were
            fields["probe_domain"] = self.probe_domain
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def condition_for(dataset: str, protocol: str, codec: Codec, quality, flip: bool,
                  crop_template: str = CROP_TEMPLATE, probe_domain: str | None = None) -> Condition:
    return Condition(dataset, protocol, codec.name, quality, json.dumps(codec.settings_for(quality), sort_keys=True),
                     flip, crop_template, probe_domain)


def domain_key(image_key: str) -> str:
    """What a capture domain's per-image draw is seeded with: the image's folder and file name."""
    p = Path(image_key)
    return f"{p.parent.name}/{p.name}"


def recognizer_slot(name: str, flip: bool) -> str:
    """The cache slot of a recognizer's embeddings: its cache id (which names any processing variant), +flip."""
    from facelink.cloud.serving.recognizers import cache_id_of

    cid = cache_id_of(name)
    return f"{cid}+flip" if flip else cid


# ------------------------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------------------------
class Cache:
    """SQLite store of per-image results, keyed by condition and image (safe to interrupt at any time)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        # data: the encoded bytes (kept so that adding a recognizer later only decodes); NULL for uncompressed.
        self.db.execute("CREATE TABLE IF NOT EXISTS coded (cond TEXT, image TEXT, bits INTEGER, pixels INTEGER, "
                        "face INTEGER, data BLOB, PRIMARY KEY (cond, image))")
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (cond TEXT, image TEXT, slot TEXT, vec BLOB, "
                        "PRIMARY KEY (cond, image, slot))")
        self.db.commit()

    def missing(self, cond: str, images: Sequence[str], slots: Sequence[str]) -> list[str]:
        """Images with no result under ``cond``, or with a face but no embedding in one of ``slots``."""
        have = {r[0] for r in self.db.execute("SELECT image FROM coded WHERE cond=?", (cond,))}
        need = [im for im in images if im not in have]
        seen = set(need)
        faces = {r[0] for r in self.db.execute("SELECT image FROM coded WHERE cond=? AND face=1", (cond,))}
        for slot in slots:
            got = {r[0] for r in self.db.execute("SELECT image FROM emb WHERE cond=? AND slot=?", (cond, slot))}
            for im in images:
                if im in faces and im not in got and im not in seen:
                    need.append(im)
                    seen.add(im)
        return need

    def encoded(self, cond: str, images: Sequence[str]) -> dict[str, bytes]:
        """Stored encoded bytes for those of ``images`` that have them."""
        want = set(images)
        return {r[0]: r[1] for r in self.db.execute("SELECT image, data FROM coded WHERE cond=? AND data IS NOT "
                                                    "NULL", (cond,)) if r[0] in want}

    def put(self, cond: str, rows: list[dict]) -> None:
        with self.db:
            for r in rows:
                self.db.execute("INSERT OR REPLACE INTO coded VALUES (?,?,?,?,?,?)",
                                (cond, r["image"], r["bits"], r["pixels"], int(r["face"]), r.get("data")))
                for slot, vec in r.get("emb", {}).items():
                    self.db.execute("INSERT OR REPLACE INTO emb VALUES (?,?,?,?)",
                                    (cond, r["image"], slot, np.asarray(vec, np.float32).tobytes()))

    def load(self, cond: str, images: Sequence[str], slot: str, dim: int | None = None,
             need: Sequence[int] | None = None):
        """(bits, pixels, face, embeddings) arrays aligned with ``images``; embeddings NaN where no face.

        ``need``: indices into ``images`` that must be in the cache (default: all); the others may be absent and
        then read as NaN with no face (a probe-only condition has no result for gallery-only images)."""
        required = range(len(images)) if need is None else need
        coded = {r[0]: r[1:] for r in self.db.execute("SELECT image, bits, pixels, face FROM coded WHERE cond=?",
                                                      (cond,))}
        vecs = {r[0]: np.frombuffer(r[1], np.float32)
                for r in self.db.execute("SELECT image, vec FROM emb WHERE cond=? AND slot=?", (cond, slot))}
        if dim is None:
            dim = len(next(iter(vecs.values()))) if vecs else 1
        n = len(images)
        bits = np.full(n, np.nan)
        pixels = np.full(n, np.nan)
        face = np.zeros(n, bool)
        emb = np.full((n, dim), np.nan, np.float32)
        for i in required:
            if images[i] not in coded:
                raise KeyError(f"cache {self.path} has no result for image {images[i]} under condition {cond}")
        for i, im in enumerate(images):
            c = coded.get(im)
            if c is None:
                continue
            bits[i] = np.nan if c[0] is None else c[0]
            pixels[i] = np.nan if c[1] is None else c[1]
            face[i] = bool(c[2]) and im in vecs
            if face[i]:
                emb[i] = vecs[im]
        return bits, pixels, face, emb

    def close(self):
        self.db.close()


# ------------------------------------------------------------------------------------------------------------
# Work: runs in worker processes (or in-process with one worker)
# ------------------------------------------------------------------------------------------------------------
_STATE: dict = {}


def _init_worker(threads: int = 1, device: str = "cpu") -> None:
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(threads)
    # numpy's BLAS too (the learned codec's integer hyper-synthesis is float64 matrix products): OpenBLAS starts
    # one busy-waiting thread per core in every worker, so N workers on N cores would oversubscribe the CPU.
    threadpool_limits(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    _STATE.clear()
    _STATE["device"] = device


def _detector():
    if "det" not in _STATE:
        from facelink.shared.detection import YuNet

        _STATE["det"] = YuNet()
    return _STATE["det"]


def _recognizer(name: str):
    key = ("rec", name)
    if key not in _STATE:
        from facelink.cloud.serving.recognizers import get_recognizer

        _STATE[key] = get_recognizer(name, device=_STATE.get("device", "cpu"))
    return _STATE[key]


def _codec(name: str) -> Codec:
    key = ("codec", name)
    if key not in _STATE:
        _STATE[key] = get_codec(name)
    return _STATE[key]


def _source_landmarks(det, root: str, key: str, src: np.ndarray):
    """The source image's largest-face landmarks (None: no face), found once per worker and image: the face-crop
    protocol crops the same source for every codec setting."""
    memo = _STATE.setdefault("source_landmarks", {})
    if (root, key) not in memo:
        d = det.largest(src, rgb=True)
        memo[(root, key)] = None if d is None else d.landmarks
    return memo[(root, key)]


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def process_images(task: dict) -> tuple[str, list[dict], float]:
    """Encode, decode, detect/align and embed one chunk of images under one condition.

    ``task``: cond (key), protocol, codec, quality, root, images (keys), recognizers (names), flip, and
    optionally encoded {image: bytes} from the cache (those are decoded, not re-encoded).
    Returns (cond, rows, seconds) where each row has image, bits, pixels, face, data (the encoded bytes, None
    for the uncompressed reference) and emb {slot: vector}.
    """
    import cv2

    from facelink.shared.alignment import TEMPLATES, align, similarity_transform

    t0 = time.perf_counter()
    codec = _codec(task["codec"])
    domain = None
    if task.get("probe_domain"):  # the camera's condition, on what the codec gets (the crop, or the frame)
        from facelink.cloud.training.domains import get_domain

        domain = get_domain(task["probe_domain"])
        codec = codec.for_domain(domain.name)
    det = _detector()
    crop_t = TEMPLATES[task.get("crop_template", CROP_TEMPLATE)]
    recs = [_recognizer(n) for n in task["recognizers"]]
    rows, crops = [], {r.name: [] for r in recs}
    stored = task.get("encoded") or {}
    protocol = task["protocol"]
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")

    # What each image puts into the codec: the whole frame, or the crop aligned on the source's landmarks.
    inputs = {}
    for key in task["images"]:
        src = load_rgb(Path(task["root"]) / key)
        if protocol == "full-frame":
            inputs[key] = src
        else:
            landmarks = _source_landmarks(det, task["root"], key, src)
            rows.append({"image": key, "bits": None, "pixels": None, "face": False, "emb": {}, "data": None})
            if landmarks is not None:
                inputs[key] = align(src, landmarks, crop_t)
        if domain is not None and key in inputs:
            inputs[key] = domain.apply(inputs[key], domain_key(key))
    keys = list(inputs)
    if codec.name == "uncompressed":
        coded = {k: (*codec.roundtrip(inputs[k], task["quality"]), None) for k in keys}
    else:
        todo = [k for k in keys if k not in stored]
        datas = dict(stored)
        todo_images = [inputs[k] for k in todo]
        if protocol == "face-crop":  # coded as the edge sends a crop: the codec may say so in its bitstream
            datas.update(zip(todo, codec.encode_crops(todo_images, task["quality"], crop_t.name)))
        else:
            datas.update(zip(todo, codec.encode_many(todo_images, task["quality"])))
        outs = codec.decode_many([datas[k] for k in keys])
        coded = {}
        for k, out in zip(keys, outs):
            if out.shape != inputs[k].shape:
                raise RuntimeError(f"{codec.name}: decoded shape {out.shape} differs from input {inputs[k].shape}")
            coded[k] = (out, codec.bits(datas[k]), datas[k])

    if protocol == "full-frame":
        for key in keys:
            dec, bits, data = coded[key]
            row = {"image": key, "bits": int(bits), "pixels": int(dec.shape[0] * dec.shape[1]), "face": False,
                   "emb": {}, "data": data}
            d = det.largest(dec, rgb=True)
            if d is not None:
                row["face"] = True
                for r in recs:
                    crops[r.name].append(align(dec, d.landmarks, r.template))
            rows.append(row)
    else:
        for row in rows:
            if row["image"] not in coded:
                continue  # no face on the source: nothing encoded
            dec, bits, row["data"] = coded[row["image"]]
            row["bits"], row["pixels"], row["face"] = int(bits), int(dec.shape[0] * dec.shape[1]), True
            for r in recs:
                if r.template.name == crop_t.name:
                    crops[r.name].append(dec)
                else:
                    m = similarity_transform(crop_t.points, r.template.points)
                    crops[r.name].append(cv2.warpAffine(dec, m, (r.template.width, r.template.height),
                                                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    with_face = [row for row in rows if row["face"]]
    for r in recs:
        if not with_face:
            break
        flip = task["flip"][r.name] if isinstance(task["flip"], dict) else bool(task["flip"])
        e = r.embed(np.stack(crops[r.name]), flip=flip)
        slot = recognizer_slot(r.name, flip)
        for row, vec in zip(with_face, e):
            row["emb"][slot] = vec
    return task["cond"], rows, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    datasets: Sequence[str] = DATASETS
    protocols: Sequence[str] = PROTOCOLS
    recognizers: Sequence[str] = ("mobilefacenet", "sface")
    codecs: Sequence[Codec] = field(default_factory=list)  # the uncompressed reference is always added
    settings: Sequence[str] = SETTINGS
    limit: int | None = None
    workers: int = 1
    threads: int = 1
    flip: bool = True
    no_flip_for: Sequence[str] = ()  # recognizers embedded without flip averaging even when ``flip``
    chunk: int = 32
    seed: int = 0
    cache: Path | None = None
    assets: str | None = None
    reference: tuple[str, object] = ("hevc", 23)
    progress: bool = True
    crop_template: str = CROP_TEMPLATE  # the face-crop protocol's crop (a TEMPLATES name)
    # A capture domain applied to every probe before coding (the gallery stays the clean uncompressed image).
    probe_domain: str | None = None

    def __post_init__(self):
        from facelink.shared.alignment import TEMPLATES

        if self.crop_template not in TEMPLATES:
            raise ValueError(f"unknown crop template {self.crop_template!r}; known: {', '.join(TEMPLATES)}")
        if self.probe_domain is not None:
            from facelink.cloud.training.domains import get_domain

            get_domain(self.probe_domain)
            if list(self.settings) != ["asymmetric"]:
                raise ValueError("a probe domain transforms probes only, against the clean gallery: it needs "
                                 "the asymmetric setting alone")

    def flip_of(self, recognizer: str) -> bool:
        return bool(self.flip and recognizer not in self.no_flip_for)

    def resolved(self) -> dict:
        return {
            "datasets": list(self.datasets),
            "protocols": list(self.protocols),
            "recognizers": list(self.recognizers),
            "settings": list(self.settings),
            "codecs": [
                {
                    "name": c.name,
                    "qualities": list(c.qualities),
                    "quality_name": c.quality_name,
                    "settings": c.settings(),
                }
                for c in self.codecs
            ],
            "limit_pairs_per_fold": self.limit,
            "workers": self.workers,
            "threads_per_worker": self.threads,
            "flip": {r: self.flip_of(r) for r in self.recognizers},
            "chunk": self.chunk,
            "seed": self.seed,
            "cache": str(self.cache),
            "reference": {"codec": self.reference[0], "quality": self.reference[1]},
            "detector": "yunet (largest face)",
            "crop_template": self.crop_template,
            **({"probe_domain": self.probe_domain} if self.probe_domain else {}),
        }


def all_codecs(cfg: RunConfig) -> list[Codec]:
    names = [c.name for c in cfg.codecs]
    return ([get_codec("uncompressed")] if "uncompressed" not in names else []) + list(cfg.codecs)


def encoded_indices(suite: Suite, setting: str) -> np.ndarray:
    """Indices into ``suite.keys`` of the images a setting compresses: both of every pair (symmetric) or the
    probes, the second of every pair (asymmetric)."""
    if setting == "symmetric":
        return np.unique(suite.pairs)
    if setting == "asymmetric":
        return np.unique(suite.pairs[:, 1])
    raise ValueError(f"unknown setting {setting!r}")


def images_to_code(suite: Suite, codec: Codec, settings: Sequence[str]) -> list[str]:
    """The images a codec must code: those the asked settings compress; every image for the uncompressed
    reference, which is also the asymmetric setting's gallery."""
    if codec.name == "uncompressed":
        return list(suite.keys)
    idx = np.unique(np.concatenate([encoded_indices(suite, s) for s in settings]))
    return [suite.keys[i] for i in idx]


def probe_conditions(cfg: RunConfig, codec: Codec) -> list[str | None]:
    """The probe domains a codec is computed under: the run's; for the uncompressed reference with a probe domain
    also none (the clean gallery)."""
    if cfg.probe_domain is not None and codec.name == "uncompressed":
        return [None, cfg.probe_domain]
    return [cfg.probe_domain]


def compute(cfg: RunConfig, suites: dict[str, Suite], log=print) -> dict:
    """Fill the cache for every (dataset, protocol, codec, quality, image); returns timing statistics."""
    from tqdm import tqdm

    cache = Cache(cfg.cache)
    slots = [recognizer_slot(r, cfg.flip_of(r)) for r in cfg.recognizers]
    tasks = []
    for ds_name, suite in suites.items():
        for protocol in cfg.protocols:
            for codec, domain in [(c, d) for c in all_codecs(cfg) for d in probe_conditions(cfg, c)]:
                for q in codec.qualities:
                    cond = condition_for(ds_name, protocol, codec, q, cfg.flip, cfg.crop_template, domain)
                    images = (
                        images_to_code(suite, codec, cfg.settings)
                        if domain is None or codec.name != "uncompressed"
                        else [suite.keys[i] for i in encoded_indices(suite, "asymmetric")]
                    )
                    todo = cache.missing(cond.key, images, slots)
                    stored = cache.encoded(cond.key, todo) if todo else {}
                    for i in range(0, len(todo), cfg.chunk):
                        part = todo[i : i + cfg.chunk]
                        tasks.append(
                            {
                                "cond": cond.key,
                                "protocol": protocol,
                                "codec": codec.name,
                                "quality": q,
                                "root": str(suite.root),
                                "images": part,
                                "encoded": {k: stored[k] for k in part if k in stored},
                                "recognizers": list(cfg.recognizers),
                                "flip": {r: cfg.flip_of(r) for r in cfg.recognizers},
                                "crop_template": cfg.crop_template,
                                "probe_domain": domain,
                                "label": f"{ds_name}/{protocol}/{codec.name}:{q}" + (f"/{domain}" if domain else ""),
                            }
                        )
    n_images = sum(len(t["images"]) for t in tasks)
    log(f"{len(tasks)} chunks, {n_images} image encodings to compute (the rest is cached in {cfg.cache})")
    stats = {"images": 0, "seconds": 0.0, "by_codec": {}}
    if not tasks:
        cache.close()
        return stats
    bar = tqdm(total=n_images, unit="img", disable=not cfg.progress, smoothing=0.05)

    def consume(result, label, codec_name):
        cond, rows, secs = result
        cache.put(cond, rows)
        stats["images"] += len(rows)
        stats["seconds"] += secs
        c = stats["by_codec"].setdefault(codec_name, [0, 0.0])
        c[0] += len(rows)
        c[1] += secs
        bar.set_postfix_str(label, refresh=False)
        bar.update(len(rows))

    if cfg.workers <= 1:
        _init_worker(cfg.threads)
        for t in tasks:
            consume(process_images(t), t["label"], t["codec"])
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg.threads,)) as pool:
            labels = {id(t): (t["label"], t["codec"]) for t in tasks}
            for t, res in zip(tasks, pool.imap(process_images, tasks)):
                consume(res, *labels[id(t)])
    bar.close()
    cache.close()
    for name, (n, secs) in stats["by_codec"].items():
        log(f"  {name:13s} {n:7d} images  {1000 * secs / max(n, 1):7.1f} ms/image (codec + detection + embeddings)")
    return stats


# ------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------
def pair_scores(gallery: np.ndarray, probe: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit embeddings per pair; NaN where either side has no face."""
    a, b = gallery[pairs[:, 0]], probe[pairs[:, 1]]
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def evaluate_condition(
    cache: Cache, suite: Suite, cond: Condition, ref: Condition, recognizer: str, flip: bool, setting: str
) -> dict:
    """Verification metrics and rate of one codec setting under one setting (asymmetric/symmetric)."""
    from facelink.cloud.evaluation.verification import floor_missing, verification_metrics

    slot = recognizer_slot(recognizer, flip)
    encoded = encoded_indices(suite, setting)
    bits, pixels, face, emb = cache.load(cond.key, suite.keys, slot, need=encoded)
    if setting == "symmetric":
        gallery = emb
    else:  # asymmetric: the first image of every pair from the uncompressed reference
        _, _, _, gallery = cache.load(ref.key, suite.keys, slot, dim=emb.shape[1], need=np.unique(suite.pairs[:, 0]))
    scores = pair_scores(gallery, emb, suite.pairs)
    # The recognizer issue's protocol: 10-fold accuracy, ROC figures, and the "reject" no-face rule (a pair with
    # a missing face scores below every other pair).
    v = verification_metrics(floor_missing(scores), suite.same, suite.folds)
    m = {
        "accuracy": v.accuracy_mean,
        "accuracy_std": v.accuracy_std,
        "accuracy_se": v.accuracy_se,
        "tar@far=1e-3": v.tar_at_far,
        "far_achieved": v.far_achieved,
        "eer": v.eer,
        "auc": v.auc,
        "no_face_pairs": int((~np.isfinite(scores)).sum()),
    }
    ok = np.isfinite(bits[encoded])
    bpp = float(np.mean(bits[encoded][ok] / pixels[encoded][ok])) if ok.any() else float("nan")
    m.update(
        {
            "bpp": bpp,
            "bytes_per_face": float(np.mean(bits[encoded][ok]) / 8) if ok.any() else float("nan"),
            "images_encoded": int(ok.sum()),
            "no_face_images": int((~face[encoded]).sum()),
            "pixels_per_image": float(np.mean(pixels[encoded][ok])) if ok.any() else float("nan"),
        }
    )
    return m
