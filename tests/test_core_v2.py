"""Codec core v2: the variable-rate model (gains, interpolation, λ table) and its resumable stage-ladder trainer."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facelink.cloud.serving.variable_rate import (
    LAMBDA_0,
    VariableRateFaceCodec,
    build,
    check_quality,
    forward_vr,
    lmbda,
    per_sample_terms,
)
from facelink.cloud.training import core_v2
from facelink.shared import config as cfgmod


def _tiny(**kw) -> VariableRateFaceCodec:
    torch.manual_seed(0)
    return VariableRateFaceCodec(16, 24, **kw)


def test_lambda_table_is_geometric_and_one_meaning_of_quality():
    assert lmbda(0) == pytest.approx(LAMBDA_0)
    assert [lmbda(q + 1) / lmbda(q) for q in range(7)] == pytest.approx([2.0] * 7)
    assert lmbda(2.5) == pytest.approx(math.sqrt(lmbda(2) * lmbda(3)))
    assert lmbda(torch.tensor([0.0, 3.0])).tolist() == pytest.approx([lmbda(0), lmbda(3)])


def test_gains_interpolate_exponentially_between_neighbouring_qualities():
    model = _tiny()
    with torch.no_grad():
        model.log_gain.normal_()
        model.log_inv_gain.normal_()
    g, ig = model.gains(torch.tensor([2.0, 2.25, 7.0]))
    table, inv = model.log_gain.exp(), model.log_inv_gain.exp()
    assert torch.allclose(g[0], table[2]) and torch.allclose(g[2], table[7]) and torch.allclose(ig[0], inv[2])
    assert torch.allclose(g[1], table[2] ** 0.75 * table[3] ** 0.25, rtol=1e-5)
    assert (g > 0).all() and (ig > 0).all()


def test_initial_gains_follow_the_square_root_of_lambda():
    g, ig = _tiny().gains(torch.arange(8.0))
    ratio = (g[1:] / g[:-1])[:, 0]
    assert ratio.tolist() == pytest.approx([math.sqrt(2.0)] * 7, rel=1e-5)
    assert torch.allclose(g * ig, torch.ones_like(g))


def test_quality_range_is_checked():
    assert check_quality(3.5) == 3.5
    for bad in (-0.1, 7.01, float("nan")):
        with pytest.raises(ValueError, match="quality must lie"):
            check_quality(bad)
    with pytest.raises(ValueError, match="unknown variable-rate"):
        build("facelink-msh-relu-v1", 16, 24)


def test_higher_quality_costs_more_bits_in_eval_mode():
    model = _tiny().eval()
    x = torch.rand(2, 3, 128, 128)
    sizes = np.array([[112, 112], [128, 128]])
    bpp = [per_sample_terms(forward_vr(model, x, q, sizes), x, sizes)[0].mean().item() for q in (0.0, 7.0)]
    assert bpp[1] > bpp[0]


def test_per_sample_terms_count_only_the_image_area():
    model = _tiny().train()
    x = torch.rand(3, 3, 128, 128)
    sizes = np.array([[112, 112], [112, 112], [128, 128]])
    out = forward_vr(model, x, torch.tensor([0.0, 4.5, 7.0]), sizes)
    assert out["x_hat"].shape == x.shape
    bpp, mse = per_sample_terms(out, x, sizes)
    assert bpp.shape == mse.shape == (3,)
    # the 112×112 crops code 7×7 of the 8×8 latent positions: the rest carry likelihood 1
    assert (out["likelihoods"]["y"][:2, :, 7:, :] == 1).all()
    manual = ((out["x_hat"][0] - x[0])[:, :112, :112] ** 2).mean()
    assert mse[0].item() == pytest.approx(manual.item(), rel=1e-5)
    (bpp.mean() + mse.mean()).backward()
    assert model.log_gain.grad is not None and model.log_inv_gain.grad is not None


def _config(**kw) -> dict:
    base = {"run_name": "t-core-v2", "N": 16, "M": 24, "batch_size": 2, "validation_images": 2, "max_images": 6,
            "checkpoint_minutes": 100.0, "continuous_share": 0.5,
            "stages": [{"name": "a", "until_step": 2, "lr": 1e-4, "alpha": 300.0},
                       {"name": "b", "until_step": 3, "lr": 1e-5, "quality_min": 2, "quality_max": 5,
                        "background_blur": 16.0}]}
    base.update(kw)
    return base


def test_config_schema_rejects_bad_ladders():
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    assert cfg.total_steps == 3 and cfg.stage_at(0).name == "a" and cfg.stage_at(2).name == "b"
    assert cfg.stage_at(99).name == "b"
    bad = [
        ({"stages": []}, "at least one stage"),
        ({"stages": [{"name": "a", "until_step": 5, "lr": 1e-4}, {"name": "b", "until_step": 5, "lr": 1e-4}]},
         "must exceed"),
        ({"stages": [{"name": "a", "until_step": 5, "lr": 1e-4, "quality_max": 8}]}, "quality_max"),
        ({"stages": [{"name": "a", "until_step": 5, "lr": 1e-4, "alpha": -1}]}, "alpha"),
        ({"stages": [{"name": "a", "until_step": 5, "lr": 1e-4, "lamda": 1}]}, "unknown key"),
        ({"stages": [{"name": "a", "until_step": 5, "lr": 1e-4, "background_blur": -1}]}, "background_blur"),
        ({"run_name": "../x"}, "run_name"),
        ({"colour": 1}, "unknown key"),
        ({"transform_precision": "float16"}, "transform_precision"),
    ]
    for change, message in bad:
        with pytest.raises(cfgmod.ConfigError, match=message):
            cfgmod.from_mapping(core_v2.CoreV2Config, _config(**change))


def test_committed_configs_load_and_the_ablation_differs_only_in_alpha():
    main = cfgmod.to_dict(core_v2._load_config("cloud/training/configs/core-v2.yaml"))
    ablation = cfgmod.to_dict(core_v2._load_config("cloud/training/configs/core-v2-a0.yaml"))
    assert main["run_name"] == "core-v2" and ablation["run_name"] == "core-v2-a0"
    assert all(s["alpha"] > 0 for s in main["stages"]) and all(s["alpha"] == 0 for s in ablation["stages"])
    for s in main["stages"] + ablation["stages"]:
        s.pop("alpha")
    main.pop("run_name"), ablation.pop("run_name")
    assert main == ablation


def test_a_stage_draws_its_full_frames_through_the_edges_background_blur(tmp_path):
    """background_blur: the full-frame share is what the full-frame mode behind the ROI codes (the edge's blur
    around the face, drawn per sample so that a stage can switch it); aligned crops are left as they are."""
    from facelink.cloud.training.train import LandmarkPatchSampler
    from facelink.shared.roi import BackgroundBlur

    files = sorted((Path(__file__).parent.parent / "shared" / "resources" / "demo_faces").rglob("*.jpg"))[:2]
    stage = core_v2.Stage("s", 10, 1e-4, background_blur=16.0)
    assert stage.frame_blur() == BackgroundBlur(sigma=16.0) and core_v2.Stage("s", 10, 1e-4).frame_blur() is None
    plain = LandmarkPatchSampler(files, 128, 0.45, seed=0, cache_dir=tmp_path)
    blurred = LandmarkPatchSampler(files, 128, 0.45, seed=0, cache_dir=tmp_path)
    blurred.frame_blur = stage.frame_blur()
    for i in range(len(files)):
        frame = BackgroundBlur(sigma=16.0).apply(plain.images[i], [plain.landmarks[i]])
        plain.images[i] = frame  # the same draw from an image blurred beforehand
        a, lm_a = plain.sample_random(i)
        b, lm_b = blurred.sample_random(i)
        assert np.array_equal(a, b) and np.allclose(lm_a, lm_b)
        assert not np.array_equal(blurred.images[i], frame)  # kept sharp: the aligned crops come from these


def test_transform_precision_is_bfloat16_only_where_asked_or_native(monkeypatch):
    cpu = torch.device("cpu")
    assert core_v2.transform_dtype("float32", cpu) is None
    assert core_v2.transform_dtype("bfloat16", cpu) is torch.bfloat16
    monkeypatch.setattr(core_v2, "native_bfloat16", lambda device: False)
    assert core_v2.transform_dtype("auto", cpu) is None
    monkeypatch.setattr(core_v2, "native_bfloat16", lambda device: True)
    assert core_v2.transform_dtype("auto", cpu) is torch.bfloat16


def test_a_run_trains_its_transforms_in_bfloat16_and_says_so(tmp_path, monkeypatch):
    pytest.importorskip("facelink.cloud.serving.recognizers")
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config(run_name="t-bf16", transform_precision="bfloat16"))
    assert core_v2.train(cfg, tmp_path / "run", until_step=1, device="cpu") == 1
    (entry,) = json.loads(core_v2.progress_path(cfg.run_name).read_text())["entries"]
    assert entry["transform_precision"] == "bfloat16"
    assert all(math.isfinite(v["psnr"]) for v in entry["validation"].values())


def test_quality_sampling_stays_in_the_stage_range():
    import random

    stage = core_v2.Stage("s", 10, 1e-4, quality_min=1.5, quality_max=4)
    q = core_v2.sample_qualities(random.Random(0), 400, stage, 0.3)
    assert q.min() >= 1.5 and q.max() <= 4
    assert set(q[q == q.round()].tolist()) == {2.0, 3.0, 4.0}
    assert (q != q.round()).any()


def test_milestone_keeps_float16_weights_and_float32_entropy_parameters(tmp_path, monkeypatch):
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    model = core_v2.new_model(cfg)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": model.state_dict(), "step": 2, "wall_seconds": 5.0, "validation": {"0": {"bpp": 1.0}}},
               run / "checkpoint.pt")
    weights = core_v2.write_milestone(cfg, run)
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["step"] == 2 and record["stage"] == "a" and record["N"] == 16  # the stage of its last step
    back, rec = core_v2.load_milestone(weights, cfg)
    for k, v in model.state_dict().items():
        exact = k.startswith(core_v2.FLOAT32_PREFIXES) or not v.is_floating_point()
        want = v if exact else v.half().float()
        assert torch.equal(back.state_dict()[k], want), k
    with pytest.raises(cfgmod.ConfigError, match="has M"):
        core_v2.load_milestone(weights, cfgmod.from_mapping(core_v2.CoreV2Config, _config(M=32)))


def test_train_resumes_and_logs_progress(tmp_path, monkeypatch):
    """A few steps of the real loop on a handful of training images: progress per quality, a resumable
    checkpoint with RNG states, a second process refused while the first holds the run, a fresh machine
    continuing from the milestone."""
    pytest.importorskip("facelink.cloud.serving.recognizers")
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    run = tmp_path / "run"
    assert core_v2.train(cfg, run, until_step=2, device="cpu") == 2
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and set(state["rng"]) == {"sampler", "qualities", "torch"}
    progress = json.loads(core_v2.progress_path(cfg.run_name).read_text())
    (entry,) = progress["entries"]
    assert entry["step"] == 2 and entry["stage"] == "a" and sorted(entry["validation"]) == [str(q) for q in range(8)]
    assert all(v["bpp"] > 0 and v["psnr"] > 0 for v in entry["validation"].values())
    assert progress["lambda_of_quality"]["7"] == pytest.approx(lmbda(7))
    assert core_v2.train(cfg, run, device="cpu") == 3  # resumes at 2, ends the ladder
    steps = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]
    assert [e["step"] for e in json.loads(core_v2.progress_path(cfg.run_name).read_text())["entries"]] == [2, 3]
    held = core_v2._lock_run(run)
    with pytest.raises(core_v2.RunBusyError):
        core_v2.train(cfg, run, device="cpu")
    held.close()
    core_v2.write_milestone(cfg, run)
    fresh = tmp_path / "fresh"
    assert core_v2.train(cfg, fresh, device="cpu") == 3  # the milestone is at the end: nothing to do
    assert not (fresh / "checkpoint.pt").exists()


def test_a_resumed_step_clips_and_moves_as_the_running_process_would(tmp_path, monkeypatch):
    """training_step clips the norm over every parameter, and the quantiles then still hold the previous step's
    auxiliary gradient. A checkpoint stores those gradients and a resume puts them back, so the first step after a
    resume moves the weights as the running process would have; without them it was clipped far less than every
    other step (at core v2's step 43,359 about 50×) and threw the weights off."""
    pytest.importorskip("facelink.cloud.serving.recognizers")
    import copy

    from facelink.cloud.training import core_v2_step
    from facelink.cloud.training.identity_loss import IdentityLoss

    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    torch.manual_seed(0)
    running = core_v2.new_model(cfg).train()
    identity = IdentityLoss(cfg.recognizer, "cpu")
    x = torch.rand(2, 3, 128, 128)
    mats = np.repeat(np.array([[[1.0, 0, 8], [0, 1.0, 8]]]), 2, axis=0)
    batch = (x, mats, np.ones(2, np.float32), np.array([[128, 128]] * 2), torch.tensor([0.0, 7.0]))
    opt, aux_opt = core_v2._optimizers(running, 1e-3, 1e-3)
    for _ in range(3):
        core_v2_step.training_step(running, opt, aux_opt, identity, *batch, 300.0)
    saved = {"model": copy.deepcopy(running.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "aux_opt": copy.deepcopy(aux_opt.state_dict()), "aux_grads": core_v2_step.auxiliary_gradients(running)}
    assert saved["aux_grads"] and all(n.endswith(".quantiles") for n in saved["aux_grads"])

    def resumed(restore: bool):
        model = core_v2.new_model(cfg).train()
        model.load_state_dict(saved["model"])
        o, a = core_v2._optimizers(model, 1e-3, 1e-3)
        o.load_state_dict(saved["opt"])
        a.load_state_dict(saved["aux_opt"])
        if restore:
            core_v2_step.restore_auxiliary_gradients(model, saved["aux_grads"])
        torch.manual_seed(5)
        core_v2_step.training_step(model, o, a, identity, *batch, 300.0)
        return model

    torch.manual_seed(5)
    core_v2_step.training_step(running, opt, aux_opt, identity, *batch, 300.0)

    def moved_apart(model) -> float:
        return max(float((p - q).abs().max()) for p, q in zip(running.g_s.parameters(), model.g_s.parameters()))

    assert moved_apart(resumed(True)) < 1e-6 < moved_apart(resumed(False))
    fresh = core_v2.new_model(cfg)
    core_v2_step.restore_auxiliary_gradients(fresh)  # none stored (a milestone): the auxiliary loss's gradient
    assert all(p.grad is not None for n, p in fresh.named_parameters() if n.endswith(".quantiles"))
    with pytest.raises(ValueError, match="lacks"):
        core_v2_step.restore_auxiliary_gradients(fresh, {"nope.quantiles": torch.zeros(1)})


def test_training_writes_its_milestone_every_milestone_minutes(tmp_path, monkeypatch):
    """The work tree holds recent weights without anyone running `core-v2 milestone`: a machine that goes away takes
    the checkpoint with it, not the milestone."""
    pytest.importorskip("facelink.cloud.serving.recognizers")
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config(checkpoint_minutes=1e-6, milestone_minutes=1e-6))
    assert core_v2.train(cfg, tmp_path / "run", until_step=2, device="cpu") == 2
    weights, record = core_v2.milestone_paths(cfg.run_name)
    assert weights.is_file() and json.loads(record.read_text())["step"] == 2
    off = cfgmod.from_mapping(core_v2.CoreV2Config, _config(run_name="t-off", checkpoint_minutes=1e-6,
                                                            milestone_minutes=0))
    assert core_v2.train(off, tmp_path / "run-off", until_step=1, device="cpu") == 1
    assert not core_v2.milestone_paths(off.run_name)[0].exists()
    with pytest.raises(cfgmod.ConfigError, match="milestone_minutes"):
        cfgmod.from_mapping(core_v2.CoreV2Config, _config(milestone_minutes=-1))


def test_cli_reports_bad_configs(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\nstages: []\n")
    assert core_v2.main(["train", "--config", str(bad)]) == 2
    assert "at least one stage" in capsys.readouterr().err


def test_set_overrides_configuration_keys_and_still_rejects_unknown_ones(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_config()))
    cfg = core_v2._load_config(str(path), ["batch_size=32", "checkpoint_minutes=3", "recognizer=mobilefacenet"])
    assert (cfg.batch_size, cfg.checkpoint_minutes, cfg.stages[1].quality_min) == (32, 3.0, 2)
    assert core_v2.main(["milestone", "--config", str(path), "--set", "batchsize=32"]) == 2
    assert "unknown key(s) batchsize" in capsys.readouterr().err
    assert core_v2.main(["train", "--config", str(path), "--set", "batch_size"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_device_kit_trains_with_compressai_compiled_modules_stood_in(tmp_path, monkeypatch):
    """A device machine's Python has no compressai build: the kit's pure-Python copy with stand-ins for the two
    compiled modules must import, build core v2 and give gradients, and refuse to entropy-code."""
    import subprocess
    import sys

    from facelink.cloud.training.core_v2_device import write_kit

    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    kit = write_kit(cfg, tmp_path / "kit")
    assert kit["crops"] >= 1 and set(kit["site_packages"]) == {"compressai", "pytorch_msssim"}
    assert not list((tmp_path / "kit" / "site").rglob("*.so"))
    probe = """
import compressai, torch
assert compressai.__file__.startswith(KIT), compressai.__file__
from facelink.cloud.serving.variable_rate import VariableRateFaceCodec, forward_vr, per_sample_terms
m = VariableRateFaceCodec(16, 24)
x = torch.rand(2, 3, 64, 64)
out = forward_vr(m, x, torch.tensor([0.0, 5.0]), torch.tensor([[64, 64], [64, 64]]))
bpp, mse = per_sample_terms(out, x, torch.tensor([[64, 64], [64, 64]]))
(bpp + mse).mean().backward()
assert all(p.grad is not None for p in m.g_a.parameters())
try:
    compressai.ans.RansEncoder().encode_with_indexes
except NotImplementedError as e:
    print("refused:", e)
""".replace("KIT", repr(str(tmp_path / "kit" / "site")))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "kit" / "site"))
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused: compressai.ans is not built on this machine" in run.stdout
    # a second kit keeps the pack it finds
    stamp = (tmp_path / "kit" / "core-v2-pack.npz").stat().st_mtime_ns
    write_kit(cfg, tmp_path / "kit")
    assert (tmp_path / "kit" / "core-v2-pack.npz").stat().st_mtime_ns == stamp


def test_merge_progress_appends_only_the_entries_the_run_lacks(tmp_path, monkeypatch):
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    for step in (1, 2):
        core_v2.append_progress(cfg, {"step": step, "run_dir": "/cpu", "time_utc": f"t{step}", "validation": {}})
    theirs = json.loads(core_v2.progress_path("t-core-v2").read_text())
    theirs["entries"] = theirs["entries"][:1] + [{"step": 2, "run_dir": "/gpu", "time_utc": "t3", "validation": {}},
                                                 {"step": 9, "run_dir": "/gpu", "time_utc": "t4", "validation": {}}]
    other = tmp_path / "returned.json"
    other.write_text(json.dumps(theirs))
    assert core_v2.merge_progress(cfg, [other]) == 2
    assert core_v2.merge_progress(cfg, [other]) == 0  # twice is once
    entries = json.loads(core_v2.progress_path("t-core-v2").read_text())["entries"]
    assert [(e["step"], e["run_dir"]) for e in entries] == [(1, "/cpu"), (2, "/cpu"), (2, "/gpu"), (9, "/gpu")]
    theirs["N"] = 99
    other.write_text(json.dumps(theirs))
    with pytest.raises(cfgmod.ConfigError, match="not a progress file of t-core-v2"):
        core_v2.merge_progress(cfg, [other])


def test_a_background_session_gets_its_niceness_as_a_scheduling_group():
    """Under autogroup scheduling a new session's niceness only counts between its own processes: the group must be
    niced too, or a nice-19 training takes a CPU from the foreground work."""
    import subprocess

    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if not enabled.is_file() or enabled.read_text().strip() != "1":
        pytest.skip("no autogroup scheduling on this kernel")
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert core_v2._nice_session(proc.pid, 17)
        assert Path(f"/proc/{proc.pid}/autogroup").read_text().split()[-1] == "17"
    finally:
        proc.kill()
        proc.wait()


def test_device_chunk_script_is_valid_bash():
    import subprocess

    script = Path(core_v2.__file__).with_name("core_v2_device_chunk.sh")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_export_packages_a_checkpoint_or_the_milestone_as_a_registry_model(tmp_path, monkeypatch):
    import yaml

    from facelink.shared import registry

    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(_config()))
    cfg = core_v2._load_config(str(config))
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": core_v2.new_model(cfg).state_dict(), "step": 3}, run / "checkpoint.pt")
    args = ["export", "--config", str(config), "--run-dir", str(run), "--out-root", str(tmp_path / "models")]
    assert core_v2.main(args + ["--name", "v2-ckpt"]) == 0
    bundle = registry.load(str(tmp_path / "models" / "v2-ckpt"))
    assert bundle.manifest["architecture"] == "facelink-vr-msh-v1" and bundle.manifest["training"]["step"] == 3
    assert bundle.tables.variable_rate and bundle.manifest["weights"] == "float16"
    assert core_v2.main(args + ["--name", "v2-milestone", "--source", "milestone"]) == 2  # none written yet
    core_v2.write_milestone(cfg, run)
    assert core_v2.main(args + ["--name", "v2-milestone", "--source", "milestone"]) == 0
    assert registry.load(str(tmp_path / "models" / "v2-milestone")).manifest["training"]["source"] == "milestone"


