"""The paired comparison of decoders the adapters bench measured (benchmarks/adapters_paired.py)."""

import json

import numpy as np

from facelink.benchmarks import adapters_paired as ap
from facelink.benchmarks import engine


def test_paired_differences_fold_by_fold_from_the_bench_measures(tmp_path):
    suite = engine.load_suite("lfw", 4)
    perfect = [1.0 if s else -1.0 for s in suite.same]
    wrong_first_fold = [(-v if f == suite.folds[0] else v) for v, f in zip(perfect, suite.folds)]
    for model, variants in {"m": {"base": perfect, "adapters": wrong_first_fold},
                            "m-x": {"adapters": perfect}}.items():
        scores = {v: {"mobilefacenet": s} for v, s in variants.items()}
        (tmp_path / f"lfw-nir-{model}-0123.json").write_text(json.dumps({"scores": scores}))
    out = tmp_path / "r.json"
    argv = ["--measures", str(tmp_path), "--domains", "nir", "--limit", "4", "--out", str(out),
            "--decoders", "base=m:base", "a=m:adapters", "x=m-x:adapters"]
    assert ap.main(argv) == 0
    doc = json.loads(out.read_text())
    row = doc["domains"]["nir"]
    assert row["decoders"]["base"]["accuracy"] == 1.0 and row["decoders"]["x"]["accuracy"] == 1.0
    d = row["differences"]["a-base"]
    assert np.isclose(d["mean"], -0.1) and np.isclose(d["se"], d["fold_std"] / np.sqrt(10))
    assert row["differences"]["x-base"]["mean"] == 0.0 and doc["command"].startswith("python -m")
    assert ap.main(argv[:-3] + ["base=m:base", "a=m:oracle"]) == 2  # a variant not measured
    assert ap.main(argv[:-3] + ["base=m"]) == 2
    assert ap.main(argv + ["--versus", "nobody"]) == 2
