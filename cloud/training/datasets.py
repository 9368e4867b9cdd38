"""Face data sets in their official layouts, and the splits that keep training away from what is tested.

- LFW (deep-funneled): ``<root>/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg`` with ``pairs.txt`` (View 2).
  Training may use only the images that ``pairs.txt`` never references.
- CelebA faces (``celeba-faces-256``): ``images/NNNNNN.jpg`` plus ``identities.tsv``. Identities are split
  once, by a hash of the CelebA identity number, into ``train`` and ``test`` (:func:`celeba_split`).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from facelink.shared.paths import MissingAssetError, assets_dir, require

LFW_DIRNAME = "lfw"
LFW_IMAGES = "lfw-deepfunneled"
CELEBA_DIRNAME = "celeba-faces-256"
# Fraction of CelebA identities held out for testing; chosen by hash so the split never depends on file order.
CELEBA_TEST_FRACTION = 0.5
CELEBA_SPLIT_SALT = "facelink-celeba-split-v1"


@dataclass(frozen=True)
class FaceImage:
    path: Path
    identity: str


def lfw_root(assets: str | Path | None = None) -> Path:
    return require(assets_dir(assets) / LFW_DIRNAME, "LFW (lfw/ with lfw-deepfunneled/ and pairs.txt)")


def lfw_image_path(root: Path, name: str, number: int) -> Path:
    return root / LFW_IMAGES / name / f"{name}_{number:04d}.jpg"


def read_lfw_pairs(path: Path) -> list[tuple[tuple[str, int], tuple[str, int], bool]]:
    """Parse an LFW pair file (View 1 or View 2): ((name, n), (name, n), same) per pair, in file order."""
    lines = require(path, "LFW pair file").read_text().split("\n")
    header = lines[0].split()
    pairs = []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 3:
            pairs.append(((parts[0], int(parts[1])), (parts[0], int(parts[2])), True))
        elif len(parts) == 4:
            pairs.append(((parts[0], int(parts[1])), (parts[2], int(parts[3])), False))
        else:
            raise ValueError(f"{path}:{lineno}: expected 3 or 4 fields, got {len(parts)}")
    if len(header) == 2:  # View 2: "<folds> <pairs per class per fold>"
        expected = int(header[0]) * int(header[1]) * 2
    else:  # View 1: "<pairs per class>"
        expected = int(header[0]) * 2
    if len(pairs) != expected:
        raise ValueError(f"{path}: header promises {expected} pairs, file has {len(pairs)}")
    return pairs


def lfw_benchmark_images(assets: str | Path | None = None) -> set[Path]:
    """Every image that LFW View 2 (``pairs.txt``) references: never to be trained on."""
    root = lfw_root(assets)
    used = set()
    for a, b, _ in read_lfw_pairs(root / "pairs.txt"):
        used.add(lfw_image_path(root, *a))
        used.add(lfw_image_path(root, *b))
    return used


def lfw_all_images(assets: str | Path | None = None) -> list[FaceImage]:
    root = lfw_root(assets)
    return [FaceImage(p, p.parent.name) for p in sorted((root / LFW_IMAGES).glob("*/*.jpg"))]


def lfw_train_images(assets: str | Path | None = None) -> list[FaceImage]:
    """LFW images that no View 2 pair references (5,532 of the 13,233 in the official release)."""
    excluded = lfw_benchmark_images(assets)
    return [im for im in lfw_all_images(assets) if im.path not in excluded]


def celeba_root(assets: str | Path | None = None) -> Path:
    return require(assets_dir(assets) / CELEBA_DIRNAME, "CelebA faces (celeba-faces-256/ with identities.tsv)")


def celeba_images(assets: str | Path | None = None) -> list[FaceImage]:
    root = celeba_root(assets)
    with open(require(root / "identities.tsv", "celeba-faces-256/identities.tsv"), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [FaceImage(root / "images" / r["file"], r["identity"]) for r in rows]


def celeba_is_test_identity(identity: str) -> bool:
    digest = hashlib.sha256(f"{CELEBA_SPLIT_SALT}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < CELEBA_TEST_FRACTION


def celeba_split(split: str, assets: str | Path | None = None) -> list[FaceImage]:
    """``train`` or ``test`` images of the CelebA faces; identities never cross the split."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown CelebA split {split!r}; expected 'train' or 'test'")
    want_test = split == "test"
    return [im for im in celeba_images(assets) if celeba_is_test_identity(im.identity) == want_test]


def codec_training_images(assets: str | Path | None = None) -> list[FaceImage]:
    """What the codecs train on: LFW images outside View 2 plus the CelebA train identities."""
    return lfw_train_images(assets) + celeba_split("train", assets)