def test_status_tells_whether_the_run_trains_and_where_it_stands(tmp_path, monkeypatch):
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    run = tmp_path / "run"
    run.mkdir()
    st = core_v2.run_status(cfg, run)
    assert not st["running"] and not st["checkpoint"] and st["last_progress"] is None and st["stage_now"] == "a"
    core_v2.append_progress(cfg, {"step": 2, "stage": "a", "validation": {}})
    held = core_v2._lock_run(run)
    st = core_v2.run_status(cfg, run)
    assert st["running"] and st["pid"] == str(os.getpid()) and st["stage_now"] == "b"
    held.close()
    assert not core_v2.run_status(cfg, run)["running"]


def test_progress_of_another_model_is_never_mixed_in(tmp_path, monkeypatch):
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    core_v2.append_progress(cfgmod.from_mapping(core_v2.CoreV2Config, _config()), {"step": 5, "validation": {}})
    other = cfgmod.from_mapping(core_v2.CoreV2Config, _config(N_analysis=8))
    with pytest.raises(cfgmod.ConfigError, match="another model"):
        core_v2.append_progress(other, {"step": 6, "validation": {}})
    assert len(json.loads(core_v2.progress_path("t-core-v2").read_text())["entries"]) == 1


def test_a_pack_carries_the_crops_and_the_validation_batch_and_trains(tmp_path, monkeypatch):
    """What a device machine gets: the training crops as JPEGs with their landmarks and the run's exact validation
    batch; a run on the pack steps and reports the same validation figures as one on the data sets would."""
    from facelink.cloud.training.core_v2_pack import PackedCropSampler, read_meta, write_pack

    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    pack = tmp_path / "pack.npz"
    summary = write_pack(cfg, pack)
    assert summary["crops"] + summary["skipped_without_face"] == 6 and read_meta(pack)["crop_template"] == "arcface-112"
    sampler = PackedCropSampler(pack, cfg, seed=0)
    x, mats, weights, sizes = sampler.batch_with_faces(3)
    assert x.shape == (3, 3, 128, 128) and mats.shape == (3, 2, 3) and (sizes == 112).all() and weights.all()
    val_x, _, _ = core_v2.validation_batch(cfg, core_v2.split_files(cfg)[1])
    assert torch.allclose(sampler.validation[0], val_x, atol=0.5 / 255)
    assert core_v2.train(cfg, tmp_path / "run", device="cpu", until_step=1, pack=pack) == 1
    other = cfgmod.from_mapping(core_v2.CoreV2Config, _config(crop_template="arcface-96"))
    with pytest.raises(ValueError, match="holds arcface-112"):
        PackedCropSampler(pack, other, seed=0)


