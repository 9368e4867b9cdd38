"""Edge encoding: image → ONNX analysis transform (onnxruntime) → shared entropy coder → .flk container.

No torch here: onnxruntime, numpy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from facelink.shared import bitstream, codec, registry
from facelink.shared.alignment import ARCFACE_112, CROP_TEMPLATES, Template, align, template_id
from facelink.shared.detection import Detection, YuNet
from facelink.shared.roi import BackgroundBlur


@dataclass
class Encoded:
    data: bytes
    height: int
    width: int
    detection: Detection | None = None

    @property
    def bpp(self) -> float:
        return 8.0 * len(self.data) / (self.height * self.width)


class EdgeEncoder:
    """Encodes RGB uint8 images with one model of the registry.

    A rate point has one quality. A variable-rate model (core v2: its tables hold a gain table) codes at a
    continuous ``quality`` in [0, K-1] (default the manifest's ``default_quality``), kept on the 1/256 grid the
    container stores, and writes container version 3, which carries it. ``format_version`` None: the model's
    (3 for a variable-rate model, :data:`~facelink.shared.bitstream.FORMAT_VERSION` otherwise)."""

    def __init__(self, model: str | None = None, threads: int = 1, format_version: int | None = None,
                 quality: float | None = None):
        self.bundle = registry.load(model)
        vr = self.bundle.tables.variable_rate
        if format_version is None:
            format_version = bitstream.VARIABLE_RATE_VERSION if vr else bitstream.FORMAT_VERSION
        if format_version not in bitstream.READABLE_VERSIONS:
            raise ValueError(f"bitstream format version {format_version}; facelink writes versions "
                             f"{', '.join(map(str, bitstream.READABLE_VERSIONS))}")
        if vr and format_version != bitstream.VARIABLE_RATE_VERSION:
            raise ValueError(f"model {self.bundle.name} is variable-rate: its containers are version "
                             f"{bitstream.VARIABLE_RATE_VERSION} (they carry the quality), not {format_version}")
        if not vr and quality is not None:
            raise ValueError(f"model {self.bundle.name} is a rate point with one quality; a quality applies to a "
                             "variable-rate model")
        self.format_version = format_version
        self.quality = self.check_quality(quality if quality is not None else
                                          registry.quality_range(self.bundle.manifest).default) if vr else None
        # onnxruntime's default graph optimisation (all levels) and sequential execution: on one thread the fastest
        # of the options facelink bench edge-pipeline compares (basic and extended levels take about a third more)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.bundle.encoder_onnx), opts, providers=["CPUExecutionProvider"])

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    @property
    def variable_rate(self) -> bool:
        return self.bundle.tables.variable_rate

    def check_quality(self, quality: float) -> float:
        """``quality`` on the container's grid, or a ValueError naming the model's range."""
        k = self.bundle.tables.qualities
        q = float(quality)
        if not (0.0 <= q <= k - 1):
            raise ValueError(f"quality must lie in [0, {k - 1}] for model {self.bundle.name}, got {quality}")
        return bitstream.quantize_quality(q)

    def analyse(self, rgb: np.ndarray, quality: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Latents (y, z) of an image, padded (edge replication) to multiples of 64; a variable-rate model's y is
        gained for ``quality`` (default the encoder's)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        if not (0 < h <= bitstream.MAX_DIM and 0 < w <= bitstream.MAX_DIM):
            raise ValueError(f"image size {w}×{h} out of range")
        pb, pr = bitstream.padding_for(h, w)
        padded = np.pad(rgb, ((0, pb), (0, pr), (0, 0)), mode="edge") if (pb or pr) else rgb
        x = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        feed = {"image": x}
        if self.variable_rate:
            q = self.quality if quality is None else self.check_quality(quality)
            feed["gain"] = self.bundle.tables.gain(q)[None]
        y, z = self.session.run(["y", "z"], feed)
        return y[0], z[0]

    def encode(self, rgb: np.ndarray, template: Template | None = None, quality: float | None = None) -> bytes:
        """One image → container. ``template``: the image is a crop aligned to it (the cloud skips detection);
        ``quality``: a variable-rate model's, instead of the encoder's."""
        return self.encode_with_symbols(rgb, template, quality)[0]

    def encode_with_symbols(self, rgb: np.ndarray, template: Template | None = None, quality: float | None = None
                            ) -> tuple[bytes, codec.DecodedSymbols]:
        """The container and the symbols it codes (what a decoder must reproduce exactly)."""
        if quality is not None and not self.variable_rate:
            raise ValueError(f"model {self.bundle.name} is a rate point with one quality")
        q = None
        if self.variable_rate:
            q = self.quality if quality is None else self.check_quality(quality)
        elif self.format_version == bitstream.VARIABLE_RATE_VERSION:
            q = 0.0  # a rate point's one quality
        tid = template_id(template) if template is not None else 0
        if tid and rgb.shape[:2] != (template.height, template.width):
            raise ValueError(f"a crop aligned to {template.name} is {template.width}×{template.height}, "
                             f"got {rgb.shape[1]}×{rgb.shape[0]}")
        y, z = self.analyse(rgb, q)
        streams, symbols = codec.encode_latents(self.bundle.tables, y, z, rgb.shape[0], rgb.shape[1],
                                                self.format_version)
        frame = bitstream.Frame(self.model_id, rgb.shape[0], rgb.shape[1], streams, tid, self.format_version, q)
        return bitstream.pack(frame), symbols


class FaceCropper:
    """Detects the most prominent face and aligns it to the edge's crop template (by default the canonical 112×112)."""

    def __init__(self, template: Template = ARCFACE_112, detector: YuNet | None = None):
        self.template = template
        self.detector = detector or YuNet()

    def crop(self, rgb: np.ndarray) -> tuple[np.ndarray, Detection] | None:
        det = self.detector.largest(rgb, rgb=True)
        if det is None:
            return None
        return align(rgb, det.landmarks, self.template), det


class EdgePipeline:
    """What a camera runs: face crop (default) or full frame, then encode.

    ``blur_background`` (full frame only): blur everything outside the detected faces before coding
    (:class:`facelink.shared.roi.BackgroundBlur`), so the bits go to the faces; a frame without a face is coded as
    it is. The bitstream and the cloud are the same either way.

    A variable-rate model codes at ``quality``, or with ``max_bytes`` at the highest quality whose container
    fits in that many bytes (:func:`facelink.edge.rate_control.encode_within`; per face in crop mode)."""

    def __init__(self, model: str | None = None, full_frame: bool = False, threads: int = 1,
                 blur_background: BackgroundBlur | None = None, format_version: int | None = None,
                 crop_template: str = ARCFACE_112.name, quality: float | None = None, max_bytes: int | None = None):
        if blur_background is not None and not full_frame:
            raise ValueError("background blur applies to full-frame coding (a face crop is all face)")
        template = CROP_TEMPLATES.get(crop_template)
        if template is None:  # a crop the container cannot name cannot be sent
            raise ValueError(f"unknown crop template {crop_template!r}; known: {', '.join(CROP_TEMPLATES)}")
        self.encoder = EdgeEncoder(model, threads, format_version, quality)
        if max_bytes is not None:
            if not self.encoder.variable_rate:
                raise ValueError(f"--max-bytes needs a variable-rate model; {self.encoder.bundle.name} has one rate")
            if quality is not None:
                raise ValueError("give a quality or a byte budget, not both")
        self.max_bytes = max_bytes
        self.full_frame = full_frame
        self.blur = blur_background
        self.cropper = None if full_frame else FaceCropper(template)
        self.detector = YuNet() if blur_background is not None else None

    def process(self, rgb: np.ndarray) -> Encoded | None:
        """The coded frame, or None when crop mode finds no face (nothing is sent)."""
        if self.full_frame:
            if self.blur is not None:
                rgb = self.blur.around_faces(rgb, self.detector)
            return Encoded(self._encode(rgb, None), rgb.shape[0], rgb.shape[1])
        found = self.cropper.crop(rgb)
        if found is None:
            return None
        crop, det = found
        return Encoded(self._encode(crop, self.cropper.template), crop.shape[0], crop.shape[1], det)

    def _encode(self, rgb: np.ndarray, template: Template | None) -> bytes:
        if self.max_bytes is None:
            return self.encoder.encode(rgb, template)
        from facelink.edge.rate_control import encode_within

        return encode_within(self.encoder, rgb, self.max_bytes, template).data
