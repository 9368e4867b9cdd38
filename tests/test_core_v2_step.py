"""Core v2's training step: the fast path learns what the reference learns, and the trainer stops cleanly on SIGTERM."""
import copy
import json
import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from facelink.cloud.training import core_v2, core_v2_step
from facelink.shared import config as cfgmod


def _config(**kw) -> dict:
    base = {"run_name": "t-core-v2-step", "N": 16, "M": 24, "batch_size": 3, "validation_images": 2,
            "max_images": 6, "checkpoint_minutes": 100.0, "continuous_share": 0.5,
            "stages": [{"name": "a", "until_step": 4, "lr": 1e-4, "alpha": 300.0}]}
    base.update(kw)
    return base


def test_fast_step_is_a_checked_boolean_in_the_schema():
    assert cfgmod.from_mapping(core_v2.CoreV2Config, _config()).fast_step is True
    assert cfgmod.from_mapping(core_v2.CoreV2Config, _config(fast_step=False)).fast_step is False
    for bad in ("yes", 1):
        with pytest.raises(cfgmod.ConfigError):
            cfgmod.from_mapping(core_v2.CoreV2Config, _config(fast_step=bad))
    with pytest.raises(cfgmod.ConfigError, match="unknown key"):
        cfgmod.from_mapping(core_v2.CoreV2Config, _config(fast_steps=True))
    for path in ("cloud/training/configs/core-v2.yaml", "cloud/training/configs/core-v2-a0.yaml"):
        assert core_v2._load_config(path).fast_step is True


def test_frozen_prelu_has_prelu_forward_and_input_gradient():
    torch.manual_seed(0)
    prelu = nn.PReLU(5)
    with torch.no_grad():
        prelu.weight.uniform_(-0.5, 0.9)
    prelu.requires_grad_(False)
    frozen = core_v2_step.FrozenPReLU(prelu)
    x = torch.randn(2, 5, 4, 3)
    x[0, :, 0, 0] = 0.0  # the kink: both take the slope branch's gradient there
    grads = []
    for module in (prelu, frozen):
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.backward(torch.arange(y.numel(), dtype=torch.float32).reshape(y.shape))
        grads.append((y.detach(), xi.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(frozen(x), prelu(x))


def test_fast_recognizer_is_the_same_function_and_keeps_the_random_stream():
    from facelink.cloud.serving.recognizers import load_mobilefacenet

    reference = load_mobilefacenet("cpu")
    torch.manual_seed(5)
    fast = core_v2_step.fast_recognizer(reference)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # folding drew no numbers from the training's stream
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.PReLU)) for m in fast.modules())
    def embed_and_grad(model, x):
        xi = x.clone().requires_grad_()
        e = model.embed_rgb01(xi)
        (e * torch.linspace(-1, 1, e.shape[1], dtype=x.dtype)).sum().backward()
        return e.detach(), xi.grad

    x = torch.rand(3, 3, 112, 96)
    (e0, g0), (e1, g1) = embed_and_grad(reference, x), embed_and_grad(fast, x)
    assert torch.allclose(e0, e1, atol=1e-5)
    # In float32 the input gradient (what the codec learns from) differs slightly: a pre-activation within rounding
    # of a PReLU's kink can take the other slope, as with any other order of summation.
    assert (g0 - g1).norm() <= 1e-2 * g0.norm()
    # In float64 the folded network is the same function, gradients included.
    ref64 = copy.deepcopy(reference).double()
    (e0, g0), (e1, g1) = (embed_and_grad(m, x.double()) for m in (ref64, core_v2_step.fast_recognizer(ref64)))
    assert (e0 - e1).abs().max() < 1e-10 and (g0 - g1).abs().max() <= 1e-9 * g0.abs().max()


def test_allocator_tuning_is_harmless_to_call():
    assert isinstance(core_v2_step.tune_allocator(), bool)
    assert core_v2_step.tune_allocator() in (True, False)  # twice is fine