def test_a_pack_carries_whole_frames_for_the_full_frame_share(tmp_path, monkeypatch):
    """A device chunk trains the full-frame share too: the pack's whole frames, drawn with the stage's fraction and
    through its background blur as the data sets' sampler draws them; a crops-only pack still gives crops."""
    from facelink.cloud.training.core_v2_pack import PackedCropSampler, read_meta, write_pack
    from facelink.shared.roi import BackgroundBlur

    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    pack = tmp_path / "pack.npz"
    summary = write_pack(cfg, pack, frames_mb=0.05)
    assert 1 <= summary["frames"] <= summary["crops"] and summary["frames_bytes"] <= 50_000
    assert read_meta(pack)["format"].endswith("-v2")
    sampler = PackedCropSampler(pack, cfg, seed=0)
    sampler.face_crop_fraction = 0.0
    _, mats, _, sizes = sampler.batch_with_faces(4)
    assert (sizes == 128).all() and np.isfinite(mats).all()  # whole-frame patches, landmarks carried along
    assert sampler.batch_keys == [None] * 4  # a random crop never recurs exactly
    sampler.face_crop_fraction = 1.0
    assert (sampler.batch_with_faces(2)[3] == 112).all()
    assert all(k[0] == "pack-crop" for k in sampler.batch_keys)
    sampler.frame_blur = BackgroundBlur(sigma=16.0)
    assert sampler.frames.frame_blur == BackgroundBlur(sigma=16.0)
    crops_only = tmp_path / "crops.npz"
    write_pack(cfg, crops_only, frames_mb=0)
    plain = PackedCropSampler(crops_only, cfg, seed=0)
    plain.face_crop_fraction, plain.frame_blur = 0.0, BackgroundBlur()
    assert plain.frames is None and plain.frame_blur is None and (plain.batch_with_faces(2)[3] == 112).all()
    assert core_v2.train(cfg, tmp_path / "run", device="cpu", until_step=3, pack=pack) == 3


