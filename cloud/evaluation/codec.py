"""facelink's learned codec as one object: ``encode(rgb) -> container bytes``, ``decode(bytes) -> rgb``.

The edge path (onnxruntime + numpy entropy coder) encodes and the cloud path decodes, exactly as deployed; the
benchmark engine uses this to put the learned codec beside the classical ones.
"""
from __future__ import annotations

import numpy as np

from facelink.cloud.serving.decoder import CloudDecoder
from facelink.edge.encoder import EdgeEncoder
from facelink.shared import bitstream
from facelink.shared.alignment import Template


class LearnedCodec:
    """``adapters``: how the decoder uses the rate point's face-domain adapters (``CloudDecoder``'s modes); "off",
    the base decoder, by default, so a benchmark of a rate point measures the same decoder before and after
    adapters are added to it."""

    def __init__(self, model: str | None = None, threads: int = 1, device: str | None = None,
                 format_version: int = bitstream.FORMAT_VERSION, adapters: str = "off"):
        self.encoder = EdgeEncoder(model, threads=threads, format_version=format_version)
        # Its own model's decoder only: another model may share the bitstream (a refined decoder) but not decode it.
        self.decoder = CloudDecoder([str(self.encoder.bundle.path)], device=device, adapters=adapters)
        self.name = self.encoder.bundle.name
        self.model_id = self.encoder.model_id

    def encode(self, rgb: np.ndarray, template: Template | None = None) -> bytes:
        """``template``: ``rgb`` is a face crop aligned to it, as the edge sends one."""
        return self.encoder.encode(rgb, template)

    def decode(self, data: bytes, domain: str | None = None) -> np.ndarray:
        """``domain``: that domain's adapter alone instead of the gate's blend (with adapters on)."""
        return self.decoder.decode(data, domain).image
