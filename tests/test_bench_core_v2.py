"""Core v2 in the benchmark: the committed milestone exported as a registry model, swept over qualities by the
engine on a few LFW pairs (container version 3 carrying each quality), and the summary writer on those results and
on a synthetic result folder whose figures are known."""
import json
import math

import numpy as np
import pytest

from facelink.benchmarks import bench, core_v2_summary, engine
from facelink.benchmarks.codecs import CodecUnavailable, VariableRateFacelinkCodec, get_codec, parse_codec_spec
from facelink.benchmarks.results_io import SCHEMA, write_json
from facelink.shared import bitstream, registry
from facelink.shared.paths import REPO_ROOT, assets_dir

# The research name of an exported milestone (make -f benchmarks/research.mk bench-core-v2): not the shipped face-v2,
# which the package's registry holds with other weights once the run has moved on.
V2 = "face-v2-run"


@pytest.fixture(scope="module")
def v2_registry(tmp_path_factory):
    """The committed core-v2 milestone exported (float16, as committed) into a temporary registry folder."""
    from facelink.cloud.training import core_v2

    config = REPO_ROOT / "cloud" / "training" / "configs" / "core-v2.yaml"
    cfg = core_v2._load_config(str(config))
    if not core_v2.milestone_paths(cfg.run_name)[0].is_file():
        pytest.skip("no core-v2 milestone in this checkout")
    root = tmp_path_factory.mktemp("models")
    core_v2.export_model(cfg, root / "unused-run-dir", "milestone", V2, root)
    return root


@pytest.fixture
def models_path(v2_registry, monkeypatch):
    monkeypatch.setenv(registry.MODELS_PATH_ENV, str(v2_registry))
    return v2_registry


@pytest.fixture(scope="module")
def suite():
    if not (assets_dir() / "lfw" / "pairs.txt").is_file():
        pytest.skip("LFW not available")
    s = engine.load_suite("lfw", limit=2)
    keep = s.folds < 2  # two folds, 1 matched + 1 mismatched pair each: 4 pairs
    used = np.unique(s.pairs[keep])
    remap = {int(old): new for new, old in enumerate(used)}
    return engine.Suite("lfw", s.root, [s.keys[i] for i in used], np.vectorize(remap.get)(s.pairs[keep]),
                        s.same[keep], s.folds[keep], s.protocol_file, 2, s.description)


def test_a_variable_rate_model_is_a_codec_with_a_quality_sweep(models_path):
    codec = parse_codec_spec("facelink-v2-run:0,2.5,7")
    assert isinstance(codec, VariableRateFacelinkCodec) and codec.model == "face-v2-run"
    assert codec.qualities == (0, 2.5, 7) and codec.quality_name == "q"
    assert get_codec("facelink-v2-run").qualities == tuple(range(8))  # default: every integer quality (8)
    # its own container version is part of each setting's key; the fixed-rate family keeps version 2
    assert codec.settings_for(3)["format_version"] == bitstream.VARIABLE_RATE_VERSION
    assert get_codec("facelink-ipr").settings_for("face-ipr-q1")["format_version"] == bitstream.FORMAT_VERSION
    assert "face-v2-run" not in get_codec("facelink").qualities  # the rate points' codec holds rate points only
    assert "step" in codec.version() and "facelink-v2-run" in bench.learned_families()
    with pytest.raises(CodecUnavailable, match="quality must lie"):
        get_codec("facelink-v2-run", [0, 9]).check_available()