def _steps(fast: bool, n: int = 3) -> list[float]:
    """``n`` training steps of a tiny model on fixed random batches with the identity term; the losses."""
    from facelink.cloud.training.identity_loss import IdentityLoss
    from facelink.shared.alignment import ARCFACE_112, MOBILEFACENET_96x112, similarity_transform

    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config(fast_step=fast))
    torch.manual_seed(0)
    model = core_v2.new_model(cfg).train()
    opt, aux_opt = core_v2._optimizers(model, 1e-3, cfg.aux_lr)
    identity = IdentityLoss("mobilefacenet", "cpu")
    if fast:
        identity.recognizer = core_v2_step.fast_recognizer(identity.recognizer)
    identity.train()
    gen = torch.Generator().manual_seed(1)
    mat = similarity_transform(ARCFACE_112.points, MOBILEFACENET_96x112.points)
    mats, faces = np.stack([mat] * 3), np.array([1.0, 1.0, 0.0], dtype=np.float32)
    sizes = np.array([[112, 112], [112, 112], [128, 128]])
    qrng = random.Random(2)
    losses = []
    for _ in range(n):
        x = torch.rand(3, 3, 128, 128, generator=gen)
        q = core_v2.sample_qualities(qrng, 3, cfg.stages[0], cfg.continuous_share)
        res = core_v2_step.training_step(model, opt, aux_opt, identity, x, mats, faces, sizes, q, 300.0)
        assert res["bpp"].shape == res["mse"].shape == (3,) and np.isfinite(res["identity"])
        losses.append(res["loss"].item())
    return losses


def test_fast_and_reference_steps_give_the_same_losses():
    """Same seed, same batches: the fast path's losses are the reference's to float tolerance (folded batch norm
    rounds differently; a few steps of training amplify that only slightly)."""
    ref, fast = _steps(False), _steps(True)
    assert ref == _steps(False)  # the reference itself is deterministic on one process
    assert fast == pytest.approx(ref, rel=1e-4)


def test_train_checkpoints_and_returns_on_sigterm(tmp_path, monkeypatch):
    """SIGTERM during a step: the step finishes, the trainer writes its checkpoint and returns; the next run resumes
    there; the previous SIGTERM handler is back afterwards."""
    monkeypatch.setattr(core_v2, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setattr(core_v2, "MILESTONES_DIR", tmp_path / "checkpoints")
    monkeypatch.setenv("FACELINK_RUNS", str(tmp_path / "runs"))
    cfg = cfgmod.from_mapping(core_v2.CoreV2Config, _config())
    real_step, calls = core_v2.training_step, []

    def step_then_signal(*args, **kw):
        calls.append(1)
        res = real_step(*args, **kw)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return res

    monkeypatch.setattr(core_v2, "training_step", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    assert core_v2.train(cfg, run, device="cpu") == 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2
    assert [e["step"] for e in json.loads(core_v2.progress_path(cfg.run_name).read_text())["entries"]] == [2]
    assert core_v2.train(cfg, run, device="cpu") == 4
    assert len(calls) == 4


def test_step_speed_reports_gradient_agreement_and_validation_differences(tmp_path):
    """The step-speed benchmark's comparisons: cosine of each path's gradient with the reference's on the same batch
    (and the reference's between two batches), and the validation differences after the same steps."""
    from facelink.benchmarks import core_v2_step_speed as speed

    rng = np.random.default_rng(0)
    ref = {f"{part}/{k}": rng.normal(size=5) for part in speed.GRAD_PARTS for k in range(3)}
    files = {"reference": tmp_path / "reference.npz", "bf16": tmp_path / "bf16.npz"}
    np.savez(files["reference"], **ref)
    np.savez(files["bf16"], **{k: 2.0 * v for k, v in ref.items()})  # same direction, another scale
    out = speed.gradient_agreement(files, 3)
    assert out["same_batch_vs_reference"]["bf16"]["all"]["min"] == pytest.approx(1.0)
    assert -1.0 <= out["reference_between_batches"]["g_s"]["median"] < 1.0
    v = {"reference": {"0": {"psnr": 30.0, "bpp": 0.2}, "1": {"psnr": 32.0, "bpp": 0.4}},
         "bf16": {"0": {"psnr": 29.9, "bpp": 0.202}, "1": {"psnr": 31.9, "bpp": 0.404}}}
    s = speed._validation_summary(v)
    assert s["bf16"]["psnr_minus_reference_db_mean"] == pytest.approx(-0.1)
    assert s["bf16"]["bpp_vs_reference_pct_mean"] == pytest.approx(1.0)
    assert s["reference"]["psnr_minus_reference_db_mean"] == 0.0
