"""facelink's learned codec as one object: ``encode(rgb) -> container bytes``, ``decode(bytes) -> rgb``.

The edge path (onnxruntime + numpy entropy coder) encodes and the cloud path decodes, exactly as deployed; the
benchmark engine uses this to put the learned codec beside the classical ones. Each model writes its own container
version (a rate point version 2, a variable-rate model version 3, which carries the quality) unless told otherwise.
"""
from __future__ import annotations

import numpy as np

from facelink.cloud.serving.decoder import CloudDecoder
from facelink.edge.encoder import EdgeEncoder
from facelink.shared.alignment import Template


class LearnedCodec:
    """``adapters``: how the decoder uses the rate point's face-domain adapters (``CloudDecoder``'s modes); "off",
    the base decoder, by default, so a benchmark of a rate point measures the same decoder before and after
    adapters are added to it. ``format_version`` None: the model's own (:class:`EdgeEncoder`'s rule)."""

    def __init__(self, model: str | None = None, threads: int = 1, device: str | None = None,
                 format_version: int | None = None, adapters: str = "off"):
        self.encoder = EdgeEncoder(model, threads=threads, format_version=format_version)
        # Its own model's decoder only: another model may share the bitstream (a refined decoder) but not decode it.
        self.decoder = CloudDecoder([str(self.encoder.bundle.path)], device=device, adapters=adapters)
        self.name = self.encoder.bundle.name
        self.model_id = self.encoder.model_id
        self.format_version = self.encoder.format_version
        self.variable_rate = self.encoder.variable_rate

    def encode(self, rgb: np.ndarray, template: Template | None = None, quality: float | None = None) -> bytes:
        """``template``: ``rgb`` is a face crop aligned to it, as the edge sends one. ``quality``: a variable-rate
        model's (default its manifest's ``default_quality``); a rate point has none."""
        return self.encoder.encode(rgb, template, quality)

    def decode(self, data: bytes, domain: str | None = None) -> np.ndarray:
        """``domain``: that domain's adapter alone instead of the gate's blend (with adapters on)."""
        return self.decoder.decode(data, domain).image
