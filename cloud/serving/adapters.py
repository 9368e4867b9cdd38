"""Face-domain adapters and their gate in the cloud's synthesis transform (supervised adapters, Presta et al. 2024).

The base ``g_s`` of a rate point stays as it is. After some of its stages (:attr:`AdapterConfig.sites`, indices
into ``g_s``) a residual branch is added: one small adapter per capture domain (``source`` included), each a 1×1
convolution down to ``width`` channels, a GELU and a ``kernel``×``kernel`` convolution back up, the last
initialised to zero, so that a fresh set of adapters leaves the decoder's output exactly unchanged. A gate reads the
decoded latent ŷ (which the cloud has before synthesis: no pixels, nothing from the edge) — a small convolution,
GELU, global average pooling, a linear layer and a softmax over the domains — and blends the adapters per image:

    h ← h + Σ_d g_d(ŷ) · A_d(h)

The D adapters of a site are stored stacked (one down convolution to D·width channels, one up convolution from
them), which computes exactly that sum in two convolutions. The encoder, the entropy model and every bitstream are
untouched: adapters are a decoder-only upgrade.

On disk: a safetensors file (``adapters.safetensors`` in a rate point's folder, listed in its manifest) whose
metadata holds the configuration as JSON under ``facelink_adapters``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "facelink-adapters-v1"
METADATA_KEY = "facelink_adapters"
GATE_POOLS = ("mean", "meanstd")


@dataclass(frozen=True)
class AdapterConfig:
    """Where the adapters sit and how wide they and the gate are. ``domains``: the adapters' domains in order
    (the gate's classes), ``source`` first."""

    domains: tuple[str, ...] = ("source", "nir", "far", "jpeg")
    sites: tuple[int, ...] = (3, 5)  # indices into g_s after which a residual branch is added (the last stages)
    width: int = 8
    kernel: int = 1
    gate_channels: int = 16
    gate_kernel: int = 3
    # What the gate pools over the latent's positions: "mean" of its convolution's features, or "meanstd" (their
    # mean and standard deviation: how much each feature varies across the face, texture that a mean averages away)
    gate_pool: str = "mean"
    gate_norm: bool = False  # normalise ŷ per channel (statistics of the training latents, stored) before the gate
    gate_stats: bool = False  # the linear layer also reads ŷ's own per-channel standard deviation and mean |ŷ|

    def __post_init__(self):
        if len(self.domains) < 2 or len(set(self.domains)) != len(self.domains):
            raise ValueError(f"adapters need at least two distinct domains, got {list(self.domains)}")
        if not self.sites or len(set(self.sites)) != len(self.sites):
            raise ValueError(f"adapter sites must be distinct g_s indices, got {list(self.sites)}")
        for name in ("width", "gate_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.gate_pool not in GATE_POOLS:
            raise ValueError(f"gate_pool must be one of {', '.join(GATE_POOLS)}, got {self.gate_pool!r}")
        for name in ("kernel", "gate_kernel"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd and ≥ 1, got {getattr(self, name)}")

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdapterConfig:
        data = json.loads(text)
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} adapters file")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _stage_channels(g_s: nn.Sequential, site: int) -> int:
    """Channels of g_s's output after module ``site`` (the last convolution at or before it)."""
    if not 0 <= site < len(g_s) - 1:
        raise ValueError(f"adapter site {site} must index a stage of g_s before its last module (0..{len(g_s) - 2})")
    for mod in reversed(list(g_s)[: site + 1]):
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            return mod.out_channels
    raise ValueError(f"no convolution at or before g_s[{site}]")


class StackedAdapters(nn.Module):
    """The D residual adapters of one site, computed together: Σ_d g_d · up_d(GELU(down_d(h)))."""

    def __init__(self, channels: int, domains: int, width: int, kernel: int):
        super().__init__()
        self.domains, self.width, self.kernel = domains, width, kernel
        self.down = nn.Conv2d(channels, domains * width, 1)
        self.up_weight = nn.Parameter(torch.zeros(channels, domains * width, kernel, kernel))
        self.up_bias = nn.Parameter(torch.zeros(domains, channels))

    def forward(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        u = F.gelu(self.down(h)) * weights.repeat_interleave(self.width, dim=1)[:, :, None, None]
        return F.conv2d(u, self.up_weight, padding=self.kernel // 2) + (weights @ self.up_bias)[:, :, None, None]


class DomainGate(nn.Module):
    """ŷ → logits over the domains: (per-channel normalisation →) conv → GELU → global pooling (mean, or mean and
    standard deviation; optionally with ŷ's own per-channel statistics beside) → linear."""

    def __init__(self, latent_channels: int, domains: int, channels: int, kernel: int, pool: str = "mean",
                 norm: bool = False, stats: bool = False):
        super().__init__()
        self.pool, self.norm, self.stats = pool, norm, stats
        if norm:  # set from the training latents (set_normalisation); stored with the weights
            self.register_buffer("in_mean", torch.zeros(latent_channels))
            self.register_buffer("in_std", torch.ones(latent_channels))
        self.conv = nn.Conv2d(latent_channels, channels, kernel, padding=kernel // 2)
        self.fc = nn.Linear(channels * (2 if pool == "meanstd" else 1) + (2 * latent_channels if stats else 0), domains)

    def set_normalisation(self, y_hat: torch.Tensor) -> None:
        """Per-channel mean and standard deviation of training latents (N×M×H×W) as the gate's input scale."""
        if self.norm:
            self.in_mean.copy_(y_hat.mean(dim=(0, 2, 3)))
            self.in_std.copy_(y_hat.std(dim=(0, 2, 3)).clamp_min(1e-3))

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        if self.norm:
            y_hat = (y_hat - self.in_mean[:, None, None]) / self.in_std[:, None, None]
        f = F.gelu(self.conv(y_hat))
        pooled = f.mean(dim=(2, 3))
        if self.pool == "meanstd":
            pooled = torch.cat([pooled, f.std(dim=(2, 3), unbiased=False)], dim=1)
        if self.stats:
            pooled = torch.cat([pooled, y_hat.std(dim=(2, 3), unbiased=False), y_hat.abs().mean(dim=(2, 3))], dim=1)
        return self.fc(pooled)


class AdaptedSynthesis(nn.Module):
    """``g_s`` with domain adapters and a gate. ``forward(y_hat, weights=None)`` → (image, blend weights N×D): the
    gate's softmax unless ``weights`` are given (one-hot: a single domain's adapter, as the benchmark's oracle)."""

    def __init__(self, g_s: nn.Sequential, config: AdapterConfig, latent_channels: int):
        super().__init__()
        self.g_s, self.config = g_s, config
        self.adapters = nn.ModuleDict({
            str(s): StackedAdapters(_stage_channels(g_s, s), len(config.domains), config.width, config.kernel)
            for s in config.sites})
        self.gate = DomainGate(latent_channels, len(config.domains), config.gate_channels, config.gate_kernel,
                               config.gate_pool, config.gate_norm, config.gate_stats)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.config.domains

    def gate_weights(self, y_hat: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.gate(y_hat), dim=1)

    def forward(self, y_hat: torch.Tensor, weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if weights is None:
            weights = self.gate_weights(y_hat)
        h = y_hat
        for i, mod in enumerate(self.g_s):
            h = mod(h)
            if str(i) in self.adapters:
                h = h + self.adapters[str(i)](h, weights)
        return h, weights

    def extra_parameters(self) -> int:
        """Parameters of the adapters and the gate (what the rate point gains)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("g_s."))

    def params_ratio(self) -> float:
        """Adapters + gate over the base g_s, in parameters."""
        return self.extra_parameters() / sum(p.numel() for p in self.g_s.parameters())

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("g_s.")}


def save(module: AdaptedSynthesis, path: str | Path, info: dict | None = None) -> None:
    """Write the adapters and gate (float32) with their configuration; ``info``: provenance kept in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    meta = {METADATA_KEY: module.config.to_json()}
    if info:
        meta["facelink_adapters_info"] = json.dumps(info, sort_keys=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in module.extra_state_dict().items()}, str(tmp),
              metadata=meta)
    tmp.replace(path)


def read_config(path: str | Path) -> tuple[AdapterConfig, dict]:
    """The configuration and provenance stored in an adapters file (no tensors loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: not a facelink adapters file (no {METADATA_KEY} metadata)")
    return AdapterConfig.from_json(meta[METADATA_KEY]), json.loads(meta.get("facelink_adapters_info", "{}"))


def load(path: str | Path, g_s: nn.Sequential, latent_channels: int) -> AdaptedSynthesis:
    """``g_s`` wrapped with the adapters and gate stored at ``path`` (strict: every tensor must fit)."""
    from safetensors.torch import load_file

    config, _ = read_config(path)
    module = AdaptedSynthesis(g_s, config, latent_channels)
    state = load_file(str(path))
    expected = set(module.extra_state_dict())
    if set(state) != expected:
        raise ValueError(f"{path}: tensors {sorted(set(state) ^ expected)} do not fit its configuration")
    module.load_state_dict({**{f"g_s.{k}": v for k, v in g_s.state_dict().items()}, **state})
    return module


__all__ = ["AdapterConfig", "AdaptedSynthesis", "DomainGate", "StackedAdapters", "load", "read_config", "save"]
