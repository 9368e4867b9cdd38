"""The variable-rate face codec (core v2): one mean-scale hyperprior for a continuous quality knob.

A :class:`~facelink.cloud.serving.codec_model.FaceCodec` with per-channel gain vectors for ``K`` qualities (gain
units, as in the variable-rate learned-codec literature): the analysis output ``y`` is multiplied by the quality's
gain before quantisation (on the edge) and the decoded latent by its inverse gain before synthesis (in the cloud).
The hyperprior (``h_a``, the entropy models, the ReLU hyper-synthesis that :mod:`facelink.shared.hyper_int` runs
in integers) reads and models the *gained* latent, so quantisation, entropy coding and the integer tables are
those of the fixed-rate codec; only ``g_a``'s output and ``g_s``'s input are scaled.

Quality ``q`` is continuous in ``[0, K-1]``: between the integer qualities ``i`` and ``i+1`` the vectors are
interpolated exponentially, ``g(q) = g_i^(1-t) · g_(i+1)^t`` with ``t = q - i`` (linear in the stored log-gains).
The meaning of ``q`` is fixed by the training objective: quality ``q`` is trained for
``R + λ(q)·(255²·MSE + α·D_identity)`` with ``λ(q) = LAMBDA_0 · LAMBDA_RATIO**q`` (:func:`lmbda`), the same
geometric interpolation between neighbouring qualities.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from compressai.layers import GDN
from compressai.models.utils import conv

from facelink.cloud.serving.codec_model import FaceCodec
from facelink.shared.bitstream import coded_latent_shape

ARCHITECTURE = "facelink-vr-msh-v1"
QUALITIES = 8  # K: integer qualities 0 .. K-1, each with its own gain and inverse-gain vector
# λ(q) = LAMBDA_0 · LAMBDA_RATIO**q: each quality step doubles λ (the weight of 255²·MSE against bits per pixel).
# q 0 → 0.0004 (about the committed ladder's low end), q 7 → 0.0512 (past HEVC CRF 23's bytes on 112×112 crops).
LAMBDA_0 = 0.0004
LAMBDA_RATIO = 2.0


def lmbda(q: float | torch.Tensor) -> float | torch.Tensor:
    """The rate-distortion weight quality ``q`` is trained for (the one meaning of ``q``)."""
    if isinstance(q, torch.Tensor):
        return LAMBDA_0 * torch.pow(torch.tensor(LAMBDA_RATIO, dtype=q.dtype, device=q.device), q)
    return LAMBDA_0 * LAMBDA_RATIO ** float(q)


def check_quality(q: float, qualities: int = QUALITIES) -> float:
    """``q`` as a float, or a ValueError that says the range."""
    q = float(q)
    if not (math.isfinite(q) and 0.0 <= q <= qualities - 1):
        raise ValueError(f"quality must lie in [0, {qualities - 1}], got {q}")
    return q


class VariableRateFaceCodec(FaceCodec):
    """:class:`FaceCodec` with ``K`` learned gain / inverse-gain vectors (stored as logs, so always positive).

    Initialised so that gain ∝ √λ(q) (uniform-quantiser high-rate theory: the step that halves the error for a
    doubled λ) and inverse gain = 1 / gain; training then shapes them per channel.

    ``N_analysis`` (default ``N``): the width of the analysis transform ``g_a``, the part the edge runs in float.
    A narrower ``g_a`` than the cloud's synthesis keeps the edge's time per face within its budget while the
    decoder and the hyperprior have ``N`` channels.
    """

    def __init__(self, N: int = 128, M: int = 192, qualities: int = QUALITIES, N_analysis: int | None = None):
        super().__init__(N, M)
        if qualities < 2:
            raise ValueError(f"a variable-rate codec needs at least 2 qualities, got {qualities}")
        self.N_analysis = int(N_analysis or N)
        if self.N_analysis != N:
            na = self.N_analysis
            self.g_a = nn.Sequential(conv(3, na), GDN(na), conv(na, na), GDN(na), conv(na, na), GDN(na),
                                     conv(na, M))
        self.qualities = int(qualities)
        mid = (qualities - 1) / 2
        init = 0.5 * math.log(LAMBDA_RATIO) * (torch.arange(qualities, dtype=torch.float32) - mid)
        self.log_gain = nn.Parameter(init[:, None].repeat(1, M))
        self.log_inv_gain = nn.Parameter(-init[:, None].repeat(1, M))

    @property
    def hyper_shape(self) -> dict:
        return {"N": int(self.N), "M": int(self.M), "qualities": self.qualities, "N_analysis": self.N_analysis}

    def _interpolate(self, table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        q = q.to(table.dtype).clamp(0, self.qualities - 1)
        lo = q.floor().long().clamp(max=self.qualities - 2)
        t = (q - lo.to(q.dtype))[:, None]
        return torch.exp((1 - t) * table[lo] + t * table[lo + 1])

    def gains(self, q: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, inverse gain), each (B, M), for a batch of qualities (B,) or one quality."""
        q = torch.as_tensor(q, dtype=torch.float32, device=self.log_gain.device).reshape(-1)
        return self._interpolate(self.log_gain, q), self._interpolate(self.log_inv_gain, q)

    def forward(self, x: torch.Tensor, q: torch.Tensor | float | None = None) -> dict:
        """Training/evaluation forward pass at qualities ``q`` (one per sample, or one for all; default the top
        quality). See :func:`forward_vr`."""
        if q is None:
            q = float(self.qualities - 1)
        return forward_vr(self, x, q)


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x) - x).detach() + x


