"""Face verification protocol: LFW-style 10-fold evaluation of pair scores, and the embedding pipeline that
produces those scores for any recognizer, detector and (optionally) a codec in the loop.

Protocol (what every number facelink reports means)
---------------------------------------------------
- **Pairs and folds.** A protocol is a list of pairs (image A, image B, same person or not), each in one of
  ``n_folds`` folds: LFW View 2 (``pairs.txt``) and facelink's CelebA test protocol
  (``benchmarks/protocols/celeba_test_pairs.txt``) both have 10 folds × (300 matched + 300 mismatched).
- **Score.** Cosine similarity of the two unit-norm embeddings (higher = more alike). A pair is declared
  "same" when its score is ≥ the threshold.
- **Accuracy, 10-fold.** For each fold k, the threshold is the one that maximises accuracy on the other nine
  folds (candidates: midpoints between consecutive distinct scores, plus one below and one above all scores;
  among equally good candidates the middle one is taken); accuracy is then measured on fold k. Reported:
  the mean of the 10 fold accuracies, their standard deviation (``ddof=1``) and the standard error
  (std/√10, LFW's "µ ± S_E").
- **ROC figures** are computed on all pairs pooled: **AUC** (Mann–Whitney, ties count one half), **EER**
  (where the false-accept and false-reject rates cross, linearly interpolated) and **TAR at FAR = 1e-3**: the
  threshold is the lowest one at which at most ⌊1e-3·N_mismatched⌋ mismatched pairs are accepted (3 of LFW's
  3,000), and TAR is the fraction of matched pairs accepted there.
- **No face found.** An image in which the detector finds no face is counted (``no_face_images``) and its
  pairs are counted (``no_face_pairs``); under the default rule ``reject`` such a pair is scored below every
  other pair, i.e. it is always declared "different" (a false reject if matched, a true reject if mismatched),
  as a deployed system would have to. The rule ``mean-landmarks`` instead aligns with the median landmarks of
  the faces detected in the same protocol's images of the same size (sensible for pre-aligned sets such as LFW
  deep-funneled and the CelebA faces). Either way, nothing is dropped silently and the rule is recorded.
- **Flip averaging** (optional, recorded): an image's embedding is the normalised sum of the embeddings of the
  crop and of its mirror image.
- **Settings with a codec.** ``none``: both images uncompressed. ``asymmetric``: image A of each pair
  (gallery) uncompressed, image B (probe) passed through the codec. ``symmetric``: both through the codec.
  The codec acts at ``codec_stage="crop"`` (default; what the edge sends: the face is detected on the
  original image, aligned to the canonical 112×112 ArcFace crop, that crop goes through the codec, and the
  decoded crop is re-aligned to the recognizer's template) or ``"image"`` (the whole image goes through the
  codec and detection runs on the decoded image).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facelink.shared.alignment import ARCFACE_112, align

SETTINGS = ("none", "asymmetric", "symmetric")
NO_FACE_RULES = ("reject", "mean-landmarks")
CODEC_STAGES = ("crop", "image")
FAR_TARGET = 1e-3


# ----------------------------------------------------------------------------------------------------------------
# Pair protocols
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int


@dataclass
class PairProtocol:
    name: str
    pairs: list[Pair]
    n_folds: int
    source: str = ""

    @property
    def labels(self) -> np.ndarray:
        return np.array([p.same for p in self.pairs], dtype=bool)

    @property
    def folds(self) -> np.ndarray:
        return np.array([p.fold for p in self.pairs], dtype=np.int64)

    def images(self) -> list[Path]:
        """Distinct images, in first-use order."""
        seen: dict[Path, None] = {}
        for p in self.pairs:
            seen.setdefault(p.a)
            seen.setdefault(p.b)
        return list(seen)


def folds_from_view2_order(n_pairs: int, n_folds: int, per_class: int) -> np.ndarray:
    """LFW View 2 order: fold k holds ``per_class`` matched then ``per_class`` mismatched pairs."""
    if n_pairs != n_folds * per_class * 2:
        raise ValueError(f"{n_pairs} pairs do not make {n_folds} folds of 2×{per_class}")
    return np.arange(n_pairs) // (2 * per_class)


# ----------------------------------------------------------------------------------------------------------------
# Protocol arithmetic
# ----------------------------------------------------------------------------------------------------------------
def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be matching 1-d arrays")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (no-face pairs are mapped to a finite floor first)")
    return s, y


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    u = np.unique(scores)
    if len(u) == 0:
        return np.array([0.0])
    mids = (u[:-1] + u[1:]) / 2
    return np.concatenate([[u[0] - 1.0], mids, [u[-1] + 1.0]])


def accuracy_at(scores, labels, threshold: float) -> float:
    s, y = _check(scores, labels)
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores, labels) -> tuple[float, float]:
    """Threshold maximising accuracy on (scores, labels) and that accuracy; ties → the middle candidate."""
    s, y = _check(scores, labels)
    cands = candidate_thresholds(s)
    # Accepted count per candidate via sorting: accuracy = (TP + TN) / n.
    order = np.argsort(s)
    s_sorted, y_sorted = s[order], y[order]
    # number of pairs with score < t (rejected) for each candidate t
    below = np.searchsorted(s_sorted, cands, side="left")
    neg_cum = np.concatenate([[0], np.cumsum(~y_sorted)])
    pos_cum = np.concatenate([[0], np.cumsum(y_sorted)])
    tn = neg_cum[below]
    tp = pos_cum[-1] - pos_cum[below]
    acc = (tp + tn) / len(s)
    best = np.flatnonzero(acc == acc.max())
    i = best[(len(best) - 1) // 2]
    return float(cands[i]), float(acc[i])


@dataclass
class FoldResult:
    fold: int
    threshold: float
    train_accuracy: float
    accuracy: float


def kfold_accuracy(scores, labels, folds) -> list[FoldResult]:
    """Threshold chosen on the other folds, accuracy on each fold."""
    s, y = _check(scores, labels)
    f = np.asarray(folds)
    out = []
    for k in np.unique(f):
        test = f == k
        t, train_acc = best_threshold(s[~test], y[~test])
        out.append(FoldResult(int(k), t, train_acc, accuracy_at(s[test], y[test], t)))
    return out


def roc_auc(scores, labels) -> float:
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(s)  # average ranks: ties count one half
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tar_at_far(scores, labels, far: float = FAR_TARGET) -> tuple[float, float, float]:
    """(TAR, achieved FAR, threshold): lowest threshold accepting at most ⌊far·N_neg⌋ mismatched pairs."""
    s, y = _check(scores, labels)
    neg = np.sort(s[~y])[::-1]
    pos = s[y]
    k = int(math.floor(far * len(neg) + 1e-9))  # allowed false accepts
    if k >= len(neg):
        t = neg[-1]
    else:
        # accept iff score > neg[k] (the (k+1)-th highest impostor): at most k impostors above it
        t = neg[k]
    tar = float(np.mean(pos > t)) if len(pos) else float("nan")
    achieved = float(np.mean(neg > t)) if len(neg) else float("nan")
    return tar, achieved, float(t)


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and its threshold: FAR(t) = FRR(t), linear interpolation between ROC points."""
    s, y = _check(scores, labels)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if not len(pos) or not len(neg):
        raise ValueError(f"EER needs matched and mismatched pairs; got {len(pos)} matched, {len(neg)} mismatched")
    ts = np.concatenate([[-np.inf], np.unique(s), [np.inf]])
    # accept iff score >= t
    far = 1.0 - np.searchsorted(neg, ts, side="left") / len(neg)
    frr = np.searchsorted(pos, ts, side="left") / len(pos)
    d = far - frr  # decreasing in t: +1 at -inf, -1 at +inf
    i = int(np.flatnonzero(d <= 0)[0])
    if d[i] == 0:
        return float(far[i]), float(ts[i])
    # interpolate between i-1 (d > 0) and i (d < 0)
    w = d[i - 1] / (d[i - 1] - d[i])
    rate = far[i - 1] + w * (far[i] - far[i - 1])
    t0, t1 = ts[i - 1], ts[i]
    thr = float(t1 if not np.isfinite(t0) else (t0 if not np.isfinite(t1) else t0 + w * (t1 - t0)))
    return float(rate), thr