def test_sweep_on_a_few_pairs_and_the_summary_of_it(models_path, suite, tmp_path):
    qualities = [0, 3.5, 7]
    cfg = engine.RunConfig(datasets=["lfw"], protocols=["face-crop"], recognizers=["mobilefacenet"],
                           settings=["asymmetric"], limit=2, chunk=8, flip=False, progress=False,
                           cache=tmp_path / "cache.sqlite",
                           codecs=[get_codec("facelink-v2-run", qualities), get_codec("hevc", [43, 23])])
    suites = {"lfw": suite}
    stats = engine.compute(cfg, suites, log=lambda *a: None)
    probes = np.unique(suite.pairs[:, 1])
    assert stats["images"] == len(suite.keys) + len(probes) * (len(qualities) + 2)
    # every cached probe is a version-3 container carrying its quality, on the model's id
    cache = engine.Cache(cfg.cache)
    codec = cfg.codecs[0]
    model_id = registry.load("face-v2-run").model_id
    for q in qualities:
        cond = engine.condition_for("lfw", "face-crop", codec, q, False)
        datas = cache.encoded(cond.key, suite.keys)
        assert len(datas) == len(probes)
        for data in datas.values():
            frame = bitstream.unpack(data)
            assert frame.version == 3 and frame.quality == q and frame.model_id == model_id
            assert codec.decode(data).shape == (112, 112, 3)
    cache.close()

    docs = bench.build_docs(cfg, suites, bench.provenance(cfg, suites, stats, engine.all_codecs(cfg)))
    out = tmp_path / "run"
    bench.write_outputs(docs, out, "test")
    doc = json.loads((out / "lfw_mobilefacenet_face-crop_asymmetric.json").read_text())
    v2 = next(c for c in doc["codecs"] if c["codec"] == "facelink-v2-run")
    assert v2["results"]["quality"] == qualities
    sizes = v2["results"]["bytes_per_face"]
    assert sizes[0] <= sizes[1] <= sizes[2] and sizes[0] < sizes[2]

    progress = tmp_path / "progress.json"
    progress.write_text(json.dumps({"stages": [{"name": "foundation", "until_step": 100}], "entries": [
        {"step": 10, "stage": "foundation", "wall_seconds": 1800.0, "device": "cpu"},
        {"step": 20, "stage": "foundation", "wall_seconds": 5400.0, "device": "cpu"}]}))
    summary_path = tmp_path / "summary.json"
    assert core_v2_summary.main([str(out), "--codec", "facelink-v2-run", "--cache", str(cfg.cache),
                                 "--progress", str(progress),
                                 "--out", str(summary_path)]) == 0
    s = json.loads(summary_path.read_text())
    assert (tmp_path / s["plot"]).is_file()
    assert "| lfw | face-crop | mobilefacenet | 4 | facelink-v2-run |" in (tmp_path / "summary.md").read_text()
    assert s["model"]["model"] == "face-v2-run" and s["model"]["step"] is not None and "limited protocol" in s["status"]
    assert s["training"]["step"] == 20 and s["training"]["cpu_hours"] == pytest.approx(1.5)
    (row,) = s["rows"]
    assert row["v2"]["codec"] == "facelink-v2-run" and row["hevc"]["bd_rate_vs_hevc"] == 0.0
    assert row["ladder"] is None  # not in this run
    (p,) = s["psnr"]
    curve = p["curves"]["v2"]["curve"]
    assert p["curves"]["v2"]["images"] == len(probes) and [c["quality"] for c in curve] == qualities
    assert [c["bytes_per_face"] for c in curve] == pytest.approx(sizes)
    assert all(10 < c["psnr_db"] < 60 for c in curve) and curve[0]["psnr_db"] < curve[-1]["psnr_db"]
    assert {t["target"] for t in s["targets"]} >= {"bd_psnr_vs_hevc_db", "bd_rate_vs_hevc", "psnr_at_0.6_bpp_db"}


def _doc(folder, unc, curves, pairs=600, dataset="lfw"):
    doc = {"schema": SCHEMA, "name": f"{dataset} / mobilefacenet / face-crop / asymmetric", "dataset": dataset,
           "recognizer": "mobilefacenet", "protocol": "face-crop", "setting": "asymmetric", "pairs": pairs,
           "limited": True, "limit_pairs_per_fold": pairs // 10, "flip": True,
           "uncompressed": {"accuracy": unc, "bytes_per_face": 37632.0},
           "codecs": [{"codec": name, "quality_name": "q", "results": {"quality": q, "bytes_per_face": b,
                                                                       "accuracy": a}}
                      for name, (q, b, a) in curves.items()]}
    write_json(doc, folder)


