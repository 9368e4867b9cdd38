"""One training step of codec core v2, and what makes it cheaper on one CPU thread without changing what is learned.

:func:`training_step` is the step :func:`facelink.cloud.training.core_v2.train` runs: the variable-rate forward pass,
``R + λ(q)·255²·MSE`` per sample plus ``α·D_identity`` through the frozen MobileFaceNet, backward, gradient clipping
at 1, Adam, then the entropy bottleneck's auxiliary step. ``fast_step: true`` in a run's configuration (the default)
adds two changes that leave the loss, the data and the schedule as they are:

- :func:`tune_allocator`: glibc returns every large freed block to the system (``mmap``/``munmap`` and a heap trim
  per tensor of a few MB), so each step page-faults its activations in again, about 37,000 faults and 0.2 CPU-s
  per step at batch 8 × 128². A mmap threshold and a trim threshold above the step's peak keep that memory in the
  heap. Nothing numerical changes.
- :func:`fast_recognizer`: the identity term's MobileFaceNet with its batch norms folded into the convolutions
  before them (the recognizer is frozen in eval mode, so batch norm is an affine map: the same function up to float
  rounding, as the serving copy, :func:`facelink.cloud.serving.recognizers.fold_batchnorm`) and its PReLUs as
  :class:`FrozenPReLU` (the same forward; a backward that computes the input's gradient only, where aten's PReLU
  backward also reduces the frozen slope's gradient). In float64 both give the same embeddings and input gradients
  to 1e-15; in float32 a pre-activation within rounding of a PReLU's kink may take the other slope, which moves the
  input gradient by about 0.2 % (in norm) on a batch, the size of any other change of summation order.

What was measured and left out (``python -m facelink.benchmarks.core_v2_step_speed``, results in
``benchmarks/results/core-v2/step_speed.json``): the step is mostly convolutions that oneDNN already runs near one
core's peak, and the transposed convolutions of the synthesis are half of it; ``torch.compile`` of the GDN layers
or of the transforms was slower than eager on one thread, channels-last was faster for some layers and slower for
others (and changed MobileFaceNet's input gradient by 2e-3 relative), the sampler's share is under 1 %, and
reduced-precision float32 matmuls have no hardware path on a CPU without AVX-512 BF16 (and would change the math).
"""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelink.cloud.serving.variable_rate import forward_vr, lmbda, per_sample_terms

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed memory in this process's heap instead of returning it to the system after every tensor (glibc;
    elsewhere nothing happens). Returns whether the thresholds were set. Process-wide; memory use stays at the
    step's peak (about 1 GB for core v2 at batch 8), which it reaches at every step anyway."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    # Older glibc refuses a mmap threshold above 32 MiB; the step's largest tensor is 16 MiB.
    mmap_ok = any(mallopt(_M_MMAP_THRESHOLD, v) for v in (1 << 30, 32 << 20))
    return bool(mmap_ok and mallopt(_M_TRIM_THRESHOLD, 1 << 31))


class _FrozenSlopePReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, slope)
        return F.prelu(x, slope)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, slope = ctx.saved_tensors
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return torch.where(x > 0, grad, grad * slope.reshape(shape)), None