# ----------------------------------------------------------------------------------------------------------------
# CelebA-HQ in its real layout (for users who have it; not among the shared assets)
# ----------------------------------------------------------------------------------------------------------------
CELEBAHQ_DIRNAME = "celeba-hq"
CELEBAHQ_MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
CELEBA_IDENTITY_FILE = "identity_CelebA.txt"
CELEBAHQ_IMAGE_DIRS = ("CelebA-HQ-img", "CelebAMask-HQ/CelebA-HQ-img", "images")


def celebahq_root(root: str | Path | None = None, assets: str | Path | None = None) -> Path:
    """``root`` if given, else ``<assets>/celeba-hq``; must hold the mapping and identity files and an image folder."""
    base = Path(root).expanduser() if root else assets_dir(assets) / CELEBAHQ_DIRNAME
    return require(base, "CelebA-HQ (a folder with CelebA-HQ-img/, CelebA-HQ-to-CelebA-mapping.txt and "
                         "identity_CelebA.txt; pass its path)")


def read_celeba_identities(path: Path) -> dict[str, str]:
    """``identity_CelebA.txt``: ``<orig file> <identity>`` per line → {orig file: identity}."""
    out = {}
    for lineno, line in enumerate(require(path, "CelebA identity_CelebA.txt").read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<file> <identity number>', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def read_celebahq_mapping(path: Path) -> dict[int, str]:
    """``CelebA-HQ-to-CelebA-mapping.txt``: header ``idx orig_idx orig_file``, then one row per HQ image →
    {HQ index: original CelebA file name}."""
    lines = require(path, "CelebA-HQ-to-CelebA-mapping.txt").read_text().splitlines()
    if not lines or lines[0].split()[:3] != ["idx", "orig_idx", "orig_file"]:
        raise ValueError(f"{path}: expected the header 'idx orig_idx orig_file'")
    out = {}
    for lineno, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<idx> <orig_idx> <orig_file>', got {line!r}")
        out[int(parts[0])] = parts[2]
    return out


def celebahq_images(root: str | Path | None = None, assets: str | Path | None = None) -> list[FaceImage]:
    """CelebA-HQ images (``<idx>.jpg`` or ``.png``) with their CelebA identity, via the mapping file."""
    base = celebahq_root(root, assets)
    mapping = read_celebahq_mapping(base / CELEBAHQ_MAPPING)
    identities = read_celeba_identities(base / CELEBA_IDENTITY_FILE)
    image_dir = next((base / d for d in CELEBAHQ_IMAGE_DIRS if (base / d).is_dir()), None)
    if image_dir is None:
        raise MissingAssetError(f"CelebA-HQ images not found under {base} "
                                f"(looked for {', '.join(CELEBAHQ_IMAGE_DIRS)})")
    out = []
    for p in sorted(image_dir.iterdir(), key=lambda p: (len(p.stem), p.stem)):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png") or not p.stem.isdigit():
            continue
        idx = int(p.stem)
        if idx not in mapping:
            raise ValueError(f"{p}: HQ index {idx} is not in {CELEBAHQ_MAPPING}")
        orig = mapping[idx]
        if orig not in identities:
            raise ValueError(f"{p}: original file {orig} has no identity in {CELEBA_IDENTITY_FILE}")
        out.append(FaceImage(p, identities[orig]))
    return out


def celebahq_split(split: str, root: str | Path | None = None, assets: str | Path | None = None) -> list[FaceImage]:
    """CelebA-HQ ``train``/``test`` with the same identity rule as :func:`celeba_split`."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown CelebA split {split!r}; expected 'train' or 'test'")
    return [im for im in celebahq_images(root, assets) if celeba_is_test_identity(im.identity) == (split == "test")]


# ----------------------------------------------------------------------------------------------------------------
# CelebA test verification protocol (LFW View 2 form), committed as benchmarks/protocols/celeba_test_pairs.txt
# ----------------------------------------------------------------------------------------------------------------
CELEBA_PROTOCOL_SEED = 20240603
CELEBA_PROTOCOL_FOLDS = 10
CELEBA_PROTOCOL_PER_CLASS = 300


def make_verification_protocol(
    images: list[FaceImage],
    n_folds: int = CELEBA_PROTOCOL_FOLDS,
    per_class: int = CELEBA_PROTOCOL_PER_CLASS,
    seed: int = CELEBA_PROTOCOL_SEED,
) -> list[list[tuple[tuple[str, int], tuple[str, int], bool]]]:
    """Folds of ``per_class`` matched + ``per_class`` mismatched pairs, identity-disjoint between folds.

    Images are named (identity, number) where number is the integer in the file name (CelebA's ``NNNNNN.jpg``).
    1. Identities (in a seeded random order) go one by one to the fold with the fewest possible matched pairs so
       far (ties: lowest fold), which balances folds; every identity lives in exactly one fold.
    2. Matched pairs: the fold's ``per_class`` pairs are spread over its identities as evenly as their image
       counts allow (water-filling: each identity gets an equal share, capped by its n·(n−1)/2 pairs, and the
       remainder goes to the others), then drawn without replacement within each identity.
    3. Mismatched pairs: two different identities of the fold drawn uniformly, one image of each, no repeats.
    Raises ``ValueError`` when a fold cannot hold ``per_class`` distinct pairs of either kind (then the data set is
    too small for identity-disjoint folds of that size).
    """
    import random

    rng = random.Random(seed)
    by_id: dict[str, list[int]] = {}
    for im in images:
        by_id.setdefault(im.identity, []).append(int(Path(im.path).stem))
    ids = sorted(by_id, key=int)
    rng.shuffle(ids)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    capacity = [0] * n_folds
    for ident in ids:
        n = len(by_id[ident])
        if n < 2:
            continue
        k = min(range(n_folds), key=lambda j: (capacity[j], j))
        folds[k].append(ident)
        capacity[k] += n * (n - 1) // 2
    out = []
    for k, members in enumerate(folds):
        members = sorted(members, key=int)
        caps = {m: len(by_id[m]) * (len(by_id[m]) - 1) // 2 for m in members}
        if sum(caps.values()) < per_class or len(members) < 2:
            raise ValueError(f"fold {k}: only {sum(caps.values())} matched pairs possible, need {per_class}")
        quota = {m: 0 for m in members}
        left, open_ = per_class, [m for m in members]
        while left > 0:
            share = max(1, left // len(open_))
            for m in list(open_):
                take = min(share, caps[m] - quota[m], left)
                quota[m] += take
                left -= take
                if quota[m] == caps[m]:
                    open_.remove(m)
                if left == 0:
                    break
        matched = []
        for m in members:
            nums = sorted(by_id[m])
            allp = [(nums[i], nums[j]) for i in range(len(nums)) for j in range(i + 1, len(nums))]
            for a, b in rng.sample(allp, quota[m]):
                matched.append(((m, a), (m, b), True))
        rng.shuffle(matched)
        mismatched, seen = [], set()
        possible = sum(len(by_id[a]) * len(by_id[b]) for i, a in enumerate(members) for b in members[i + 1 :])
        if possible < per_class:
            raise ValueError(f"fold {k}: only {possible} mismatched pairs possible, need {per_class}")
        while len(mismatched) < per_class:
            a, b = sorted(rng.sample(members, 2), key=int)
            pa, pb = rng.choice(by_id[a]), rng.choice(by_id[b])
            if (a, pa, b, pb) in seen:
                continue
            seen.add((a, pa, b, pb))
            mismatched.append(((a, pa), (b, pb), False))
        out.append(matched + mismatched)
    return out


def format_pairs_view2(folds: list[list[tuple[tuple[str, int], tuple[str, int], bool]]]) -> str:
    """LFW View 2 text: ``<folds>\\t<per class>``, then per fold the matched (``name n1 n2``) and mismatched
    (``name1 n1 name2 n2``) lines."""
    per_class = sum(1 for p in folds[0] if p[2])
    lines = [f"{len(folds)}\t{per_class}"]
    for fold in folds:
        same = [p for p in fold if p[2]]
        diff = [p for p in fold if not p[2]]
        if len(same) != per_class or len(diff) != per_class:
            raise ValueError("every fold needs the same number of matched and mismatched pairs")
        lines += [f"{a[0]}\t{a[1]}\t{b[1]}" for a, b, _ in same]
        lines += [f"{a[0]}\t{a[1]}\t{b[0]}\t{b[1]}" for a, b, _ in diff]
    return "\n".join(lines) + "\n"


def celeba_test_protocol_text(assets: str | Path | None = None) -> str:
    """The committed CelebA test protocol, regenerated from ``celeba-faces-256`` (test identities only)."""
    return format_pairs_view2(make_verification_protocol(celeba_split("test", assets)))


def celeba_image_path(root: Path, identity: str, number: int) -> Path:
    """Image of a CelebA pair-file entry in ``celeba-faces-256`` (the identity is not part of the path)."""
    return root / "images" / f"{number:06d}.jpg"
