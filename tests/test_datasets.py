"""Pair files, the CelebA-HQ layout, the CelebA identity split and the committed CelebA test protocol."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelink.cloud.evaluation import verification as V
from facelink.cloud.training import datasets as ds
from facelink.shared.paths import PROTOCOLS_DIR, MissingAssetError

LFW_PAIRS_SHA256 = "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592"


def test_parse_view2_and_view1_small_files(tmp_path):
    v2 = tmp_path / "pairs.txt"
    v2.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nCid\t2\t4\nBob\t1\tCid\t1\n")
    pairs = ds.read_lfw_pairs(v2)
    assert pairs == [(("Ann", 1), ("Ann", 2), True), (("Ann", 1), ("Bob", 3), False),
                     (("Cid", 2), ("Cid", 4), True), (("Bob", 1), ("Cid", 1), False)]
    v1 = tmp_path / "pairsDevTest.txt"
    v1.write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t3\n")
    assert len(ds.read_lfw_pairs(v1)) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("2\t1\nAnn\t1\t2\n")
    with pytest.raises(ValueError, match="header promises 4"):
        ds.read_lfw_pairs(bad)
    bad.write_text("1\nAnn\t1\n")
    with pytest.raises(ValueError, match="expected 3 or 4 fields"):
        ds.read_lfw_pairs(bad)


def test_official_lfw_pair_files():
    root = ds.lfw_root()
    assert hashlib.sha256((root / "pairs.txt").read_bytes()).hexdigest() == LFW_PAIRS_SHA256
    proto = V.lfw_view2_protocol()
    assert len(proto.pairs) == 6000 and proto.n_folds == 10
    assert Counter(proto.folds.tolist()) == {k: 600 for k in range(10)}
    assert proto.labels[:300].all() and not proto.labels[300:600].any()
    images = proto.images()
    assert len(images) == 7701 and all(p.is_file() for p in images[:50])
    assert len(V.lfw_view1_pairs("train")) == 2200 and len(V.lfw_view1_pairs("test")) == 1000


def test_missing_assets_message(tmp_path):
    with pytest.raises(MissingAssetError, match="FACELINK_ASSETS"):
        ds.lfw_root(tmp_path / "nowhere")
    with pytest.raises(MissingAssetError, match="--assets"):
        ds.celeba_root(tmp_path / "nowhere")


def _write_celebahq(root: Path, image_dir: str = "CelebA-HQ-img"):
    (root / image_dir).mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / image_dir / f"{i}.jpg"), np.full((8, 8, 3), 40 * i, np.uint8))
    (root / ds.CELEBAHQ_MAPPING).write_text(
        "idx         orig_idx        orig_file\n0           119613          119614.jpg\n"
        "1           99094           099095.jpg\n2           200121          200122.jpg\n")
    (root / ds.CELEBA_IDENTITY_FILE).write_text("000001.jpg 2880\n099095.jpg 10\n119614.jpg 7201\n200122.jpg 7201\n")


def test_celebahq_real_layout(tmp_path):
    _write_celebahq(tmp_path / "hq")
    ims = ds.celebahq_images(tmp_path / "hq")
    assert [(p.path.name, p.identity) for p in ims] == [("0.jpg", "7201"), ("1.jpg", "10"), ("2.jpg", "7201")]
    test_ids = {im.identity for im in ds.celebahq_split("test", tmp_path / "hq")}
    train_ids = {im.identity for im in ds.celebahq_split("train", tmp_path / "hq")}
    assert test_ids.isdisjoint(train_ids) and test_ids | train_ids == {"7201", "10"}
    assert all(ds.celeba_is_test_identity(i) for i in test_ids)
    # the CelebAMask-HQ nesting is found too; a bad mapping header is an error
    _write_celebahq(tmp_path / "mask", "CelebAMask-HQ/CelebA-HQ-img")
    assert len(ds.celebahq_images(tmp_path / "mask")) == 3
    (tmp_path / "mask" / ds.CELEBAHQ_MAPPING).write_text("0 1 2.jpg\n")
    with pytest.raises(ValueError, match="header"):
        ds.celebahq_images(tmp_path / "mask")
    with pytest.raises(MissingAssetError):
        ds.celebahq_images(tmp_path / "absent")


def test_celeba_faces_256_split_is_identity_disjoint():
    train, test = ds.celeba_split("train"), ds.celeba_split("test")
    assert len(train) + len(test) == 3944
    assert {i.identity for i in train}.isdisjoint({i.identity for i in test})


def test_committed_celeba_protocol_is_reproducible_and_sound():
    committed = PROTOCOLS_DIR / V.CELEBA_PAIRS_FILE
    assert hashlib.sha256(committed.read_bytes()).hexdigest() == V.CELEBA_PAIRS_SHA256
    assert ds.celeba_test_protocol_text() == committed.read_text()  # regenerated from the seed, byte for byte
    proto = V.celeba_test_protocol()
    assert len(proto.pairs) == 6000 and proto.n_folds == 10
    ident = {im.path: im.identity for im in ds.celeba_images()}
    test_ids = {im.identity for im in ds.celeba_split("test")}
    fold_ids: dict[int, set] = {}
    for p in proto.pairs:
        a, b = ident[p.a], ident[p.b]
        assert (a == b) == p.same and a in test_ids and b in test_ids and p.a != p.b
        fold_ids.setdefault(p.fold, set()).update({a, b})
    folds = list(fold_ids.values())
    assert all(folds[i].isdisjoint(folds[j]) for i in range(10) for j in range(i + 1, 10))
    assert len(set((p.a, p.b) for p in proto.pairs)) == 6000  # no repeated pair


def test_protocol_generator_refuses_impossible_folds():
    ims = [ds.FaceImage(Path(f"{i:06d}.jpg"), str(i % 3)) for i in range(9)]
    with pytest.raises(ValueError, match="possible"):
        ds.make_verification_protocol(ims, n_folds=2, per_class=50)
