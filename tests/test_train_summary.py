"""facelink train-summary: wall time over resumed segments, end-of-run averages, clear errors."""
import json

import pytest

from facelink.cloud.training import train_summary


def _run(tmp_path, seconds):
    run = tmp_path / "ipr-q9"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"lmbda": 0.01, "alpha": 600.0, "init_from": None, "steps": 4,
                                                 "batch_size": 8, "patch": 128, "threads": 1, "datasets": ["x"]}))
    lines = ["step,loss,bpp,mse,psnr,aux,lr,seconds,identity,face_share"]
    for i, s in enumerate(seconds, 1):
        lines.append(f"{i},1,0.{i},0.001,30,1,0.0001,{s},{'' if i == 1 else 0.2},0.5")
    (run / "log.csv").write_text("\n".join(lines) + "\n")
    return run


def test_resumed_run_adds_up_its_segments(tmp_path):
    run = _run(tmp_path, [10.0, 20.0, 5.0, 15.0])  # resumed after step 2: the clock restarted
    s = train_summary.summarise(run)
    assert s["seconds"] == 35.0 and s["steps"] == 4 and not s["done"]
    assert s["last200"]["bpp"] == pytest.approx(0.25) and s["last200"]["identity"] == pytest.approx(0.2)
    out = tmp_path / "summary.json"
    assert train_summary.main([str(run), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["runs"][0]["run"] == "ipr-q9"
    assert "| ipr-q9 | 0.01 | 600 |" in out.with_suffix(".md").read_text()


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training run folder"):
        train_summary.summarise(tmp_path)
