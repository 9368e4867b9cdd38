"""Cloud-side decoding: container → entropy decode (shared, exact) → synthesis transform (torch) → RGB image.

A rate point whose manifest lists face-domain adapters (:mod:`facelink.cloud.serving.adapters`) decodes with them
and its gate's weights per domain when the decoder is made with ``adapters="on"`` (the default, ``"off"``, decodes
with the base g_s: the adapters gain no accuracy measured yet); ``"ablation"`` uses the
α = 0 adapters the manifest lists beside them (for benchmarks). Adapters change only the synthesis: the same
containers decode either way."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from facelink.cloud.serving import adapters as adapters_mod
from facelink.cloud.serving import limits, variable_rate
from facelink.cloud.serving.codec_model import build, load_synthesis
from facelink.cloud.serving.frozen import frozen_copy
from facelink.shared import bitstream, codec, registry

# How a decoder uses a rate point's adapters: "on" (the manifest's adapters and gate), "off" (the base g_s),
# "ablation" (the manifest's α = 0 adapters and their gate).
ADAPTER_MODES = ("on", "off", "ablation")


@dataclass
class Decoded:
    image: np.ndarray  # H×W×3 uint8 RGB
    frame: bitstream.Frame
    model_name: str
    domain_weights: dict[str, float] | None = None  # the adapters' gate, per domain; None without adapters


class _Synthesis:
    def __init__(self, bundle: registry.ModelBundle, device: torch.device, adapters: str,
                 channels_last: bool = False):
        m = bundle.manifest
        # A variable-rate model (core v2) applies the inverse gain of the container's quality before g_s.
        self.vr = None
        if variable_rate.is_variable_rate(m):
            model = self.vr = variable_rate.load_synthesis(variable_rate.from_manifest(m), bundle.weights)
            model.to(device)
        else:
            model = load_synthesis(build(m["architecture"], m["N"], m["M"]), bundle.weights)
        self.g_s = model.g_s.to(device).eval()
        self.device = device
        self.adapted = None
        entry = m.get("adapters")
        if entry and adapters != "off":
            name = entry["file"] if adapters == "on" else entry.get("ablation")
            if name is None:
                raise registry.UnknownModelError(f"model {bundle.name} lists no α = 0 adapters")
            self.adapted = adapters_mod.load(bundle.path / name, model.g_s, m["M"]).to(device).eval()
        # channels_last: oneDNN's transposed convolutions on a CPU, about 1.3-1.7x faster than the default layout
        # (equal up to float rounding); the server's choice, while evaluations keep the default.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.g_s.to(memory_format=self.memory_format)
            if self.adapted is not None:
                self.adapted.to(memory_format=self.memory_format)
        # What runs the base g_s: with channels_last on a CPU and no adapters (the server's path), a frozen
        # TorchScript copy (one call instead of one per layer; equal up to float rounding), else g_s itself.
        self.run_g_s, self.frozen = self.g_s, False
        if channels_last and self.adapted is None and self.device.type == "cpu":  # a variable-rate g_s too
            examples = [torch.randn((n, m["M"], h, w), generator=torch.Generator().manual_seed(n)).contiguous(
                memory_format=self.memory_format) for n, h, w in ((2, 8, 8), (1, 5, 7))]
            self.run_g_s, self.frozen = frozen_copy(self.g_s, examples, f"g_s of {bundle.name}")

    @property
    def domains(self) -> tuple[str, ...]:
        return self.adapted.domains if self.adapted is not None else ()

    @torch.inference_mode()
    def __call__(self, y_hat: np.ndarray, domain: str | None = None, quality: float | None = None
                 ) -> tuple[np.ndarray, dict[str, float] | None]:
        """The image and the gate's weights per domain; ``domain``: that domain's adapter alone (an oracle);
        ``quality``: the container's (version 3), whose inverse gain a variable-rate model applies."""
        y = torch.from_numpy(y_hat)[None].to(self.device)
        if self.vr is not None:
            y = variable_rate.apply_inverse_gain(self.vr, y, quality)
        y = y.contiguous(memory_format=self.memory_format)
        weights = None
        if self.adapted is None:
            if domain is not None:
                raise ValueError(f"domain {domain!r} asked of a decoder without adapters")
            x = self.run_g_s(y)
        else:
            forced = None
            if domain is not None:
                if domain not in self.domains:
                    raise ValueError(f"no adapter for domain {domain!r}; adapters: {', '.join(self.domains)}")
                forced = torch.zeros(1, len(self.domains), device=self.device)
                forced[0, self.domains.index(domain)] = 1.0
            x, w = self.adapted(y, forced)
            weights = dict(zip(self.domains, (float(v) for v in w[0].cpu())))
        x = x.clamp_(0, 1)
        return (x[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8), weights

    @torch.inference_mode()
    def batch(self, y_hats: list[np.ndarray], qualities: list) -> list[tuple[np.ndarray, dict[str, float] | None]]:
        """``__call__`` (without ``domain``) over latents of one shape in one forward pass: the server's
        micro-batches. Equal to one call each up to float rounding; a variable-rate model applies each item's
        inverse gain (its container's quality) before the one pass."""
        if len(y_hats) == 1:
            return [self(y, None, q) for y, q in zip(y_hats, qualities)]
        y = torch.from_numpy(np.stack(y_hats)).to(self.device)
        if self.vr is not None:
            y = torch.cat([variable_rate.apply_inverse_gain(self.vr, y[i:i + 1], q) for i, q in enumerate(qualities)])
        y = y.contiguous(memory_format=self.memory_format)
        if self.adapted is None:
            x, w = self.run_g_s(y), None
        else:
            x, w = self.adapted(y, None)
        images = (x.clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        if w is None:
            return [(im, None) for im in images]
        w = w.cpu()
        return [(im, dict(zip(self.domains, (float(v) for v in w[i])))) for i, im in enumerate(images)]


class CloudDecoder:
    """Decodes containers from every model in the registry, chosen by the model id each container carries."""

    def __init__(self, models: list[str] | None = None, device: str | None = None, root=None, adapters: str = "off",
                 max_pixels: int | None = None, channels_last: bool = False):
        # max_pixels: containers declaring more (padded) pixels are refused from their header, before entropy decoding
        # channels_last: the synthesis in that memory layout (faster on a CPU, equal up to float rounding)
        self.max_pixels = max_pixels
        self.channels_last = channels_last
        if adapters not in ADAPTER_MODES:
            raise ValueError(f"adapters must be one of {', '.join(ADAPTER_MODES)}, got {adapters!r}")
        self.adapters = adapters
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        names = models or registry.available(root)
        if not names:
            raise registry.UnknownModelError("the model registry is empty")
        bundles = [registry.load(n, root) for n in names]
        self.bundles = {b.model_id: b for b in bundles}
        # Model ids that several loaded models share: a decoder refined for another model's bitstream
        # (train_only: decoder) keeps that model's tables, hence its id. Which decoder is meant cannot be told
        # from the container, so such containers are refused with the names to choose from (models=[...]).
        self.ambiguous = {i: ns for i, ns in registry.names_by_model_id(bundles).items() if len(ns) > 1}
        self._synth: dict[str, _Synthesis] = {}
        self._lock = threading.Lock()

    def synthesis(self, model_id: str) -> _Synthesis:
        with self._lock:
            if model_id not in self._synth:
                self._synth[model_id] = _Synthesis(self.bundles[model_id], self.device, self.adapters,
                                                    self.channels_last)
            return self._synth[model_id]

    def domains(self, model_id: str) -> tuple[str, ...]:
        """The domains of the adapters this decoder uses for a model (empty: none, or switched off)."""
        bundle = self.bundles[model_id]
        entry = bundle.manifest.get("adapters")
        return tuple(entry["domains"]) if entry and self.adapters != "off" else ()

    def latents(self, data: bytes) -> tuple[bitstream.Frame, registry.ModelBundle, np.ndarray]:
        """Parse a container, check it (its model; its size against ``max_pixels``, from the header) and entropy-decode
        it: the frame, its model's bundle and the latent ŷ (what :meth:`decode` synthesises; the server batches it)."""
        frame = bitstream.unpack(data)
        if frame.model_id in self.ambiguous:
            raise codec.ModelMismatchError(
                f"bitstream made by codec model {frame.model_id}, which models "
                f"{', '.join(self.ambiguous[frame.model_id])} all decode (same encoder and tables, different "
                "decoders): load only the one meant (the server's models, CloudDecoder(models=[...]))")
        bundle = self.bundles.get(frame.model_id)
        if bundle is None:
            raise codec.ModelMismatchError(
                f"bitstream made by codec model {frame.model_id}; this server has "
                f"{', '.join(f'{b.name} ({i})' for i, b in self.bundles.items())}")
        if self.max_pixels is not None:
            limits.check_frame(frame, self.max_pixels)
        return frame, bundle, codec.decompress_latents(bundle.tables, frame)

    def decode(self, data: bytes, domain: str | None = None) -> Decoded:
        """``domain``: decode with that domain's adapter alone instead of the gate's blend (benchmarks' oracle)."""
        frame, bundle, y_hat = self.latents(data)
        image, weights = self.synthesis(frame.model_id)(y_hat, domain, frame.quality)
        return Decoded(image[: frame.height, : frame.width], frame, bundle.name, weights)