def test_weight_average_is_an_exponential_moving_average_of_the_parameters_only():
    toy = torch.nn.Linear(3, 2)
    toy.register_buffer("bound", torch.tensor([0.5]))
    with torch.no_grad():
        toy.weight.fill_(1.0), toy.bias.fill_(-2.0)
    avg = core_v2.WeightAverage(toy, 0.75)
    with torch.no_grad():
        toy.weight.fill_(5.0), toy.bias.fill_(2.0), toy.bound.fill_(9.0)
    avg.update()
    assert torch.allclose(avg.model.weight, torch.full((2, 3), 0.75 * 1 + 0.25 * 5))
    assert torch.allclose(avg.model.bias, torch.full((2,), 0.75 * -2 + 0.25 * 2))
    for _ in range(9):
        avg.update()
    # constant live weights w: avg_k = w + decay^k (avg_0 − w)
    assert torch.allclose(avg.model.weight, torch.full((2, 3), 5 + 0.75**10 * (1 - 5)))
    assert avg.updates == 10 and avg.model.bound.item() == 0.5  # buffers are not averaged
    assert not any(p.requires_grad for p in avg.model.parameters()) and toy.weight.requires_grad
    again = core_v2.WeightAverage(toy, 0.75)
    again.load_state_dict(avg.state_dict())
    assert again.updates == 10 and torch.equal(again.model.weight, avg.model.weight)
    with pytest.raises(ValueError, match="decay"):
        core_v2.WeightAverage(toy, 1.0)
    with pytest.raises(cfgmod.ConfigError, match="ema_decay"):
        cfgmod.from_mapping(core_v2.CoreV2Config, _config(ema_decay=1.0))


