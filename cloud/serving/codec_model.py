"""The learned face codec (torch side): a CompressAI mean-scale hyperprior whose hyper-synthesis uses ReLU,
so that :mod:`facelink.shared.hyper_int` can run it in exact integer arithmetic on both edge and cloud.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from compressai.models import MeanScaleHyperprior
from compressai.models.utils import conv, deconv

from facelink.shared.bitstream import coded_latent_shape

ARCHITECTURE = "facelink-msh-relu-v1"


class FaceCodec(MeanScaleHyperprior):
    """Mean-scale hyperprior (Minnen et al. 2018 without context model) with ReLU hyper-transforms.

    ``g_a``/``g_s`` are CompressAI's GDN analysis/synthesis; ``h_s`` ends in a 3×3 conv giving scales and
    means (in that channel order, as CompressAI's ``chunk(2, 1)``).
    """

    def __init__(self, N: int = 64, M: int = 128):
        super().__init__(N, M)
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.ReLU(inplace=True),
            conv(N, N, stride=2, kernel_size=5), nn.ReLU(inplace=True),
            conv(N, N, stride=2, kernel_size=5),
        )
        self.h_s = nn.Sequential(
            deconv(N, M, stride=2, kernel_size=5), nn.ReLU(inplace=True),
            deconv(M, M * 3 // 2, stride=2, kernel_size=5), nn.ReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )

    @property
    def hyper_shape(self) -> dict:
        return {"N": int(self.N), "M": int(self.M)}


def build(arch: str, N: int, M: int) -> FaceCodec:
    if arch != ARCHITECTURE:
        raise ValueError(f"unknown codec architecture {arch!r}; known: {ARCHITECTURE}")
    return FaceCodec(N, M)


def load_synthesis(model: FaceCodec, path) -> FaceCodec:
    """Load a rate point's ``decoder.safetensors`` (``g_s.*`` in any float precision) into ``model.g_s`` as float32."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    model.g_s.load_state_dict({k.removeprefix("g_s."): v.float() for k, v in state.items() if k.startswith("g_s.")})
    return model


def forward_coded_area(model: FaceCodec, x: torch.Tensor, sizes) -> dict:
    """``model(x)`` as bitstream version 2 codes each sample: ``sizes`` (N×2) are the rows and columns of the image
    inside each padded patch; latent positions outside its :func:`coded_latent_shape` are not coded, so they add no rate
    (likelihood 1) and the synthesis sees the entropy model's means there, as the cloud's decoder does."""
    y = model.g_a(x)
    z = model.h_a(y)
    z_hat, z_likelihoods = model.entropy_bottleneck(z)
    scales_hat, means_hat = model.h_s(z_hat).chunk(2, 1)
    y_hat, y_likelihoods = model.gaussian_conditional(y, scales_hat, means=means_hat)
    h, w = y.shape[2:]
    rows, cols = torch.as_tensor([coded_latent_shape(int(a), int(b)) for a, b in sizes], device=y.device).T
    coded = ((torch.arange(h, device=y.device)[None, :, None] < rows[:, None, None])
             & (torch.arange(w, device=y.device)[None, None, :] < cols[:, None, None]))[:, None]
    y_hat = torch.where(coded, y_hat, means_hat)
    y_likelihoods = torch.where(coded, y_likelihoods, torch.ones_like(y_likelihoods))
    return {"x_hat": model.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}


def rate_distortion_terms(out: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bits per pixel (estimated from likelihoods) and MSE in [0, 1] units."""
    n, _, h, w = x.shape
    bpp = sum(torch.log(l).sum() for l in out["likelihoods"].values()) / (-torch.log(torch.tensor(2.0)) * n * h * w)
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return bpp, mse