def test_summary_of_a_synthetic_result_folder(models_path, tmp_path):
    hevc_b = [300.0, 400.0, 600.0, 900.0]
    hevc_a = [0.90, 0.94, 0.97, 0.98]
    _doc(tmp_path / "a", 0.985, {
        "hevc": ([38, 33, 28, 23], hevc_b, hevc_a),
        "facelink-v2-run": ([0, 1, 2, 3], [b / 2 for b in hevc_b], hevc_a),  # HEVC's accuracy at half its bytes
        "avif": ([0, 10, 25], [400.0, 800.0, 1600.0], [0.90, 0.94, 0.97]),
    })
    # the ladder from another folder on the same pairs: flat one point under uncompressed
    _doc(tmp_path / "b", 0.985, {"facelink-ipr": (["q0", "q1", "q2"], [300.0, 500.0, 800.0], [0.95, 0.97, 0.975])})
    _doc(tmp_path / "c", 0.99, {"facelink-ipr": (["q0"], [100.0], [0.5])}, pairs=100)  # other pairs: never used
    s = core_v2_summary.summarize([tmp_path / "a", tmp_path / "b", tmp_path / "c"], cache=None, progress=None,
                                 codec="facelink-v2-run")
    (row,) = [r for r in s["rows"] if r["pairs"] == 600]
    assert row["uncompressed_accuracy"] == 0.985
    assert row["hevc_crf23"] == {"bytes_per_face": 900.0, "accuracy": 0.98}
    v2, hevc, ladder = row["v2"], row["hevc"], row["ladder"]
    assert v2["bd_rate_vs_hevc"] == pytest.approx(-50.0)
    assert v2["parity_pct_of_hevc_crf23"] == pytest.approx(50.0) and hevc["parity_pct_of_hevc_crf23"] == 100.0
    assert v2["bytes_within_half_point"] == pytest.approx(450.0) and hevc["bytes_within_half_point"] == 900.0
    assert v2["best_accuracy"] == 0.98 and v2["best_accuracy_bytes"] == 450.0
    assert ladder["results"] == str(tmp_path / "b") and ladder["best_accuracy"] == 0.975
    assert ladder["parity_pct_of_hevc_crf23"] is None and ladder["parity_status"] == "not_reached"
    assert ladder["bytes_within_half_point"] is None and ladder["bd_rate_vs_hevc"] is not None
    assert set(row["v2_against"]) == {"hevc", "avif", "facelink-ipr"}  # no JPEG XL in these folders
    assert row["v2_against"]["hevc"]["bd_rate_bytes_percent"] == pytest.approx(-50.0)
    assert row["v2_against"]["avif"]["bd_rate_bytes_percent"] < -50.0
    by_target = {t["target"]: t for t in s["targets"] if t.get("recognizer")}
    assert by_target["parity_pct_of_hevc_crf23"]["met"] and by_target["bd_rate_vs_hevc"]["met"]
    assert not by_target["bytes_within_half_point"]["met"]  # 450 B against the 300 B target on LFW
    assert by_target["bytes_within_half_point"]["distance"] == pytest.approx(150.0)
    assert s["psnr"] == [] and s["training"] is None
    assert math.isclose(s["rows"][0]["v2"]["curve"][0]["bytes_per_face"], 150.0)
    core_v2_summary.plot(s, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0


def test_summary_refuses_folders_without_core_v2(models_path, tmp_path, capsys):
    _doc(tmp_path / "a", 0.985, {"hevc": ([38, 23], [300.0, 900.0], [0.9, 0.98])})
    assert core_v2_summary.main([str(tmp_path / "a"), "--codec", "facelink-v2-run", "--no-psnr",
                                 "--out", str(tmp_path / "s.json")]) == 2
    assert "no codec 'facelink-v2-run'" in capsys.readouterr().err
    assert core_v2_summary.main([str(tmp_path / "empty"), "--no-psnr", "--out", str(tmp_path / "s.json")]) == 2


def test_full_frames_behind_the_roi_and_their_summary_row(models_path, suite, tmp_path):
    """The full-frame protocol as bench-core-v2 runs it: core v2 and HEVC behind the edge's ROI, plain HEVC CRF 23
    the parity reference."""
    cfg = engine.RunConfig(datasets=["lfw"], protocols=["full-frame"], recognizers=["mobilefacenet"],
                           settings=["asymmetric"], limit=2, chunk=8, flip=False, progress=False,
                           cache=tmp_path / "cache.sqlite",
                           codecs=[parse_codec_spec("facelink-v2-run+roi:0,7"), get_codec("hevc+roi", [43, 23]),
                                   get_codec("hevc", [23])])
    suites = {"lfw": suite}
    stats = engine.compute(cfg, suites, log=lambda *a: None)
    docs = bench.build_docs(cfg, suites, bench.provenance(cfg, suites, stats, engine.all_codecs(cfg)))
    bench.write_outputs(docs, tmp_path / "run", "test")
    s = core_v2_summary.summarize([tmp_path / "run"], cache=tmp_path / "cache.sqlite", progress=None,
                                 codec="facelink-v2-run")
    (row,) = s["rows"]
    assert row["protocol"] == "full-frame" and row["v2"]["codec"] == "facelink-v2-run+roi"
    assert row["hevc"]["codec"] == "hevc+roi" and set(row["v2_against"]) == {"hevc+roi"}
    hevc23 = next(c for c in docs[0]["codecs"] if c["codec"] == "hevc")["results"]
    assert row["hevc_crf23"]["bytes_per_face"] == pytest.approx(hevc23["bytes_per_face"][0])
    assert [p["quality"] for p in row["v2"]["curve"]] == [0, 7] and s["psnr"] == []  # PSNR: crops only


def test_training_hours_follow_the_weights_not_a_lost_branch(tmp_path):
    """A run resumed from an earlier milestone (its newer checkpoint lost) logs steps and wall seconds again from
    there: the hours reported are those of the entries that lead to the last weights."""
    from facelink.benchmarks.core_v2_summary import lineage, training_progress

    def entry(step, wall):
        return {"step": step, "wall_seconds": wall, "device": "cpu", "stage": "foundation"}

    entries = [entry(100, 360.0), entry(200, 720.0),                        # committed milestone at 200
               entry(300, 1080.0), entry(400, 1440.0), entry(500, 1800.0),  # the branch that was lost
               entry(260, 900.0), entry(320, 1116.0)]                       # resumed from step 200
    assert [e["step"] for e in lineage(entries)] == [100, 200, 260, 320]
    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"stages": [{"until_step": 1000}], "entries": entries}))
    t = training_progress(path)
    assert t["step"] == 320 and t["cpu_hours"] == round(1116.0 / 3600, 2) and t["abandoned_entries"] == 3