@dataclass
class Metrics:
    accuracy_mean: float
    accuracy_std: float
    accuracy_se: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    auc: float
    eer: float
    eer_threshold: float
    tar_at_far: float
    far_target: float
    far_achieved: float
    far_threshold: float
    n_pairs: int
    n_matched: int
    n_mismatched: int

    def as_dict(self) -> dict:
        return asdict(self)


def verification_metrics(scores, labels, folds, far: float = FAR_TARGET) -> Metrics:
    s, y = _check(scores, labels)
    fr = kfold_accuracy(s, y, folds)
    accs = np.array([r.accuracy for r in fr])
    std = float(accs.std(ddof=1)) if len(accs) > 1 else 0.0
    e, et = eer(s, y)
    tar, far_got, far_t = tar_at_far(s, y, far)
    return Metrics(
        accuracy_mean=float(accs.mean()), accuracy_std=std, accuracy_se=std / math.sqrt(len(accs)),
        fold_accuracies=accs.tolist(), fold_thresholds=[r.threshold for r in fr],
        auc=roc_auc(s, y), eer=e, eer_threshold=et, tar_at_far=tar, far_target=far, far_achieved=far_got,
        far_threshold=far_t, n_pairs=len(s), n_matched=int(y.sum()), n_mismatched=int((~y).sum()),
    )