def _ema_run(tmp_path, monkeypatch, **kw):
    pytest.importorskip("facelink.cloud.serving.recognizers")
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    # decay 0.5: after two steps the average is far from the raw weights, so tests can tell them apart
    return cfgmod.from_mapping(core_v2.CoreV2Config, _config(ema_decay=0.5, **kw))


def _lerp_params(avg: dict, raw: dict, w: float) -> dict:
    return {n: avg[n] + w * (raw[n] - avg[n]) for n in avg}


def test_train_checkpoints_the_weight_average_and_resumes_it_or_starts_one(tmp_path, monkeypatch, capsys):
    """The checkpoint keeps raw and averaged weights; validation is the average's; a resume continues the stored
    average, and a checkpoint without one (as written before averages existed) starts it from its weights."""
    cfg = _ema_run(tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert core_v2.train(cfg, run, until_step=2, device="cpu") == 2
    s2 = torch.load(run / "checkpoint.pt", weights_only=False)
    assert s2["ema"]["decay"] == 0.5 and s2["ema"]["updates"] == 2
    names = dict(core_v2.new_model(cfg).named_parameters())
    assert set(s2["ema"]["params"]) == set(names)  # every parameter: gains and entropy bottleneck included
    assert any("log_gain" in n for n in names) and any(n.endswith(".quantiles") for n in names)
    assert not all(torch.equal(s2["ema"]["params"][n], s2["model"][n]) for n in names)
    fresh = core_v2.new_model(cfg).state_dict()  # the float buffers are constants: nothing there to average
    assert all(torch.equal(s2["model"][k], v) for k, v in fresh.items() if k not in names and v.is_floating_point())
    (entry,) = json.loads(core_v2.progress_path(cfg.run_name).read_text())["entries"]
    assert entry["weights"] == "ema" and entry["ema_decay"] == 0.5 and entry["ema_updates"] == 2
    ema_model, info = core_v2.checkpoint_weights(cfg, s2)
    assert info == {"weights": "ema", "ema_decay": 0.5, "ema_updates": 2}
    raw_model = core_v2.checkpoint_weights(cfg, s2, raw=True)[0]
    assert torch.equal(raw_model.state_dict()["log_gain"], s2["model"]["log_gain"])
    assert torch.equal(ema_model.state_dict()["log_gain"], s2["ema"]["params"]["log_gain"])

    without = tmp_path / "without"  # the same checkpoint with its average removed
    without.mkdir()
    torch.save({k: v for k, v in s2.items() if k != "ema"}, without / "checkpoint.pt")
    capsys.readouterr()
    assert core_v2.train(cfg, run, device="cpu") == 3
    assert "weight average: resumed (decay 0.5, 2 steps averaged)" in capsys.readouterr().out
    assert core_v2.train(cfg, without, device="cpu") == 3
    assert "none stored; starts from the checkpoint's weights at step 2" in capsys.readouterr().out
    s3, w3 = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (run, without))
    assert s3["ema"]["updates"] == 3 and w3["ema"]["updates"] == 1
    raw3 = {n: s3["model"][n] for n in names}
    assert all(torch.equal(s3["model"][n], w3["model"][n]) for n in names)  # the same training either way
    for got, start in ((s3["ema"]["params"], s2["ema"]["params"]), (w3["ema"]["params"], s2["model"])):
        want = _lerp_params({n: start[n] for n in names}, raw3, 0.5)
        assert all(torch.allclose(got[n], want[n], atol=1e-6) for n in names)


