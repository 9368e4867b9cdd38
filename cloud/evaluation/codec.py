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
    def __init__(self, model: str | None = None, threads: int = 1, device: str | None = None,
                 format_version: int = bitstream.FORMAT_VERSION):
        self.encoder = EdgeEncoder(model, threads=threads, format_version=format_version)
        # Its own model's decoder only: another model may share the bitstream (a refined decoder) but not decode it.
        self.decoder = CloudDecoder([str(self.encoder.bundle.path)], device=device)
        self.name = self.encoder.bundle.name
        self.model_id = self.encoder.model_id

    def encode(self, rgb: np.ndarray, template: Template | None = None) -> bytes:
        """``template``: ``rgb`` is a face crop aligned to it, as the edge sends one."""
        return self.encoder.encode(rgb, template)

    def decode(self, data: bytes) -> np.ndarray:
        return self.decoder.decode(data).image
