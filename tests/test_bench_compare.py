"""facelink bench compare: two curves from two result folders, at equal bytes per face."""
import json

import pytest

from facelink.benchmarks import bench
from facelink.benchmarks.results_io import SCHEMA


def _write(folder, codec, bytes_, acc, pairs=6000, unc=0.983):
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "name": "lfw / sface / face-crop / asymmetric", "dataset": "lfw", "recognizer": "sface",
           "protocol": "face-crop", "setting": "asymmetric", "pairs": pairs,
           "uncompressed": {"accuracy": unc, "bytes_per_face": 37632},
           "codecs": [{"codec": codec, "results": {"quality": [f"q{i}" for i in range(len(acc))],
                                                   "bytes_per_face": bytes_, "accuracy": acc}}]}
    (folder / "lfw_sface_face-crop_asymmetric.json").write_text(json.dumps(doc))
    return folder


def test_compare_at_equal_bytes(tmp_path, capsys):
    a = _write(tmp_path / "a", "facelink-x", [100.0, 200.0, 400.0], [0.90, 0.95, 0.97])
    b = _write(tmp_path / "b", "facelink-y", [80.0, 160.0, 320.0], [0.90, 0.95, 0.97], unc=0.982)
    out = tmp_path / "cmp.json"
    assert bench.main(["compare", f"{a}:facelink-x", f"{b}:facelink-y", "--out", str(out)]) == 0
    assert "BD rate -20.0 %" in capsys.readouterr().out  # the same accuracies at 0.8× the bytes
    c = json.loads(out.read_text())["comparisons"][0]
    assert c["bd_rate_bytes_percent"] == pytest.approx(-20.0) and c["bd_accuracy_points"] > 0
    assert c["points"][0]["anchor_accuracy"] is None  # 80 B lies below the anchor's curve: no extrapolation
    assert c["points"][1]["difference_points"] > 0 and c["test_uncompressed_accuracy"] == 0.982
    # nothing already written is replaced without --force
    assert bench.main(["compare", f"{a}:facelink-x", f"{b}:facelink-y", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_compare_errors_are_clear(tmp_path, capsys):
    a = _write(tmp_path / "a", "facelink-x", [100.0, 200.0], [0.9, 0.95])
    b = _write(tmp_path / "b", "facelink-y", [100.0, 200.0], [0.9, 0.95], pairs=200)
    assert bench.main(["compare", f"{a}:hevc", f"{a}:facelink-x"]) == 2
    assert "no codec 'hevc'" in capsys.readouterr().err
    assert bench.main(["compare", f"{a}:facelink-x", f"{b}:facelink-y"]) == 2
    assert "not the same protocol" in capsys.readouterr().err
    assert bench.main(["compare", f"{tmp_path / 'none'}:x", f"{a}:facelink-x"]) == 2
    assert "no benchmark results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["compare", "no-codec-given", f"{a}:facelink-x"])
