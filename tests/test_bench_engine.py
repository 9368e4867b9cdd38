"""A small end-to-end run of the benchmark on real LFW images: real codecs, YuNet, MobileFaceNet, the
verification protocol, the cache, and every output file."""
import csv
import hashlib
import json

import numpy as np
import pytest

from facelink.benchmarks import bench, engine
from facelink.benchmarks.codecs import get_codec
from facelink.shared.detection import YUNET_SHA256
from facelink.shared.paths import assets_dir


@pytest.fixture(scope="module")
def suite():
    if not (assets_dir() / "lfw" / "pairs.txt").is_file():
        pytest.skip("LFW not available")
    s = engine.load_suite("lfw", limit=2)  # 1 matched + 1 mismatched pair in each of the 10 folds
    keep = s.folds < 2  # two folds: 4 pairs, 8 images
    used = np.unique(s.pairs[keep])
    remap = {int(old): new for new, old in enumerate(used)}
    return engine.Suite("lfw", s.root, [s.keys[i] for i in used],
                        np.vectorize(remap.get)(s.pairs[keep]), s.same[keep], s.folds[keep], s.protocol_file, 2,
                        s.description)


def test_limit_keeps_the_first_pairs_of_each_fold():
    s = engine.load_suite("lfw", limit=4)
    assert len(s.pairs) == 40 and s.same.sum() == 20
    assert np.bincount(s.folds).tolist() == [4] * 10
    full = engine.load_suite("lfw")
    assert len(full.pairs) == 6000 and len(full.keys) == 7701
    assert full.keys[full.pairs[0, 0]] == s.keys[s.pairs[0, 0]]  # the first pair of fold 1 is kept


def test_end_to_end_run_resumes_and_writes_everything(suite, tmp_path):
    cfg = engine.RunConfig(datasets=["lfw"], recognizers=["mobilefacenet"],
                           codecs=[get_codec("jpeg", [5, 40]), get_codec("hevc", [43, 23])],
                           limit=2, chunk=8, flip=False, cache=tmp_path / "cache.sqlite", progress=False)
    suites = {"lfw": suite}
    stats = engine.compute(cfg, suites, log=lambda *a: None)
    n_settings = 1 + 2 + 2
    assert stats["images"] == len(suite.keys) * n_settings * 2  # two protocols
    assert engine.compute(cfg, suites, log=lambda *a: None)["images"] == 0  # everything cached: resumes

    prov = bench.provenance(cfg, suites, stats, engine.all_codecs(cfg))
    docs = bench.build_docs(cfg, suites, prov)
    assert len(docs) == 2 * 2  # protocols × settings
    written = bench.write_outputs(docs, tmp_path / "out", "test")
    names = {p.name for p in written}
    assert "results.csv" in names and "README.md" in names
    # accuracy and TAR per result file, plus one overview (full frame | face crop) per setting
    overviews = {n for n in names if n.startswith("overview_")}
    assert overviews == {"overview_mobilefacenet_asymmetric.png", "overview_mobilefacenet_symmetric.png"}
    assert sum(n.endswith(".png") for n in names) == 2 * len(docs) + len(overviews)
    assert "(overview_mobilefacenet_asymmetric.png)" in (tmp_path / "out" / "README.md").read_text()

    doc = json.loads((tmp_path / "out" / "lfw_mobilefacenet_full-frame_asymmetric.json").read_text())
    assert doc["schema"] == "facelink-bench/1" and doc["pairs"] == 4 and doc["limited"]
    assert doc["provenance"]["datasets"]["lfw"]["protocol_sha256"] == \
        "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592"
    assert doc["uncompressed"]["bpp"] == pytest.approx(24.0)
    hevc = next(c for c in doc["codecs"] if c["codec"] == "hevc")
    assert hevc["results"]["quality"] == [43, 23]
    b43, b23 = hevc["results"]["bpp"]
    assert 0 < b43 < b23 < 2
    # bpp is bits over the encoded pixels, and bytes per face the mean encoded size: consistent.
    assert hevc["results"]["bytes_per_face"][1] * 8 / (250 * 250) == pytest.approx(b23)
    assert doc["reference"]["bpp"] == pytest.approx(b23) and doc["reference"]["quality"] == 23
    assert doc["headline"]["bpp_at_parity"]["hevc"]["percent_of_reference"] <= 100.0
    near = doc["headline"]["near_uncompressed"]
    assert near["points_below"] == pytest.approx(0.5) and set(near["codecs"]) == {"jpeg", "hevc"}
    for n in near["codecs"].values():
        assert n["target_quality"] == pytest.approx(doc["uncompressed"]["accuracy"] - 0.005)
        if n["bpp"] is not None:  # bytes per face follow from bpp over the 250×250 frame
            assert n["bytes_per_face"] == pytest.approx(n["bpp"] * 250 * 250 / 8)
    assert 0.5 <= doc["uncompressed"]["accuracy"] <= 1.0

    crop = json.loads((tmp_path / "out" / "lfw_mobilefacenet_face-crop_symmetric.json").read_text())
    jpeg = next(c for c in crop["codecs"] if c["codec"] == "jpeg")
    assert jpeg["results"]["bytes_per_face"][0] * 8 / (112 * 112) == pytest.approx(jpeg["results"]["bpp"][0])

    # `bench report` recomputes the headline from the measured results (a folder written by an older version
    # gains what this one adds) and leaves the results as they are
    path = tmp_path / "out" / "lfw_mobilefacenet_full-frame_asymmetric.json"
    old = json.loads(path.read_text())
    stale = dict(old, headline={k: v for k, v in old["headline"].items() if k not in ("bd_rate", "vs_ablation")})
    path.write_text(json.dumps(stale))
    assert bench.main(["report", str(tmp_path / "out")]) == 0
    new = json.loads(path.read_text())
    assert new["headline"] == old["headline"] and new["codecs"] == old["codecs"]

    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == len(docs) * n_settings
    assert (tmp_path / "out" / "README.md").read_text().count("| lfw | mobilefacenet |") >= len(docs)