class FrozenPReLU(nn.Module):
    """:class:`torch.nn.PReLU` with a fixed slope (a buffer, never trained): the same forward, and a backward that
    computes only the input's gradient, as aten's does for ``x > 0`` and ``x ≤ 0``."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.register_buffer("slope", prelu.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _FrozenSlopePReLU.apply(x, self.slope)
        return F.prelu(x, self.slope)


def _swap_prelus(module: nn.Module) -> None:
    for name, sub in module.named_children():
        if isinstance(sub, nn.PReLU):
            setattr(module, name, FrozenPReLU(sub))
        else:
            _swap_prelus(sub)


def fast_recognizer(recognizer: nn.Module) -> nn.Module:
    """A frozen copy of the identity term's MobileFaceNet for training: batch norms folded, PReLUs frozen
    (:class:`FrozenPReLU`), eval mode, no parameter requires a gradient. Gradients still flow to its input."""
    from facelink.cloud.serving.recognizers import fold_batchnorm

    with torch.random.fork_rng(devices=[]):  # building the folded convolutions draws initial weights: keep the
        model = fold_batchnorm(recognizer)  # training's random stream (the noise of the rate proxy) as it was
    _swap_prelus(model)
    return model.eval().requires_grad_(False)


def step_loss(model, identity, x: torch.Tensor, mats: np.ndarray, faces: np.ndarray, sizes: np.ndarray,
              q: torch.Tensor, alpha: float, transform_dtype: torch.dtype | None = None, source_keys=None) -> dict:
    """The training loss of the batch ``x`` (N×3×P×P in [0, 1]) coded at qualities ``q`` (N,), not yet
    backpropagated: ``mats`` map each patch onto the recognizer's template, ``faces`` are the identity weights (0: no
    whole face), ``sizes`` the image area inside each patch. ``transform_dtype``: see
    :func:`~facelink.cloud.serving.variable_rate.forward_vr`; ``source_keys``: the sampler's ``batch_keys``, so that
    a recurring aligned crop's embedding is computed once. Returns the loss, per-sample bpp and MSE (detached)
    and the mean 1 − cos identity distance over the samples with a face (NaN when none, and at ``alpha`` 0, where
    the recognizer's two passes would only feed a log column)."""
    lam = lmbda(q)
    out = forward_vr(model, x, q, sizes, transform_dtype)
    bpp, mse = per_sample_terms(out, x, sizes)
    loss = (bpp + lam * 255**2 * mse).mean()
    if alpha == 0:  # pixel loss only: no recognizer pass at all (validation still reports the identity distance)
        return {"loss": loss, "bpp": bpp.detach(), "mse": mse.detach(), "identity": float("nan")}
    weights = faces * lam.cpu().numpy()
    d_id, per_sample = identity(x, out["x_hat"], mats, weights, source_keys)
    loss = loss + alpha * d_id
    valid = per_sample[~torch.isnan(per_sample)]
    ident = valid.mean().item() if len(valid) else float("nan")
    return {"loss": loss, "bpp": bpp.detach(), "mse": mse.detach(), "identity": ident}


def auxiliary_gradients(model) -> dict[str, torch.Tensor]:
    """The entropy bottleneck's quantile gradients the model holds (what :func:`restore_auxiliary_gradients` puts
    back into a resumed process), by parameter name."""
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if n.endswith(".quantiles") and p.grad is not None}


def restore_auxiliary_gradients(model, stored: dict[str, torch.Tensor] | None = None) -> None:
    """Give the quantiles the gradients a running process carries into its next step: ``stored`` (a checkpoint's
    :func:`auxiliary_gradients`) or, where there are none, the auxiliary loss's gradient at the current weights.

    :func:`training_step` clips the gradient norm over all of the model's parameters, and at that point the
    quantiles still hold the gradient of the previous step's auxiliary loss (norm 515 against 7–19 for the rest of
    the model at step 43,359): in a running process that term sets the clipping scale of every step, and Adam's
    moments are calibrated to it. A resumed process has no such gradient on its first step, which is then clipped
    about 50× less and throws the weights off (every resume of core v2 dropped its training PSNR from about 32 to
    24 dB for some fifty steps; ``benchmarks/research.md``, section 18)."""
    if stored:
        params = dict(model.named_parameters())
        unknown = sorted(set(stored) - set(params))
        if unknown:
            raise ValueError(f"stored auxiliary gradients for parameters the model lacks: {', '.join(unknown)}")
        for n, g in stored.items():
            params[n].grad = g.to(params[n].device, params[n].dtype).clone()
        return
    for n, p in model.named_parameters():
        if n.endswith(".quantiles"):
            p.grad = None
    model.aux_loss().backward()


def training_step(model, opt, aux_opt, identity, x: torch.Tensor, mats: np.ndarray, faces: np.ndarray,
                  sizes: np.ndarray, q: torch.Tensor, alpha: float, transform_dtype: torch.dtype | None = None,
                  source_keys=None) -> dict:
    """One optimisation step on :func:`step_loss` (same arguments): backward, gradient clipping at 1, Adam, then the
    entropy bottleneck's auxiliary step. Returns :func:`step_loss`'s figures, the loss detached."""
    res = step_loss(model, identity, x, mats, faces, sizes, q, alpha, transform_dtype, source_keys)
    loss = res["loss"]
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    aux = model.aux_loss()
    aux_opt.zero_grad()
    aux.backward()
    aux_opt.step()
    return {**res, "loss": loss.detach()}