def _transform(module: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``module(x)`` in float32, or with its convolutions autocast to ``dtype`` and the output back in float32."""
    if dtype is None:
        return module(x)
    with torch.autocast(x.device.type, dtype=dtype):
        return module(x).float()


def forward_vr(model: VariableRateFaceCodec, x: torch.Tensor, q, sizes=None,
               transform_dtype: torch.dtype | None = None) -> dict:
    """``x`` coded at qualities ``q``: the rate from the noisy relaxation (training) or rounding (eval), and the
    synthesis fed with the latent rounded around the entropy model's means (straight-through in training), as the
    edge codes it. With ``sizes`` (N×2 rows and columns of the image inside each padded patch) only the latent
    positions that container version 2+ codes carry rate; elsewhere the synthesis sees the means.

    ``transform_dtype`` (training only; default float32 throughout): the analysis and synthesis transforms run
    autocast to this reduced precision (bfloat16), while the gains, the hyperprior, quantisation and the
    likelihoods stay in float32 (a latent of magnitude 50 has a bfloat16 step of 0.25: rounding needs float32)."""
    n = len(x)
    q = torch.as_tensor(q, dtype=torch.float32, device=x.device).reshape(-1)
    if len(q) == 1:
        q = q.expand(n)
    if len(q) != n:
        raise ValueError(f"{n} images but {len(q)} qualities")
    gain, inv_gain = model.gains(q)
    y = _transform(model.g_a, x, transform_dtype) * gain[:, :, None, None]
    z = model.h_a(y)
    z_hat, z_likelihoods = model.entropy_bottleneck(z)
    scales_hat, means_hat = model.h_s(z_hat).chunk(2, 1)
    _, y_likelihoods = model.gaussian_conditional(y, scales_hat, means=means_hat)
    y_hat = _ste_round(y - means_hat) + means_hat
    if sizes is not None:
        h, w = y.shape[2:]
        rows, cols = torch.as_tensor([coded_latent_shape(int(a), int(b)) for a, b in sizes], device=y.device).T
        coded = ((torch.arange(h, device=y.device)[None, :, None] < rows[:, None, None])
                 & (torch.arange(w, device=y.device)[None, None, :] < cols[:, None, None]))[:, None]
        y_hat = torch.where(coded, y_hat, means_hat)
        y_likelihoods = torch.where(coded, y_likelihoods, torch.ones_like(y_likelihoods))
    x_hat = _transform(model.g_s, y_hat * inv_gain[:, :, None, None], transform_dtype)
    return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}, "q": q}


def per_sample_terms(out: dict, x: torch.Tensor, sizes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: bits per pixel of the image's own area (estimated from the likelihoods) and MSE in [0, 1]
    units over that area (``sizes``: rows and columns of each image inside its patch; default the whole patch)."""
    n, _, ph, pw = x.shape
    bits = sum(-torch.log2(lik).flatten(1).sum(1) for lik in out["likelihoods"].values())
    if sizes is None:
        area = torch.full((n,), float(ph * pw), device=x.device)
        mask = torch.ones(n, 1, ph, pw, device=x.device)
    else:
        s = torch.as_tensor(sizes, device=x.device)
        area = (s[:, 0] * s[:, 1]).float()
        mask = ((torch.arange(ph, device=x.device)[None, :, None] < s[:, 0, None, None])
                & (torch.arange(pw, device=x.device)[None, None, :] < s[:, 1, None, None]))[:, None].float()
    mse = ((out["x_hat"] - x) ** 2 * mask).flatten(1).sum(1) / (3 * area)
    return bits / area, mse


def build(arch: str, N: int, M: int, qualities: int = QUALITIES, N_analysis: int | None = None
          ) -> VariableRateFaceCodec:
    if arch != ARCHITECTURE:
        raise ValueError(f"unknown variable-rate codec architecture {arch!r}; known: {ARCHITECTURE}")
    return VariableRateFaceCodec(N, M, qualities, N_analysis)


def load_synthesis(model: VariableRateFaceCodec, path) -> VariableRateFaceCodec:
    """Load a variable-rate registry model's ``decoder.safetensors`` (``g_s.*`` and ``log_inv_gain``, any float
    precision) into ``model`` as float32: what the cloud's synthesis needs."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    if "log_inv_gain" not in state:
        raise ValueError(f"{path} holds no inverse gains: not a variable-rate model's decoder")
    model.g_s.load_state_dict({k.removeprefix("g_s."): v.float() for k, v in state.items() if k.startswith("g_s.")})
    with torch.no_grad():
        model.log_inv_gain.copy_(state["log_inv_gain"].float())
    return model


@torch.no_grad()
def apply_inverse_gain(model: VariableRateFaceCodec, y_hat: torch.Tensor, quality: float | None) -> torch.Tensor:
    """Decoded gained latents (N, M, h, w) coded at ``quality`` → what ``g_s`` takes. A missing or out-of-range
    quality is a :class:`~facelink.shared.bitstream.BitstreamError` (the container is wrong for this model)."""
    from facelink.shared.bitstream import BitstreamError

    if quality is None:
        raise BitstreamError("a variable-rate model's container carries the quality it was coded at (version 3); "
                             "this one carries none")
    try:
        q = check_quality(quality, model.qualities)
    except ValueError as e:
        raise BitstreamError(f"container quality: {e}") from e
    _, inv_gain = model.gains(q)
    return y_hat * inv_gain[:, :, None, None]


def is_variable_rate(manifest: dict) -> bool:
    return manifest.get("architecture") == ARCHITECTURE


def from_manifest(manifest: dict) -> VariableRateFaceCodec:
    """An untrained model of a registry manifest's shape (N, M, qualities)."""
    return build(manifest["architecture"], manifest["N"], manifest["M"], manifest.get("qualities", QUALITIES),
                 manifest.get("N_analysis"))