def floor_missing(scores: np.ndarray) -> np.ndarray:
    """Replace NaN scores (pairs with an image without a face) by a value below every real score."""
    s = np.asarray(scores, dtype=np.float64).copy()
    bad = ~np.isfinite(s)
    if bad.any():
        finite = s[~bad]
        s[bad] = (finite.min() if len(finite) else 0.0) - 1.0
    return s


# ----------------------------------------------------------------------------------------------------------------
# Embedding pipeline
# ----------------------------------------------------------------------------------------------------------------
Codec = Callable[[np.ndarray], np.ndarray]  # uint8 H×W×3 RGB → decoded uint8 H×W×3 RGB


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rgb(data: bytes, where: str = "image") -> np.ndarray:
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if im is None:
        raise ValueError(f"cannot decode {where}")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


@dataclass
class EmbedConfig:
    recognizer: str
    detector: str = "yunet"
    flip: bool = False
    no_face: str = "reject"
    codec_id: str | None = None  # identifies the codec (and its settings) in cache keys; None: not cached
    codec_stage: str = "crop"

    def views(self) -> tuple[str, ...]:
        return ("orig", "mirror") if self.flip else ("orig",)

    def key(self, sha: str, compressed: bool, view: str) -> str:
        """Cache key of one view (``orig`` or ``mirror``) of one image; flip averaging is composed from views."""
        codec = f"{self.codec_id}@{self.codec_stage}" if compressed else "none"
        return f"{sha}|{self.recognizer}|{self.detector}|{view}|codec={codec}|noface={self.no_face}"


class _NullCache:
    def get_embedding(self, key):
        return None

    def put_embedding(self, key, value):
        pass

    def get_detection(self, key):
        return None

    def put_detection(self, key, value):
        pass

    def commit(self):
        pass


@dataclass
class EmbeddingTable:
    """Embeddings of (image, compressed?) items; ``None`` where no face was found (and the rule is ``reject``)."""

    embeddings: dict[tuple[Path, bool], np.ndarray | None]
    no_face: list[Path] = field(default_factory=list)
    fallback_landmarks: list[Path] = field(default_factory=list)
    cache_hits: int = 0


def _compose(views: list[np.ndarray]) -> np.ndarray:
    """Unit embedding of one view, or the normalised sum of the unit original and mirror embeddings."""
    e = views[0] / max(float(np.linalg.norm(views[0])), 1e-12)
    if len(views) > 1:
        m = views[1] / max(float(np.linalg.norm(views[1])), 1e-12)
        e = e + m
        e = e / max(float(np.linalg.norm(e)), 1e-12)
    return e.astype(np.float32)