def test_asymmetric_run_codes_only_the_probes(suite, tmp_path):
    codecs = [get_codec("hevc", [43])]
    probes = np.unique(suite.pairs[:, 1])
    assert 0 < len(probes) < len(suite.keys)
    docs = {}
    for settings in (["asymmetric"], ["asymmetric", "symmetric"]):
        cfg = engine.RunConfig(datasets=["lfw"], protocols=["full-frame"], recognizers=["mobilefacenet"],
                               settings=settings, codecs=codecs, limit=2, chunk=8, flip=False,
                               cache=tmp_path / f"{len(settings)}.sqlite", progress=False)
        stats = engine.compute(cfg, {"lfw": suite}, log=lambda *a: None)
        # the uncompressed gallery is every image; the coded condition only the probes, or every image
        assert stats["images"] == len(suite.keys) + (len(probes) if len(settings) == 1 else len(suite.keys))
        prov = bench.provenance(cfg, {"lfw": suite}, stats, engine.all_codecs(cfg))
        docs[len(settings)] = {d["setting"]: d for d in bench.build_docs(cfg, {"lfw": suite}, prov)}
    a, b = docs[1]["asymmetric"], docs[2]["asymmetric"]
    assert a["codecs"][0]["results"] == b["codecs"][0]["results"]
    assert a["uncompressed"] == b["uncompressed"]
    # the symmetric setting cannot be scored from a probe-only cache: a clear error, not a silent NaN
    cache = engine.Cache(tmp_path / "1.sqlite")
    cond = engine.condition_for("lfw", "full-frame", codecs[0], 43, False)
    ref = engine.condition_for("lfw", "full-frame", get_codec("uncompressed"), "rgb24", False)
    with pytest.raises(KeyError, match="no result for image"):
        engine.evaluate_condition(cache, suite, cond, ref, "mobilefacenet", False, "symmetric")


def test_crop_template_is_part_of_the_condition_and_the_default_keeps_its_key():
    codec = get_codec("hevc")
    default = engine.condition_for("lfw", "face-crop", codec, 33, False)
    assert default.crop_template == engine.CROP_TEMPLATE == "arcface-112"
    # the key every cached face-crop result was stored under before the template became an option
    blob = json.dumps({"v": engine.ENGINE_VERSION, "dataset": "lfw", "protocol": "face-crop", "codec": "hevc",
                       "quality": 33, "settings": default.settings_json, "detector": YUNET_SHA256[:16],
                       "crop": "arcface-112"}, sort_keys=True)
    assert default.key == hashlib.sha256(blob.encode()).hexdigest()[:24]
    small = engine.condition_for("lfw", "face-crop", codec, 33, False, "arcface-96")
    assert small.key != default.key
    with pytest.raises(ValueError, match="unknown crop template"):
        engine.RunConfig(crop_template="arcface-64")


def test_face_crop_protocol_codes_the_chosen_template(suite):
    task = {"cond": "x", "protocol": "face-crop", "codec": "hevc", "quality": 38, "root": str(suite.root),
            "images": list(suite.keys[:3]), "recognizers": ["mobilefacenet"], "flip": False,
            "crop_template": "arcface-80"}
    engine._init_worker(1)
    _, rows, _ = engine.process_images(task)
    faced = [r for r in rows if r["face"]]
    assert faced and all(r["pixels"] == 80 * 80 and r["emb"]["mobilefacenet"].shape == (128,) for r in faced)
