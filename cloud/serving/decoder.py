"""Cloud-side decoding: container → entropy decode (shared, exact) → synthesis transform (torch) → RGB image."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from facelink.cloud.serving.codec_model import build, load_synthesis
from facelink.shared import bitstream, codec, registry


@dataclass
class Decoded:
    image: np.ndarray  # H×W×3 uint8 RGB
    frame: bitstream.Frame
    model_name: str


class _Synthesis:
    def __init__(self, bundle: registry.ModelBundle, device: torch.device):
        m = bundle.manifest
        model = load_synthesis(build(m["architecture"], m["N"], m["M"]), bundle.weights)
        self.g_s = model.g_s.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, y_hat: np.ndarray) -> np.ndarray:
        x = self.g_s(torch.from_numpy(y_hat)[None].to(self.device)).clamp_(0, 1)
        return (x[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


class CloudDecoder:
    """Decodes containers from every model in the registry, chosen by the model id each container carries."""

    def __init__(self, models: list[str] | None = None, device: str | None = None, root=None):
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
                self._synth[model_id] = _Synthesis(self.bundles[model_id], self.device)
            return self._synth[model_id]

    def decode(self, data: bytes) -> Decoded:
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
        y_hat = codec.decompress_latents(bundle.tables, frame)
        image = self.synthesis(frame.model_id)(y_hat)
        return Decoded(image[: frame.height, : frame.width], frame, bundle.name)