def embed_items(items: Sequence[tuple[Path, bool]], recognizer, detector, cfg: EmbedConfig,
                codec: Codec | None = None, cache=None, progress: bool = True,
                batch_size: int = 64) -> EmbeddingTable:
    """Embed each (image path, through the codec?) item with ``recognizer``, detecting faces with ``detector``.

    ``cache`` (optional) has get/put_embedding, get/put_detection and commit. Embeddings are cached per view
    (the crop, and its mirror when flipping) under keys made of the image file's sha256, recognizer, detector,
    view, codec and no-face rule (``EmbedConfig.key``); compressed items are cached only when ``cfg.codec_id``
    names the codec. Detections are cached by image sha256 and detector.
    """
    from tqdm import tqdm

    if cfg.no_face not in NO_FACE_RULES:
        raise ValueError(f"no_face must be one of {NO_FACE_RULES}")
    if cfg.codec_stage not in CODEC_STAGES:
        raise ValueError(f"codec_stage must be one of {CODEC_STAGES}")
    if any(c for _, c in items) and codec is None:
        raise ValueError("compressed items requested but no codec given")
    cache = cache or _NullCache()
    views = cfg.views()
    table = EmbeddingTable({})
    no_face: set[Path] = set()
    todo: list[tuple] = []  # (item, cache keys, image, landmarks, cache hits per view)
    shas: dict[Path, str] = {}
    detected: dict[Path, np.ndarray | None] = {}
    bar = tqdm(items, desc=f"{cfg.recognizer}: read+detect", unit="img", disable=not progress, leave=False)
    for path, compressed in bar:
        data = Path(path).read_bytes()
        sha = shas.setdefault(path, sha256_bytes(data))
        cacheable = not compressed or cfg.codec_id is not None
        keys = [cfg.key(sha, compressed, v) for v in views] if cacheable else []
        hits = [cache.get_embedding(k) for k in keys] if keys else [None] * len(views)
        if all(h is not None for h in hits):
            if hits[0][1]:
                no_face.add(path)
            table.embeddings[(path, compressed)] = None if hits[0][0] is None else _compose([h[0] for h in hits])
            table.cache_hits += 1
            continue
        image = read_rgb(data, str(path))
        if compressed and cfg.codec_stage == "image":
            image = codec(image)
            lm = _detect(detector, image)
        else:
            if path not in detected:
                dkey = f"{sha}|{cfg.detector}"
                got = cache.get_detection(dkey)  # an empty (0, 2) array records "no face"
                if got is None:
                    got = _detect(detector, image)
                    cache.put_detection(dkey, np.zeros((0, 2)) if got is None else got)
                detected[path] = got if (got is not None and len(got)) else None
            lm = detected[path]
        todo.append(((path, compressed), keys, image, lm, hits))

    # Fallback landmarks for the "mean-landmarks" rule: median of detected landmarks per image size.
    fallback: dict[tuple[int, int], np.ndarray] = {}
    if cfg.no_face == "mean-landmarks":
        by_size: dict[tuple[int, int], list[np.ndarray]] = {}
        for _, _, image, lm, _ in todo:
            if lm is not None:
                by_size.setdefault(image.shape[:2], []).append(lm)
        fallback = {k: np.median(np.stack(v), 0) for k, v in by_size.items()}

    crops, owners = [], []
    for item, keys, image, lm, hits in todo:
        if lm is None:
            no_face.add(item[0])
            if cfg.no_face == "mean-landmarks" and image.shape[:2] in fallback:
                lm = fallback[image.shape[:2]]
                table.fallback_landmarks.append(item[0])
            else:
                table.embeddings[item] = None
                for k in keys:
                    cache.put_embedding(k, (None, True))
                continue
        if item[1] and cfg.codec_stage == "crop":
            canonical = codec(align(image, lm, ARCFACE_112))
            crop = align(canonical, ARCFACE_112.points, recognizer.template)
        else:
            crop = align(image, lm, recognizer.template)
        crops.append(crop)
        # views already cached (a usable hit for this view) are not recomputed
        have = [None if (h is None or h[0] is None) else h[0] for h in hits]
        owners.append((item, keys, item[0] in no_face, have))
    todo.clear()

    # Embed, per view, only the crops whose view is not cached (e.g. only mirrors after a run without flip).
    for vi, view in enumerate(views):
        need = [j for j, o in enumerate(owners) if o[3][vi] is None]
        bar = tqdm(total=len(need), desc=f"{cfg.recognizer}: embed ({view})", unit="img", disable=not progress,
                   leave=False)
        for i in range(0, len(need), batch_size):
            idx = need[i : i + batch_size]
            batch = np.stack([crops[j] for j in idx])
            if view == "mirror":
                batch = np.ascontiguousarray(batch[:, :, ::-1])
            for j, e in zip(idx, recognizer.embed(batch)):
                item, keys, nf, have = owners[j]
                have[vi] = e
                if keys:
                    cache.put_embedding(keys[vi], (e, nf))
            bar.update(len(idx))
        bar.close()
    for item, _, _, have in owners:
        table.embeddings[item] = _compose(have)
    cache.commit()
    table.no_face = sorted(no_face)
    return table