def test_milestone_and_export_carry_the_weight_average(tmp_path, monkeypatch, capsys):
    """The milestone and a registry export are the averaged weights (entropy tables computed from them), the raw
    ones on request; a fresh machine resumes from the milestone with the average starting from its weights."""
    from safetensors.torch import load_file

    from facelink.cloud.training.export_v2 import export_tables
    from facelink.shared import registry

    cfg = _ema_run(tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert core_v2.train(cfg, run, until_step=2, device="cpu") == 2
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    ema = state["ema"]["params"]
    weights = core_v2.write_milestone(cfg, run)
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["weights"] == "ema" and record["ema_decay"] == 0.5 and record["ema_updates"] == 2
    stored = load_file(str(weights))
    for n, v in ema.items():
        want = v if n.startswith(core_v2.FLOAT32_PREFIXES) else v.half()
        assert torch.equal(stored[n], want), n

    models = tmp_path / "models"
    core_v2.export_model(cfg, run, "checkpoint", "v2-ema", models, "float32")
    core_v2.export_model(cfg, run, "checkpoint", "v2-raw", models, "float32", raw=True)
    ema_bundle, raw_bundle = (registry.load(str(models / n)) for n in ("v2-ema", "v2-raw"))
    assert ema_bundle.manifest["training"]["weights"] == "ema" and raw_bundle.manifest["training"]["weights"] == "raw"
    decoder = load_file(str(models / "v2-ema" / "decoder.safetensors"))
    assert torch.equal(decoder["g_s.0.weight"], ema["g_s.0.weight"])
    assert torch.equal(decoder["log_inv_gain"], ema["log_inv_gain"])
    averaged = core_v2.checkpoint_weights(cfg, state)[0]
    assert ema_bundle.manifest["model_id"] == export_tables(averaged).model_id  # tables from the averaged model
    assert raw_bundle.manifest["model_id"] != ema_bundle.manifest["model_id"]

    capsys.readouterr()
    assert core_v2.train(cfg, tmp_path / "fresh", device="cpu") == 3
    out = capsys.readouterr().out
    assert "committed milestone" in out and "starts from the milestone's ema weights at step 2" in out