def _detect(detector, image: np.ndarray) -> np.ndarray | None:
    face = detector.largest(image, rgb=True)
    return None if face is None else np.asarray(face.landmarks, dtype=np.float64)


def pair_items(protocol: PairProtocol, setting: str) -> list[tuple[Path, bool]]:
    """The (image, compressed?) items a setting needs: gallery = image A, probe = image B of each pair."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    seen: dict[tuple[Path, bool], None] = {}
    for p in protocol.pairs:
        seen.setdefault((p.a, setting == "symmetric"))
        seen.setdefault((p.b, setting in ("asymmetric", "symmetric")))
    return list(seen)


def pair_scores(protocol: PairProtocol, table: EmbeddingTable, setting: str) -> np.ndarray:
    """Cosine similarity per pair; NaN where either image had no face (and no fallback)."""
    out = np.empty(len(protocol.pairs))
    ca, cb = setting == "symmetric", setting in ("asymmetric", "symmetric")
    for i, p in enumerate(protocol.pairs):
        ea, eb = table.embeddings[(p.a, ca)], table.embeddings[(p.b, cb)]
        out[i] = np.nan if ea is None or eb is None else float(np.dot(ea, eb))
    return out


@dataclass
class VerificationResult:
    protocol: str
    recognizer: str
    detector: str
    flip: bool
    setting: str
    no_face_rule: str
    codec: str | None
    codec_stage: str | None
    n_images: int
    no_face_images: int
    no_face_pairs: int  # pairs with at least one image in which no face was found
    rejected_pairs: int  # of those, pairs scored as an automatic "different" (rule "reject")
    fallback_landmark_images: int
    metrics: Metrics
    scores: np.ndarray | None = None

    def as_dict(self, with_scores: bool = False) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("metrics", "scores")}
        d["metrics"] = self.metrics.as_dict()
        if with_scores and self.scores is not None:
            d["scores"] = [None if not np.isfinite(x) else round(float(x), 6) for x in self.scores]
        return d


def evaluate(protocol: PairProtocol, recognizer, detector, *, detector_name: str = "yunet", flip: bool = False,
             setting: str = "none", codec: Codec | None = None, codec_id: str | None = None,
             codec_stage: str = "crop", no_face: str = "reject", cache=None, progress: bool = True,
             far: float = FAR_TARGET) -> VerificationResult:
    """Run ``protocol`` end to end: detect, align, (codec), embed, score, and compute the metrics."""
    if setting != "none" and codec is None:
        raise ValueError(f"setting {setting!r} needs a codec")
    cfg = EmbedConfig(getattr(recognizer, "cache_id", recognizer.name), detector_name, flip, no_face, codec_id,
                      codec_stage)
    items = pair_items(protocol, setting)
    table = embed_items(items, recognizer, detector, cfg, codec=codec, cache=cache, progress=progress)
    raw = pair_scores(protocol, table, setting)
    missing = ~np.isfinite(raw)
    no_face_set = set(table.no_face)
    no_face_pairs = sum(1 for p in protocol.pairs if p.a in no_face_set or p.b in no_face_set)
    metrics = verification_metrics(floor_missing(raw), protocol.labels, protocol.folds, far)
    return VerificationResult(
        protocol=protocol.name, recognizer=recognizer.name, detector=detector_name, flip=flip, setting=setting,
        no_face_rule=no_face, codec=codec_id if setting != "none" else None,
        codec_stage=codec_stage if setting != "none" else None, n_images=len({p for p, _ in items}),
        no_face_images=len(no_face_set), no_face_pairs=int(no_face_pairs), rejected_pairs=int(missing.sum()),
        fallback_landmark_images=len(set(table.fallback_landmarks)), metrics=metrics, scores=raw,
    )


__all__ = [
    "Pair", "PairProtocol", "Metrics", "FoldResult", "VerificationResult", "EmbedConfig", "EmbeddingTable",
    "best_threshold", "kfold_accuracy", "roc_auc", "tar_at_far", "eer", "verification_metrics", "floor_missing",
    "embed_items", "pair_items", "pair_scores", "evaluate", "SETTINGS", "NO_FACE_RULES", "CODEC_STAGES",
    "folds_from_view2_order",
]


# ----------------------------------------------------------------------------------------------------------------
# The protocols facelink evaluates
# ----------------------------------------------------------------------------------------------------------------
CELEBA_PAIRS_FILE = "celeba_test_pairs.txt"
# sha256 of the committed CelebA test protocol (benchmarks/protocols/celeba_test_pairs.txt), checked on load.
CELEBA_PAIRS_SHA256 = "842c6105ec360f59478b25e48b7f18384392e51523f9e88d4afb14beb3cde56b"


def _view2(name: str, raw, path_of, source: str) -> PairProtocol:
    n = len(raw)
    per_class = n // 20 if n % 20 == 0 else None
    if per_class is None:
        raise ValueError(f"{source}: {n} pairs are not 10 folds of matched + mismatched pairs")
    folds = folds_from_view2_order(n, 10, per_class)
    pairs = [Pair(path_of(*a), path_of(*b), same, int(f)) for (a, b, same), f in zip(raw, folds)]
    return PairProtocol(name, pairs, 10, source)


def lfw_view2_protocol(assets=None) -> PairProtocol:
    """LFW View 2 (``pairs.txt``): 10 folds × (300 matched + 300 mismatched), deep-funneled images."""
    from facelink.cloud.training import datasets

    root = datasets.lfw_root(assets)
    raw = datasets.read_lfw_pairs(root / "pairs.txt")
    return _view2("lfw-view2", raw, lambda name, n: datasets.lfw_image_path(root, name, n), str(root / "pairs.txt"))


def lfw_view1_pairs(split: str, assets=None) -> list[Pair]:
    """LFW View 1 (``pairsDevTrain.txt`` / ``pairsDevTest.txt``) pairs, all in fold 0 (View 1 is for model
    development: choose settings on DevTrain, check on DevTest)."""
    from facelink.cloud.training import datasets

    if split not in ("train", "test"):
        raise ValueError("View 1 split is 'train' or 'test'")
    root = datasets.lfw_root(assets)
    raw = datasets.read_lfw_pairs(root / ("pairsDevTrain.txt" if split == "train" else "pairsDevTest.txt"))
    path = lambda name, n: datasets.lfw_image_path(root, name, n)  # noqa: E731
    return [Pair(path(*a), path(*b), same, 0) for a, b, same in raw]


def celeba_test_protocol(assets=None, pairs_file: str | Path | None = None) -> PairProtocol:
    """facelink's CelebA test protocol on ``celeba-faces-256`` (test identities only), LFW View 2 form.

    The committed file's sha256 is checked unless another ``pairs_file`` is given.
    """
    from facelink.cloud.training import datasets
    from facelink.shared.detection import verified
    from facelink.shared.paths import PROTOCOLS_DIR

    if pairs_file is None:
        pairs_file = verified(PROTOCOLS_DIR / CELEBA_PAIRS_FILE, CELEBA_PAIRS_SHA256)
    root = datasets.celeba_root(assets)
    raw = datasets.read_lfw_pairs(Path(pairs_file))
    return _view2("celeba-test", raw, lambda ident, n: datasets.celeba_image_path(root, ident, n), str(pairs_file))


PROTOCOLS = {"lfw": lfw_view2_protocol, "celeba": celeba_test_protocol}
